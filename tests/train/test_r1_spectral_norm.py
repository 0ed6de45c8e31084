"""R1 gradient penalty (loss.r1_gamma, loss.r1_interval) and spectral normalisation of D
(train.d_spectral_norm): the analytic gradient of a small D, fp32 under autocast, and exact resume."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from hpcgan.config import LossConfig
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.losses import GANLoss
from hpcgan.train.step import build_training
from hpcgan.train.trainer import train

from conftest import local, tiny_config


pytestmark = pytest.mark.usefixtures("clean_signals")


class LinearD(nn.Module):
    """D(cond, x) = <w, x> + <u, cond>, one scale, one patch: grad_x of the score is w for every sample."""

    def __init__(self, n: int):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, n))
        self.u = nn.Parameter(torch.ones(n))

    def forward(self, cond, x):
        return [(x.flatten(1) * self.w).sum(1, keepdim=True) + (cond.flatten(1) * self.u).sum(1, keepdim=True)]


@pytest.mark.parametrize("autocast", [None, torch.bfloat16, torch.float16])
def test_r1_matches_the_analytic_gradient_in_fp32_under_any_autocast(autocast):
    gamma = 3.0
    D = LinearD(12)
    real, cond = torch.randn(5, 12), torch.randn(5, 12)
    loss = GANLoss(LossConfig(r1_gamma=gamma))
    ctx = torch.autocast("cpu", dtype=autocast) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        r1, norm2 = loss.r1_penalty(D, cond, real)
    assert r1.dtype == torch.float32 and torch.isfinite(r1)
    w = D.w.detach()
    torch.testing.assert_close(norm2, w.pow(2).sum())                 # |grad_x D|^2 = |w|^2
    torch.testing.assert_close(r1, 0.5 * gamma * w.pow(2).sum())
    r1.backward()
    torch.testing.assert_close(D.w.grad, gamma * w)                   # d/dw of gamma/2 |w|^2
    assert D.u.grad is None or torch.count_nonzero(D.u.grad) == 0     # the condition is not penalised


def test_spectral_norm_parametrises_every_conv_and_linear_of_d(tmp_path, crf_data):
    tr = build_training(tiny_config(tmp_path, crf_data, "train.d_spectral_norm=true"), local(), log=lambda m: None)
    layers = [m for m in tr.D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in layers)
    assert not any(hasattr(m, "parametrizations") for m in tr.G.modules())
    with torch.no_grad():
        for _ in range(30):  # power iterations in training mode
            tr.D(torch.randn(2, 44, 16, 16), torch.randn(2, 3, 16, 16))
    sigma = torch.linalg.matrix_norm(layers[0].weight.detach().flatten(1), ord=2)
    assert abs(float(sigma) - 1.0) < 0.05


TOOLKIT = ["train.batch_size=4", "loss.r1_gamma=1.0", "loss.r1_interval=2", "train.d_spectral_norm=true",
           "loss.gan=hinge", "train.ema_halflife_samples=64", "crf.noise_channels=1", "crf.dropout=0.25"]


@pytest.mark.timeout(300)
def test_interrupted_run_with_r1_spectral_norm_and_ema_resumes_bit_identically(tmp_path, crf_data):
    assert train(tiny_config(tmp_path / "a", crf_data, *TOOLKIT, "train.epochs=2"), local()) == 0
    assert train(tiny_config(tmp_path / "b", crf_data, *TOOLKIT, "train.epochs=2", "train.max_steps=5"),
                 local()) == 0
    assert train(tiny_config(tmp_path / "b", crf_data, *TOOLKIT, "train.epochs=2"), local()) == 0
    last = [ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / r / "run" / "checkpoints")[-1]) for r in "ab"]
    for key in ("G", "D", "G_ema"):
        assert last[0][key].keys() == last[1][key].keys()
        for k in last[0][key]:
            assert torch.equal(last[0][key][k], last[1][key][k]), f"{key}.{k} differs after resume"
    assert any("parametrizations" in k for k in last[0]["D"])
    records = [json.loads(ln) for ln in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    r1 = [r["d_r1"] for r in records if r.get("kind") == "train"]
    # log_every=1: the lazy penalty runs on every second step (scaled by 2 there), and nowhere else
    assert len(r1) == 16 and all(v > 0 for v in r1[0::2]) and all(v == 0 for v in r1[1::2]), r1
