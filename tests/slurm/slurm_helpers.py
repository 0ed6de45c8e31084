"""Helpers of the SLURM tests: the tiny config, sbatch/scontrol wrappers, checkpoint comparison."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
HPCGAN = REPO / ".venv" / "bin" / "hpcgan"
TESTDIR = Path(os.environ.get("HPCGAN_SLURM_TESTDIR", "/var/tmp/hpcgan-slurm-tests"))
KILLWAIT = 10  # scripts/slurm_local.sh default: SIGTERM -> SIGKILL of job steps

# The tiny LHC run every training test shares: 1536 tracks, 2 ranks x batch 64 -> 12 steps/epoch, 2 epochs.
TINY = ("data.path=data/tiny-train.h5 data.val_path=data/tiny-val.h5 train.epochs=2 train.batch_size=64 "
        "train.val_batches=2 train.warmup_steps=0 train.log_every=2 lhc.hidden=32 lhc.blocks=1 lhc.d_hidden=32 "
        "lhc.d_blocks=1")
TINY_STEPS = 24


@dataclass
class Job:
    id: str
    out: Path
    fields: dict = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.fields.get("JobState", "?")

    @property
    def exit_code(self) -> int:
        return int(self.fields.get("ExitCode", "0:0").split(":")[0])

    def log(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else f"(no output file {self.out})"


class Cluster:
    """sbatch / scontrol helpers bound to a work directory (HPCGAN_SLURM_TESTDIR)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HPCGAN_", "OMPI_", "PMIX_"))}
        env.update(HPCGAN_HOME=str(REPO), HPCGAN_PROFILE="local")
        env.update(extra)
        return env

    def sbatch(self, script: Path | str, *args: str, sbatch_args: tuple[str, ...] = (), **env: str) -> Job:
        cmd = ["sbatch", "--parsable", *sbatch_args, str(script), *args]
        p = subprocess.run(cmd, cwd=self.workdir, env=self.env(**env), capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}"
        job_id = p.stdout.strip().split(";")[0]
        job = Job(job_id, Path())
        self.refresh(job)
        out = job.fields.get("StdOut", "")
        job.out = Path(out) if out else self.workdir / f"slurm-{job_id}.out"
        return job

    def refresh(self, job: Job) -> Job:
        p = subprocess.run(["scontrol", "show", "job", "-o", job.id], capture_output=True, text=True, timeout=30)
        if p.returncode == 0 and p.stdout.strip():
            job.fields = dict(re.findall(r"(\w+)=(\S*)", p.stdout))
        return job

    def wait(self, job: Job, timeout: float, until=None) -> Job:
        """Until the job has ended (or `until(job)` is true); on timeout cancel it and fail with its log."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            self.refresh(job)
            if until is not None and until(job):
                return job
            if until is None and job.state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                               "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"):
                return job
            time.sleep(0.5)
        subprocess.run(["scancel", job.id], timeout=30)
        pytest.fail(f"job {job.id} still {job.state} after {timeout:.0f}s; its log:\n{job.log()}")

    def scancel(self, job: Job, *args: str) -> None:
        subprocess.run(["scancel", *args, job.id], check=True, timeout=30)




def final_weights(run_dir: Path) -> dict:
    from hpcgan.train import checkpoint as ckpt

    path = ckpt.list_checkpoints(run_dir / "checkpoints")[-1]
    state = ckpt.load_checkpoint(path)
    commit = json.loads((run_dir / "environment.json").read_text()).get("git_commit")
    return {"path": path, "global_step": state["global_step"], "G": state["G"], "D": state["D"], "commit": commit}


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a["global_step"] == b["global_step"], (a["path"], b["path"])
    # Several people commit to one working tree: a run started after a commit may train other code.
    code = "" if a["commit"] == b["commit"] else f" (the runs used different commits: {a['commit']} vs {b['commit']})"
    for net in ("G", "D"):
        assert a[net].keys() == b[net].keys()
        diff = {k: float((a[net][k].double() - b[net][k].double()).abs().max()) for k in a[net]
                if a[net][k].is_floating_point() and not torch.equal(a[net][k], b[net][k])}
        assert not diff, f"{net} differs between {a['path']} and {b['path']}: max |diff| per tensor {diff}{code}"
