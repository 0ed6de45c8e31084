"""`hpcgan sweep` on the local cluster: one job array of 4 tiny runs, one element preempted and requeued."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from slurm_helpers import HPCGAN, TINY, Cluster, Job, final_weights

pytestmark = [pytest.mark.slurm]
STEPS = 48  # TINY at one rank: 1536 tracks / batch 64 = 24 steps per epoch, 2 epochs


def _step(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return max((json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip()), default=0)


def _array_running(array_id: str) -> bool:
    p = subprocess.run(["squeue", "-h", "-j", array_id], capture_output=True, text=True, timeout=30)
    return bool(p.stdout.strip())


def _signal_ranks(job_id: str, sig: int) -> None:
    """What `#SBATCH --signal=USR2@120` does: the signal to the step's ranks (not the batch shell).

    Not `scancel --signal`: on this Slurm 22.05, for an array element it kept retrying while the element was
    requeued, blocked for 30 s and signalled the requeued run again (which died before its handler was set).
    """
    p = subprocess.run(["scontrol", "listpids", job_id], capture_output=True, text=True, timeout=30)
    pids = [int(line.split()[0]) for line in p.stdout.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    ranks = []
    for pid in pids:
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"train" in cmdline and any(part.endswith(b"hpcgan") for part in cmdline):
            ranks.append(pid)
    assert ranks, f"no hpcgan train process in job {job_id}: {p.stdout}"
    for pid in ranks:
        os.kill(pid, sig)


@pytest.mark.timeout(600)
def test_sweep_array_runs_every_point_survives_preemption_and_reports(slurm: Cluster, tiny_data) -> None:
    out = slurm.workdir / "sweeps" / "lr"
    cmd = [str(HPCGAN), "sweep", "--config", "lhc-small", *TINY.split(), "--out", str(out),
           "--max-concurrent", "2", "--sbatch-args=--ntasks-per-node=1",
           "--grid", "train.lr_g=1e-4,2e-4,3e-4,4e-4"]
    # Every element straggles (0.25 s a step, weights unchanged) so that element 1 is still training when signalled.
    p = subprocess.run(cmd, cwd=slurm.workdir, env=slurm.env(HPCGAN_FAULT="0:1:slow"), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    array_id = p.stdout.split("submitted job array ")[1].split(":")[0]
    assert "#SBATCH --array=0-3%2" in (out / "array.sh").read_text()

    # Preempt element 1 once it has trained a few steps: it must checkpoint, requeue and finish.
    element = Job(f"{array_id}_1", out / "logs")
    slurm.wait(element, timeout=240, until=lambda j: _step(out / "point-001") >= 4 or j.state not in ("PENDING", "RUNNING", "?"))
    assert element.state == "RUNNING", f"element 1 {element.state} before the signal"
    _signal_ranks(element.fields["JobId"], signal.SIGUSR2)
    t0 = time.time()
    while _array_running(array_id):
        assert time.time() - t0 < 420, f"array {array_id} still running after 420 s: " + \
            subprocess.run(["squeue", "-j", array_id], capture_output=True, text=True).stdout
        time.sleep(1)

    logs = {p.name: p.read_text(errors="replace") for p in (out / "logs").glob("*.out")}
    for i in range(4):
        run_dir = out / f"point-{i:03d}"
        assert final_weights(run_dir)["global_step"] == STEPS, logs
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["lr_g"] == pytest.approx((i + 1) * 1e-4)
    interruptions = [json.loads(x) for x in (out / "point-001" / "interruptions.jsonl").read_text().splitlines()]
    assert len(interruptions) == 1 and interruptions[0]["signal"] == "SIGUSR2", interruptions
    log1 = next(text for name, text in logs.items() if name.endswith("_1.out"))
    assert "requeue 1 of at most 3" in log1 and "resumed from" in log1, log1
    assert not any((out / f"point-{i:03d}" / "interruptions.jsonl").exists() for i in (0, 2, 3))

    r = subprocess.run([str(HPCGAN), "sweep", "report", str(out), "--metric", "l1"], env=slurm.env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and "`train.lr_g=" in ln]
    assert len(rows) == 4 and all("| 2 |" in ln for ln in rows), r.stdout  # every point: 2 epochs validated
    print(r.stdout)


@pytest.mark.timeout(400)
def test_optuna_sweep_array_asks_and_tells_from_each_element(slurm: Cluster, tiny_data) -> None:
    """--optuna 3 as a job array, 2 elements at once sharing the journal file: every trial is asked by its
    element, trained, and told; the report lists the asked values."""
    pytest.importorskip("optuna")
    from hpcgan.train import sweep, sweep_optuna

    out = slurm.workdir / "sweeps" / "optuna"
    cmd = [str(HPCGAN), "sweep", "--config", "lhc-small", *TINY.split(), "train.epochs=1", "--out", str(out),
           "--max-concurrent", "2", "--sbatch-args=--ntasks-per-node=1", "--optuna", "3", "--seed", "1",
           "--log-range", "train.lr_g=1e-4:1e-3"]
    p = subprocess.run(cmd, cwd=slurm.workdir, env=slurm.env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    array_id = p.stdout.split("submitted job array ")[1].split(":")[0]
    t0 = time.time()
    while _array_running(array_id):
        assert time.time() - t0 < 300, f"array {array_id} still running after 300 s"
        time.sleep(1)
    logs = "\n".join(p.read_text(errors="replace") for p in (out / "logs").glob("*.out"))
    study = sweep_optuna._study(out, sweep.load_sweep(out)["optuna"])
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 3, logs
    assert len({t.params["train.lr_g"] for t in study.trials}) == 3, [t.params for t in study.trials]
    for i in range(3):
        number = int((out / "points" / f"{i:03d}.trial").read_text())
        lr = study.trials[number].params["train.lr_g"]
        config = yaml.safe_load((out / f"point-{i:03d}" / "config.yaml").read_text())
        assert config["train"]["lr_g"] == pytest.approx(lr, rel=1e-5)
        assert final_weights(out / f"point-{i:03d}")["global_step"] == STEPS // 2
    r = subprocess.run([str(HPCGAN), "sweep", "report", str(out), "--metric", "l1"], env=slurm.env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stdout.splitlines() if ln.startswith("| ") and "`train.lr_g=" in ln]) == 3, r.stdout
    print(r.stdout)
