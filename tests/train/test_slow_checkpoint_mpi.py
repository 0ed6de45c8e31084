"""Rank 0's file work takes longer than the collective timeout and Horovod's stall shutdown, and the job
carries on: a checkpoint write, and the validation figures (real mpirun; the mechanism, Backend.run_on_root,
is tested in tests/runtime)."""
from __future__ import annotations

import pytest

from hpcgan.train import checkpoint as ckpt

from conftest import SHORT_TIMEOUTS, SLOW_ROOT_WORKER, TINY, write_crf

pytestmark = pytest.mark.mpi


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["horovod", "torch"])
@pytest.mark.parametrize("slow", ["checkpoint", "figures"])
def test_slow_work_on_rank_0_does_not_end_the_job(tmp_path, run_mpi, backend, slow):
    data = write_crf(tmp_path / "crf.h5", 16)
    run = tmp_path / "run"
    # Figures come from validation: the same file serves as the validation set then.
    val = [f"data.val_path={data}", "train.figures=true"] if slow == "figures" else ["data.val_path="]
    job = run_mpi(2, [SLOW_ROOT_WORKER, slow, "8", "train", "--config", "crf-small",
                      "--backend", backend, *TINY, f"data.path={data}", *val, f"run_dir={run}",
                      "train.batch_size=4", "train.epochs=2"], timeout=200, env=SHORT_TIMEOUTS)
    assert "done: 2 epoch(s), 4 steps" in job.text, job.describe()
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["ckpt-00000002.pt", "ckpt-00000004.pt"]
    if slow == "figures":
        assert sorted(p.name for p in (run / "figures").glob("*.png")) == ["epoch001.png", "epoch002.png"]
