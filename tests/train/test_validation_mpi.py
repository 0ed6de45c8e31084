"""Validation at 2 ranks gives a 1-rank evaluation's metrics (odd validation set, BatchNorm), and ranks that
see different datasets stop together (real mpirun)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from hpcgan.runtime.backend import LocalBackend
from hpcgan.runtime.env import ProcessInfo
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.run_dir import RunDir, read_metrics
from hpcgan.train.step import build_training
from hpcgan.train.trainer import make_reader, validate

from conftest import TINY, tiny_config, write_crf

pytestmark = pytest.mark.mpi
HERE = Path(__file__).parent
HPCGAN = str(Path(sys.executable).parent / "hpcgan")


@pytest.mark.timeout(400)
def test_two_rank_validation_equals_one_rank_evaluation_of_the_checkpoint(tmp_path, run_mpi):
    """13 validation samples over 2 ranks (7 + 6, short batches of 4): every sample counted once, with
    BatchNorm statistics averaged over ranks before validation and in the checkpoint. Re-evaluating the
    checkpoint in one process gives the same numbers; before, 2 ranks evaluated 8 samples with each rank's
    own statistics, and the checkpoint held rank 0's."""
    train, val = write_crf(tmp_path / "train.h5", 16), write_crf(tmp_path / "val.h5", 13, seed=1)
    extra = ["crf.norm=batch", f"data.val_path={val}", "train.batch_size=4", "train.epochs=1", "train.val_batches=0"]
    run_mpi(2, [HPCGAN, "train", "--config", "crf-small", *TINY, f"data.path={train}", f"run_dir={tmp_path / 'run'}",
                *extra], timeout=240)
    two = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "val"][-1]

    cfg = tiny_config(tmp_path / "one", train, *extra)
    tr = build_training(cfg, LocalBackend(ProcessInfo(), torch.device("cpu")), log=lambda m: None)
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    ckpt.unwrap(tr.G).load_state_dict(state["G"])
    ckpt.unwrap(tr.D).load_state_dict(state["D"])
    assert any(k.endswith("running_mean") for k in state["G"])
    run = RunDir(tmp_path / "one" / "run", active=True)
    with make_reader(cfg, 0, 1, val, train=False) as reader:
        one = validate(tr, run, reader, epoch=0, step=two["step"], log=lambda m: None)
    run.close()
    assert one.keys() <= two.keys() and {"l1", "mse", "spec_high"} <= one.keys()
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-6), k  # float32 rounding of other batch shapes only


@pytest.mark.timeout(300)
def test_ranks_reading_different_datasets_stop_together(tmp_path, run_mpi):
    """Rank 1 resolves another file than rank 0: every rank exits 2, rank 0 prints one line, nobody hangs."""
    same = write_crf(tmp_path / "a.h5", 8)
    other = write_crf(tmp_path / "b.h5", 12)
    ok = run_mpi(2, [HERE / "agree_worker.py", same, same], timeout=120)
    assert ok.text.count("datasets agree") == 2, ok.describe()
    job = run_mpi(2, [HERE / "agree_worker.py", same, other], timeout=120, check=False)
    assert job.returncode == 2, job.describe()
    lines = [ln for ln in job.text.splitlines() if "hpcgan: error:" in ln]
    assert len(lines) == 1, job.describe()
    for line in lines:
        assert line.split("hpcgan: error: ", 1)[1].startswith(
            "data.path: rank 1 sees 1 file(s) (b.h5), 12 samples"), job.describe()
    assert "aborting" not in job.text, job.describe()


@pytest.mark.timeout(400)
def test_two_rank_evaluate_takes_the_ema_generator_of_the_best_checkpoint(tmp_path, run_mpi):
    """Trained and evaluated at 2 ranks: evaluate's default is checkpoints/best.pt (the epoch the metrics
    log names as best) with its EMA generator, says so, and --checkpoint last --weights raw takes the newest
    checkpoint's trained weights."""
    train, val = write_crf(tmp_path / "train.h5", 16), write_crf(tmp_path / "val.h5", 8, seed=1)
    run = tmp_path / "run"
    run_mpi(2, [HPCGAN, "train", "--config", "crf-small", *TINY, f"data.path={train}", f"run_dir={run}",
                f"data.val_path={val}", "train.batch_size=4", "train.epochs=3", "train.ema_halflife_samples=16",
                "train.keep_checkpoints=1"], timeout=240)
    best = [r for r in read_metrics(run) if r["kind"] == "best"][-1]
    state = ckpt.load_checkpoint(run / "checkpoints" / ckpt.BEST_NAME)
    assert state["global_step"] == best["step"] and "G_ema" in state
    job = run_mpi(2, [HPCGAN, "evaluate", run, "--data", val, "--out", tmp_path / "ev"], timeout=240)
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["checkpoint"].endswith(f"checkpoints/{ckpt.BEST_NAME}") and summary["weights"] == "ema"
    assert f"checkpoints/{ckpt.BEST_NAME} (ema generator)" in job.output
    # Streamed: the ranks sent sums, not images, and one process evaluating every sample agrees.
    one = run_mpi(1, [HPCGAN, "evaluate", run, "--data", val, "--out", tmp_path / "ev1"], timeout=240)
    single = json.loads((tmp_path / "ev1" / "summary.json").read_text())
    assert one.returncode == 0 and single["samples"] == summary["samples"] == 8
    assert summary["bytes_combined"] == single["bytes_combined"]  # the same at 1 and 2 ranks
    assert summary["bytes_combined"]["rows_gathered"] == 0 and summary["bytes_combined"]["sums_reduced"] > 0
    for key in ("l1", "mse"):
        assert summary[key] == pytest.approx(single[key], rel=1e-9), key
    for band, row in single["coherence"]["gap"].items():
        assert summary["coherence"]["gap"][band] == pytest.approx(row, rel=1e-6, abs=1e-9), band
    run_mpi(2, [HPCGAN, "evaluate", run, "--data", val, "--out", tmp_path / "ev2", "--checkpoint", "last",
                "--weights", "raw"], timeout=240)
    summary = json.loads((tmp_path / "ev2" / "summary.json").read_text())
    assert summary["checkpoint"].endswith(ckpt.checkpoint_name(6)) and summary["weights"] == "raw"
