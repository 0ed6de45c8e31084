"""ExtraAdam (train.optimizer=extra_adam, Gidel et al. 2019) and lazy R1 in the extra D rounds: the two
halves against a hand computation, the bilinear game where simultaneous Adam spirals out and the
extragradient converges, resume between the halves, and which D rounds get R1."""
from __future__ import annotations

import math

import pytest
import torch

from hpcgan.train import checkpoint as ckpt
from hpcgan.train.optim import ExtraAdam
from hpcgan.train.step import build_training
from hpcgan.train.trainer import train

from conftest import local, tiny_config

pytestmark = pytest.mark.usefixtures("clean_signals")


def test_two_halves_match_the_hand_computation():
    lr, (b1, b2), eps = 0.1, (0.5, 0.9), 1e-8
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = ExtraAdam([w], lr=lr, betas=(b1, b2), eps=eps)
    w0, g1, g2 = w.detach().clone(), torch.tensor([0.3, -1.0]), torch.tensor([0.5, 2.0])
    w.grad = g1.clone()
    opt.step()  # extrapolation: w' = w0 + adam step with g1
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1 ** 2
    w_look = w0 - lr * (m1 / (1 - b1)) / ((v1 / (1 - b2)).sqrt() + eps)
    torch.testing.assert_close(w.detach(), w_look)
    assert not opt.at_iterate
    w.grad = g2.clone()  # the gradient at the look-ahead point
    opt.step()  # update: from w0, not w', with the moments after both gradients
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2 ** 2
    expected = w0 - lr * (m2 / (1 - b1 ** 2)) / ((v2 / (1 - b2 ** 2)).sqrt() + eps)
    torch.testing.assert_close(w.detach(), expected)
    assert opt.at_iterate and "iterate" not in opt.state[w]


def _bilinear_distance(optimizer, steps: int = 1000, lr: float = 0.1) -> float:
    """min_x max_y x*y from (1, 1), both players stepping simultaneously: distance to the equilibrium (0, 0)."""
    x, y = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    ox, oy = optimizer([x], lr=lr, betas=(0.0, 0.999)), optimizer([y], lr=lr, betas=(0.0, 0.999))
    for _ in range(steps):
        x.grad, y.grad = y.detach().clone(), -x.detach().clone()  # the gradients at the current point
        ox.step()
        oy.step()
    return math.hypot(float(x.detach()), float(y.detach()))


def test_bilinear_game_adam_spirals_out_extragradient_converges():
    start = math.sqrt(2)
    assert _bilinear_distance(torch.optim.Adam) > 2 * start
    assert _bilinear_distance(ExtraAdam) < 0.01 * start


EXTRA = ["train.batch_size=4", "train.optimizer=extra_adam", "train.ema_halflife_samples=64", "train.epochs=2"]


@pytest.mark.timeout(300)
def test_resume_between_the_two_halves_is_bit_identical(tmp_path, crf_data):
    assert train(tiny_config(tmp_path / "a", crf_data, *EXTRA), local()) == 0
    # 3 steps: extrapolation, update, extrapolation; the checkpoint holds the look-ahead weights and the iterate
    assert train(tiny_config(tmp_path / "b", crf_data, *EXTRA, "train.max_steps=3"), local()) == 0
    mid = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "b" / "run" / "checkpoints")[-1])
    assert mid["opt_g"]["param_groups"][0]["extrapolated"] is True
    assert all("iterate" in s for s in mid["opt_g"]["state"].values())
    assert train(tiny_config(tmp_path / "b", crf_data, *EXTRA), local()) == 0
    last = [ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / r / "run" / "checkpoints")[-1]) for r in "ab"]
    for key in ("G", "D", "G_ema"):
        for k in last[0][key]:
            assert torch.equal(last[0][key][k], last[1][key][k]), f"{key}.{k} differs after resume"


def test_ema_averages_iterates_only(tmp_path, crf_data):
    tr = build_training(tiny_config(tmp_path, crf_data, *EXTRA), local(), log=lambda m: None)
    cond, real = torch.randn(4, 44, 16, 16), torch.rand(4, 3, 16, 16)
    before = [p.clone() for p in tr.G_ema.parameters()]
    tr.step(cond, real)  # the extrapolation: G is a look-ahead point, the EMA stays
    assert all(torch.equal(a, b) for a, b in zip(before, tr.G_ema.parameters()))
    tr.step(cond, real)  # the update: an iterate, averaged in
    assert not all(torch.equal(a, b) for a, b in zip(before, tr.G_ema.parameters()))


def test_lazy_r1_runs_in_whichever_d_round_is_due(tmp_path, crf_data):
    """d_steps=2, r1_interval=3: D rounds 0..5 over three steps, R1 in rounds 0 (step 0, main) and 3 (step 1,
    the extra round), each scaled by 3."""
    tr = build_training(tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.d_steps=2",
                                    "loss.r1_gamma=1.0", "loss.r1_interval=3"), local(), log=lambda m: None)
    calls = []
    penalty = tr.loss.r1_penalty

    def counted(D, cond, real):
        calls.append(tr.step_count)
        return penalty(D, cond, real)

    tr.loss.r1_penalty = counted
    cond, real = torch.randn(4, 44, 16, 16), torch.rand(4, 3, 16, 16)
    logged = [tr.step(cond, real)["d_r1"] for _ in range(3)]
    assert calls == [0, 2]  # round 0 in the main pass of step 0; round 3 in the extra pass after step 1
    assert float(logged[0]) > 0 and float(logged[1]) == 0 and float(logged[2]) == 0


def test_clouds_dist_preset_is_the_reference_setup_and_trains(tmp_path, crf_data):
    from hpcgan.config import load_config

    from conftest import TINY

    cfg = load_config("crf-clouds-dist", TINY + [f"data.path={crf_data}", "data.val_path=",
                                                 f"run_dir={tmp_path / 'run'}", "train.max_steps=4"])
    t, l = cfg.train, cfg.loss
    assert (t.optimizer, t.lr_g, t.lr_d, tuple(t.betas), t.batch_size, t.d_spectral_norm) == \
        ("extra_adam", 1e-5, 1e-5, (0.5, 0.999), 6, True)
    assert (l.gan, l.lambda_gan, l.lambda_match) == ("hinge", 1.0, 1.0)
    assert train(cfg, local()) == 0
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert state["global_step"] == 4 and state["opt_d"]["param_groups"][0]["extrapolated"] is False
