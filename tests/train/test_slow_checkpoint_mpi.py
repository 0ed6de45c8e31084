"""Rank 0's checkpoint write takes longer than the collective timeout and Horovod's stall shutdown, and the
job carries on (real mpirun; the mechanism, Backend.run_on_root, is tested in tests/runtime)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hpcgan.train import checkpoint as ckpt

from conftest import TINY, write_crf

pytestmark = pytest.mark.mpi
HERE = Path(__file__).parent
# jobs/env.sh sets 120 s; here 4 s against a write that takes 8 s longer.
SHORT_TIMEOUTS = {"HPCGAN_COLLECTIVE_TIMEOUT": "4", "HOROVOD_STALL_CHECK_TIME_SECONDS": "1",
                  "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "4"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["horovod", "torch"])
def test_a_checkpoint_slower_than_the_timeouts_does_not_end_the_job(tmp_path, run_mpi, backend):
    data = write_crf(tmp_path / "crf.h5", 16)
    run = tmp_path / "run"
    job = run_mpi(2, [HERE / "slow_checkpoint_worker.py", "8", "train", "--config", "crf-small", "--backend", backend,
                      *TINY, f"data.path={data}", "data.val_path=", f"run_dir={run}", "train.batch_size=4",
                      "train.epochs=2"], timeout=200, env=SHORT_TIMEOUTS)
    assert "done: 2 epoch(s), 4 steps" in job.text, job.describe()
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
