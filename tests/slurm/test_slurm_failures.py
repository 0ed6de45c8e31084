"""A dead or hung rank ends the job, non-zero, within a bound; the last checkpoint stays loadable."""
from __future__ import annotations

import re
import time

import pytest

from slurm_helpers import KILLWAIT, REPO, TINY, Cluster

pytestmark = [pytest.mark.slurm]
FAULT_AT = re.compile(r"\[rank (\d+)\] injected fault: (\w+) at step (\d+) \(time ([\d.]+)\)")


def _end_time(job) -> float:
    return time.mktime(time.strptime(job.fields["EndTime"], "%Y-%m-%dT%H:%M:%S"))


@pytest.mark.timeout(300)
def test_killed_rank_ends_job_within_bound_and_checkpoint_loads(slurm: Cluster, tiny_data) -> None:
    """Rank 1 SIGKILLs itself at step 10 (like the OOM killer): srun --kill-on-bad-exit ends rank 0."""
    from hpcgan.train import checkpoint as ckpt

    run_dir = slurm.workdir / "runs" / "killed"
    job = slurm.sbatch(REPO / "jobs" / "train_lhc.sh", HPCGAN_OVERRIDES=TINY + " train.checkpoint_every=4",
                       HPCGAN_RUN_DIR=str(run_dir), HPCGAN_FAULT="1:10:kill")
    slurm.wait(job, timeout=240)
    t_seen = time.time()
    log = job.log()
    assert job.state == "FAILED" and job.exit_code != 0, log
    m = FAULT_AT.search(log)
    assert m and m.group(1, 2, 3) == ("1", "kill", "10"), log
    assert re.search(r"srun: error: \S+: task 1: Killed", log), log
    took = _end_time(job) - float(m.group(4))
    print(f"measured: rank death -> job end {took:.0f} s (EndTime, 1 s resolution; test saw it after "
          f"{t_seen - float(m.group(4)):.1f} s); KillWait {KILLWAIT} s")
    assert took <= KILLWAIT + 15, log
    last = ckpt.list_checkpoints(run_dir / "checkpoints")[-1]
    assert last.name == "ckpt-00000008.pt"
    assert ckpt.load_checkpoint(last)["global_step"] == 8


@pytest.mark.timeout(240)
def test_hung_rank_ends_job_through_horovod_stall_shutdown(slurm: Cluster) -> None:
    """Rank 1 hangs (no exit, no error): Horovod's stall inspector shuts down rank 0, srun ends rank 1."""
    run_dir = slurm.workdir / "runs" / "hung"
    job = slurm.sbatch(REPO / "tests" / "slurm" / "stepper_job.sh", "40", "0.2", HPCGAN_RUN_DIR=str(run_dir),
                       HPCGAN_FAULT="1:3:hang", HOROVOD_STALL_CHECK_TIME_SECONDS="2",
                       HOROVOD_STALL_SHUTDOWN_TIME_SECONDS="5")
    slurm.wait(job, timeout=200)
    log = job.log()
    assert job.state == "FAILED" and job.exit_code != 0, log
    m = FAULT_AT.search(log)
    assert m and m.group(1, 2, 3) == ("1", "hang", "3"), log
    assert "stalled for longer than 5 seconds. Will shutdown." in log, log
    took = _end_time(job) - float(m.group(4))
    print(f"measured: rank hang -> job end {took:.0f} s (stall check 2 s, shutdown 5 s, KillWait {KILLWAIT} s)")
    assert took <= 5 + 5 + KILLWAIT + 15, log
    assert not (run_dir / "done.json").exists()
