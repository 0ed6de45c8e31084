"""A job checkpointed at N ranks and resumed at M (real mpirun): the interrupted epoch continues with exactly
the samples not yet consumed (audited with train.sample_ledger), says so in one line, and a checkpoint at an
epoch's last step moves on to the next epoch. With the global batch kept (2 x 4 -> 1 x 8) the run ends with
the weights of a run never interrupted (tiny CRF without noise, dropout or batch statistics: see README,
"Changing the rank count of a job")."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hpcgan.train import checkpoint as ckpt
from hpcgan.train.ledger import consumed

from conftest import TINY, write_crf

pytestmark = pytest.mark.mpi
HPCGAN = [str(Path(sys.executable).parent / "hpcgan")]

N = 48  # samples; shuffle_block 4 (TINY)
POINTS = random.Random(25).sample(range(1, 6), 3)  # interruption steps inside epoch 1, drawn once, fixed


def args(data: str, run_dir, batch: int, *extra: str) -> list[str]:
    return [*HPCGAN, "train", "--config", "crf-small", "--backend", "horovod", *TINY, f"data.path={data}",
            "data.val_path=", f"run_dir={run_dir}", f"train.batch_size={batch}", "train.epochs=2",
            "train.sample_ledger=true", *extra]


def run(run_mpi, run_single, ranks: int, argv: list[str]):
    if ranks == 1:
        job = run_single(argv, timeout=240)
        assert job.returncode == 0, job.describe()
        return job
    return run_mpi(ranks, argv, timeout=300)


def audit(run_dir, first_epoch_expected: int) -> None:
    """Every sample at most once per epoch; epoch 1 holds `first_epoch_expected` samples, epoch 2 all of them."""
    per_epoch = consumed(run_dir)
    assert sorted(per_epoch) == [0, 1]
    for epoch, idx in per_epoch.items():
        assert len(np.unique(idx)) == len(idx), f"epoch {epoch}: a sample read twice"
    assert len(per_epoch[0]) == first_epoch_expected
    np.testing.assert_array_equal(np.sort(per_epoch[1]), np.arange(N))


def weights(run_dir) -> dict:
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir / "checkpoints")[-1])
    return {f"{net}.{k}": v for net in ("G", "D") for k, v in state[net].items() if v.is_floating_point()}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("stop", [POINTS[0], 6])  # mid-epoch, and the epoch's last step
def test_two_ranks_to_one_continues_and_matches_the_uninterrupted_run(tmp_path, run_mpi, run_single, stop):
    data = write_crf(tmp_path / "crf.h5", N)
    run(run_mpi, run_single, 1, args(data, tmp_path / "ref", 8))
    run(run_mpi, run_single, 2, args(data, tmp_path / "run", 4, f"train.max_steps={stop}"))
    job = run(run_mpi, run_single, 1, args(data, tmp_path / "run", 8))
    if stop < 6:
        line = (f"ranks 2 -> 1; train.batch_size 4 -> 8: epoch 1 continues with the {N - 8 * stop} samples not yet "
                f"consumed ({8 * stop} of {N} trained, {stop} global batches of 2 rank(s)) in {6 - stop} steps of 8")
    else:
        line = "ranks 2 -> 1; train.batch_size 4 -> 8: epoch 1 was complete at the checkpoint; epoch 2 starts"
    assert job.stderr.count(line) == 1, job.describe()
    audit(tmp_path / "run", N)
    assert ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[-1].name == "ckpt-00000012.pt"
    ref, got = weights(tmp_path / "ref"), weights(tmp_path / "run")
    for k in ref:  # the same samples in every global batch: equal up to the reduction order
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-5, msg=lambda m: f"{k} (stop {stop}): {m}")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("before,after,batch", [(1, 2, 4), (2, 4, 2)])
def test_more_ranks_read_the_rest_of_the_epoch_once(tmp_path, run_mpi, run_single, before, after, batch):
    """The global batch doubles (1 x 4 -> 2 x 4, 2 x 2 -> 4 x 2): the rest of epoch 1 is cut into the new global
    batches; only a tail shorter than one of them (4 samples when an odd number of steps was done) is left out."""
    stop = POINTS[1] if before == 1 else POINTS[2]
    data = write_crf(tmp_path / "crf.h5", N)
    run(run_mpi, run_single, before, args(data, tmp_path / "run", batch, f"train.max_steps={stop}"))
    job = run(run_mpi, run_single, after, args(data, tmp_path / "run", batch))
    rest = N - 4 * stop
    assert job.text.count(f"ranks {before} -> {after}: epoch 1 continues with the {rest} samples not yet "
                          f"consumed") == 1, job.describe()
    audit(tmp_path / "run", 4 * stop + rest // 8 * 8)
    last = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert last.name == f"ckpt-{stop + rest // 8 + N // 8:08d}.pt"
    state = ckpt.load_checkpoint(last)
    # The schedule counts samples: every sample trained, the step counter in steps of the new global batch.
    assert state["samples_seen"] == 4 * stop + rest // 8 * 8 + N
    assert state["step_count"] == round(4 * stop / 8) + rest // 8 + N // 8
