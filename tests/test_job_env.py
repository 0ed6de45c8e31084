"""jobs/env.sh without SLURM: the GPU profiles train on the GPU or stop, and TERM to the batch script still
requeues (the local SLURM cluster tests in tests/slurm run the scripts for real)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent


def job_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "HPCGAN_"))}
    env.update(HPCGAN_HOME=str(REPO), HPCGAN_VENV=str(VENV), HPCGAN_WORKDIR=str(tmp_path), HPCGAN_RUN_DIR="run",
               **extra)
    return env


@pytest.mark.parametrize("profile,device", [("local", "auto"), ("generic-gpu", "cuda"), ("alps", "cuda"),
                                            ("daint", "cuda")])
def test_profiles_choose_the_device(tmp_path, profile, device):
    out = subprocess.run(["bash", "-c", f'source "{REPO}/jobs/env.sh" && echo "device=$HPCGAN_DEVICE"'],
                         env=job_env(tmp_path, HPCGAN_PROFILE=profile), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().endswith(f"device={device}"), out


@pytest.mark.parametrize("given,run_dir", [
    ({"SLURM_JOB_NAME": "lhc-a", "SLURM_JOB_ID": "41"}, "runs/lhc-a"),  # not keyed by the id: a resubmission resumes
    ({"SLURM_JOB_NAME": "grid", "SLURM_JOB_ID": "44", "SLURM_ARRAY_TASK_ID": "7"}, "runs/grid-007"),
    ({"SLURM_JOB_NAME": "lhc-a", "SLURM_JOB_ID": "41", "HPCGAN_RUN_DIR": "runs/mine"}, "runs/mine"),
])
def test_the_default_run_dir_is_one_per_job_name(tmp_path, given, run_dir):
    env = {k: v for k, v in job_env(tmp_path).items() if k != "HPCGAN_RUN_DIR"}
    out = subprocess.run(["bash", "-c", f'source "{REPO}/jobs/env.sh" && echo "run_dir=$HPCGAN_RUN_DIR"'],
                         env={**env, **given}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().endswith(f"run_dir={run_dir}"), out


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_cuda_without_a_gpu_stops_every_rank_with_one_line(run_mpi, hpcgan):
    """What a GPU profile does when a rank sees no GPU (a forgotten --gpus-per-task): exit 2 on every rank,
    one line from rank 0 (the error comes before the backend starts: every rank knows it)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    job = run_mpi(2, hpcgan + ["train", "--config", "lhc-small", "--device", "cuda"], timeout=120, check=False)
    assert job.returncode == 2, job.describe()
    lines = [ln for ln in job.text.splitlines() if "hpcgan: error:" in ln]
    assert len(lines) == 1 and "device 'cuda' asked for, but torch sees no CUDA device" in lines[0], job.describe()


@pytest.mark.timeout(120)
def test_term_to_the_batch_script_still_reaches_hpcgan_finish(tmp_path):
    """SLURM's TERM goes to every process of the job. The step's ranks checkpoint and exit 75; the batch
    shell must outlive the signal to requeue (without SLURM_JOB_ID, hpcgan_finish exits 75 instead)."""
    step = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(75)); "
            "pathlib.Path('ready').touch(); time.sleep(60)")
    script = tmp_path / "job.sh"
    script.write_text(f'source "{REPO}/jobs/env.sh"\n"{sys.executable}" -c "{step}"\nhpcgan_finish $?\n')
    proc = subprocess.Popen(["bash", str(script)], env=job_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert (tmp_path / "ready").exists(), proc.communicate(timeout=10)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 75, err
    assert "SIGTERM to the batch script: waiting for the step" in err


def _fake_squeue(tmp_path: Path, body: str) -> dict:
    """A `squeue` on PATH that runs `body` (bash): what the job script sees of slurmctld."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue").write_text(f"#!/bin/bash\n{body}\n")
    (bin_dir / "squeue").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _take(tmp_path: Path, job_id: str, squeue: str) -> subprocess.CompletedProcess:
    env = job_env(tmp_path, SLURM_JOB_ID=job_id, **_fake_squeue(tmp_path, squeue))
    return subprocess.run(["bash", "-c", f'source "{REPO}/jobs/env.sh" && hpcgan_use_run_dir && echo took'],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("squeue,takes,says", [
    ('echo "$3 RUNNING"', False, "is in use by job 41 (RUNNING)"),
    ('echo "$3 PENDING"', False, "is in use by job 41 (PENDING)"),
    ("exit 0", True, "lock of job 41 is stale (not in squeue)"),
    ('echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1', True, "stale"),
    ('echo "slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1', False,
     "squeue could not say whether it still runs (slurm_load_jobs error: Socket timed out"),
])
def test_the_job_lock_is_stale_only_when_squeue_says_the_holder_is_gone(tmp_path, squeue, takes, says):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "job.lock").write_text("41\n")
    out = _take(tmp_path, "42", squeue)
    assert (out.returncode == 0 and out.stdout.strip() == "took") == takes, out
    assert says in out.stderr, out
    assert (tmp_path / "run" / "job.lock").read_text().strip() == ("42" if takes else "41")
    if not takes:
        assert out.returncode == 2


@pytest.mark.timeout(120)
def test_two_jobs_taking_a_stale_lock_at_once_cannot_both_start(tmp_path):
    """The race of before: a stale holder, a slow squeue (2 s), two jobs at once. The check and the write
    happen under one flock, so the second job sees the first one's id, which squeue lists as running."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "job.lock").write_text("41\n")
    squeue = 'sleep 2; [ "$3" = 41 ] && exit 0; echo "$3 RUNNING"'  # 41 is gone; any other holder runs
    env = {j: job_env(tmp_path, SLURM_JOB_ID=j, **_fake_squeue(tmp_path, squeue)) for j in ("50", "51")}
    procs = [subprocess.Popen(["bash", "-c", f'source "{REPO}/jobs/env.sh" && hpcgan_use_run_dir && echo took'],
                              env=env[j], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for j in env]
    results = [p.communicate(timeout=60) for p in procs]
    took = [j for j, p, (out, _) in zip(env, procs, results) if p.returncode == 0 and out.strip() == "took"]
    assert len(took) == 1, results
    assert (tmp_path / "run" / "job.lock").read_text().strip() == took[0]
    loser = [err for j, (_, err) in zip(env, results) if j not in took][0]
    assert f"is in use by job {took[0]} (RUNNING)" in loser
