"""One job per run directory: the second `hpcgan train` on a held directory gets one line naming the holder
and exit 2; a killed holder leaves no stale lock (the kernel drops a flock with its process)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from hpcgan.cli.main import main
from hpcgan.errors import UserError
from hpcgan.train.run_lock import LOCK_NAME, release_run_lock, take_run_lock

HOLD = ("import sys, time; from hpcgan.train.run_lock import take_run_lock; take_run_lock(sys.argv[1]); "
        "print('held', flush=True); time.sleep(120)")


def _holder(run_dir):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "SLURM_JOB_ID": "4242"})
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.timeout(60)
def test_second_taker_is_refused_naming_the_holder_until_it_dies(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(UserError, match=rf"in use by pid {holder.pid} on .*SLURM job 4242"):
            take_run_lock(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel releases the lock
        holder.wait()
    take_run_lock(tmp_path)
    release_run_lock(tmp_path)


@pytest.mark.timeout(120)
def test_hpcgan_train_on_a_held_run_directory_exits_2_before_writing(tmp_path, capsys):
    from conftest import write_lhc

    data = write_lhc(tmp_path / "lhc.h5", 256)
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        code = main(["train", "--config", "lhc-small", f"data.path={data}", "data.val_path=",
                     f"run_dir={run_dir}", "train.max_steps=1", "backend=local"])
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert code == 2, err
    assert f"run directory {run_dir}: in use by pid {holder.pid}" in err
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing else written
