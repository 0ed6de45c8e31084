"""Non-finite gradients are caught before any optimizer step and any checkpoint, on every rank together,
and the stop message names the likely cause."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hpcgan.runtime import signals
from hpcgan.runtime.backend import LocalBackend
from hpcgan.runtime.env import ProcessInfo
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.trainer import EXIT_NONFINITE, train

from conftest import TINY, tiny_config, write_crf, write_lhc


@pytest.fixture(autouse=True)
def _signals(monkeypatch):
    monkeypatch.delenv("HPCGAN_FAULT", raising=False)
    yield
    signals.uninstall()
    signals.reset()


def local() -> LocalBackend:
    return LocalBackend(ProcessInfo(), torch.device("cpu"))


def checkpoints(run_dir) -> dict[int, dict]:
    return {int(p.name[5:13]): ckpt.load_checkpoint(p) for p in ckpt.list_checkpoints(run_dir / "checkpoints")}


def finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for net in ("G", "D") for v in state[net].values() if v.is_floating_point())


@pytest.mark.timeout(300)
def test_nan_gradient_stops_before_the_step_and_the_checkpoint(tmp_path, crf_data, capsys):
    """A NaN in one gradient with finite losses (before: Adam wrote NaN weights and the step-2 checkpoint held them)."""
    cfg = tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.checkpoint_every=1", "train.max_steps=4",
                      "train.fault=0:2:nangrad")
    assert train(cfg, local()) == EXIT_NONFINITE
    saved = checkpoints(tmp_path / "run")
    assert sorted(saved) == [1] and finite(saved[1])
    err = capsys.readouterr().err
    assert "non-finite gradients (losses finite) at global step 2" in err, err
    assert "nothing was stepped or saved" in err


@pytest.mark.timeout(300)
def test_nan_gradient_skipped_when_asked(tmp_path, crf_data):
    cfg = tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.max_steps=4", "train.nonfinite=skip",
                      "train.fault=0:2:nangrad")
    assert train(cfg, local()) == 0
    state = checkpoints(tmp_path / "run")[4]
    assert finite(state) and state["step_count"] == 3  # the poisoned step took no optimizer step


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["lr", "data", "start", "fp16"])
def test_stop_message_names_the_cause(tmp_path, crf_data, capsys, monkeypatch, case):
    if case == "lr":
        cfg = tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.lr_g=1e30", "train.lr_d=1e30")
        expect = "likely the learning rate"
    elif case == "data":
        x = write_crf(tmp_path / "nan.h5", 8)
        import h5py

        with h5py.File(x, "r+") as f:
            f["inputs"][3, 0, 0, 0] = np.nan
        cfg = tiny_config(tmp_path, x, "train.batch_size=8", "data.check_finite=off", "data.normalize=false")
        expect = "the batch itself holds NaN/Inf"
    elif case == "start":  # a loss that is NaN from the start (config validation rejects loss.lambda_match=nan)
        from hpcgan.train.losses import GANLoss

        original = GANLoss.g_loss

        def nan_g_loss(self, *args):
            loss, stats = original(self, *args)
            return loss * float("nan"), stats

        monkeypatch.setattr(GANLoss, "g_loss", nan_g_loss)
        cfg = tiny_config(tmp_path, crf_data, "train.batch_size=4")
        expect = "from the first step with finite data"
    else:  # the LHC seed without its fp32 guard: (r/sigma)^2 ~ 1e9 overflows fp16 (the bug this policy fixes)
        from hpcgan.workloads.lhc import models

        monkeypatch.setattr(models, "linear_seed", models.linear_seed.__wrapped__)
        path = write_lhc(tmp_path / "lhc.h5", 256)
        from hpcgan.config import load_config

        cfg = load_config("lhc-small", [f"data.path={path}", "data.val_path=", f"run_dir={tmp_path / 'run'}",
                                        "train.amp=fp16", "train.batch_size=64", "train.figures=false"])
        expect = "likely an fp16 overflow"
    assert train(cfg, local()) == EXIT_NONFINITE
    err = capsys.readouterr().err
    assert expect in err, err
    assert "Lower the LR" not in err


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_two_ranks_stop_or_skip_together(tmp_path, run_mpi):
    """A NaN gradient on rank 1 only: both ranks stop at that step (exit 4, nothing saved from it), or with
    train.nonfinite=skip both skip it and go on with identical, finite weights."""
    data = write_crf(tmp_path / "crf.h5", 32)

    def args(run_dir, *extra):
        return [sys.executable, "-m", "hpcgan.cli.main", "train", "--config", "crf-small", "--backend", "torch",
                *TINY, f"data.path={data}", "data.val_path=", f"run_dir={run_dir}", "train.batch_size=4",
                "train.max_steps=3", "train.checkpoint_every=1", *extra]

    job = run_mpi(2, args(tmp_path / "stop"), timeout=150, check=False, env={"HPCGAN_FAULT": "1:2:nangrad"})
    assert job.returncode == EXIT_NONFINITE, job.describe()
    assert "non-finite gradients (losses finite) at global step 2" in job.text, job.describe()
    saved = checkpoints(tmp_path / "stop")
    assert sorted(saved) == [1] and finite(saved[1])

    run_mpi(2, args(tmp_path / "skip", "train.nonfinite=skip"), timeout=150, env={"HPCGAN_FAULT": "1:2:nangrad"})
    state = checkpoints(tmp_path / "skip")[3]
    assert finite(state) and state["step_count"] == 2


@pytest.mark.timeout(120)
def test_skipped_step_restores_batchnorm_statistics(tmp_path, crf_data):
    """A poisoned batch's forward pass makes BatchNorm's running statistics NaN; skipping the step undoes
    that, so the next checkpoint is finite (before: the save guard looked at parameters only)."""
    from hpcgan.train.step import build_training

    cfg = tiny_config(tmp_path, crf_data, "crf.norm=batch", "train.nonfinite=skip")
    tr = build_training(cfg, local(), log=lambda *a: None)
    before = {k: v.clone() for k, v in tr.G.state_dict().items() if "running" in k}
    assert before
    cond = torch.full((4, cfg.crf.in_channels, 16, 16), float("nan"))
    real = torch.zeros((4, cfg.crf.out_channels, 16, 16))
    tr.forward_backward([(cond, real, None)])
    assert not all(torch.isfinite(tr.G.state_dict()[k]).all() for k in before)
    tr.sync_and_step(skip=True)
    after = tr.G.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
