"""Generator EMA (train.ema_halflife_samples) and the best checkpoint (checkpoints/best.pt): the average's
arithmetic, bit-identical resume with it, best.pt kept out of rotation, and evaluate's defaults."""
from __future__ import annotations

import json

import pytest
import torch

from hpcgan.cli.main import main
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.step import build_training
from hpcgan.train.trainer import train

from conftest import local, tiny_config, write_crf


pytestmark = pytest.mark.usefixtures("clean_signals")


def test_ema_update_is_the_half_life_average(tmp_path, crf_data):
    """beta = 0.5 ** (global batch / half-life): after one step, G_ema = beta G_before + (1 - beta) G_after."""
    cfg = tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.ema_halflife_samples=40",
                      "train.ema_rampup=0")
    tr = build_training(cfg, local(), log=lambda m: None)
    before = {k: v.clone() for k, v in tr.G_ema.state_dict().items()}
    with torch.no_grad():
        for p in tr.G.parameters():
            p.add_(1.0)  # what an optimizer step does, by hand
    tr.step_count = 1
    tr.update_ema()
    beta = 0.5 ** (4 / 40)
    after = dict(tr.G.state_dict())
    for k, v in tr.G_ema.named_parameters():
        torch.testing.assert_close(v, beta * before[k] + (1 - beta) * after[k], rtol=1e-6, atol=1e-6)
    # Ramp-up: early on the half-life is at most ema_rampup x the samples seen, so the average follows G.
    cfg2 = tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.ema_halflife_samples=100000")
    tr2 = build_training(cfg2, local(), log=lambda m: None)
    with torch.no_grad():
        for p in tr2.G.parameters():
            p.add_(1.0)
    tr2.step_count = 1
    tr2.update_ema()
    beta2 = 0.5 ** (4 / (4 * 0.05))
    p_ema, p = next(tr2.G_ema.parameters()), next(tr2.G.parameters())
    torch.testing.assert_close(p_ema, beta2 * (p - 1.0) + (1 - beta2) * p, rtol=1e-5, atol=1e-6)


EMA = ["train.batch_size=4", "train.ema_halflife_samples=64", "crf.noise_channels=1", "crf.dropout=0.25"]


@pytest.mark.timeout(300)
def test_resume_with_ema_is_bit_identical(tmp_path, crf_data):
    val = write_crf(tmp_path / "val.h5", 8, seed=3)
    a = tiny_config(tmp_path / "a", crf_data, *EMA, "train.epochs=2", f"data.val_path={val}")
    assert train(a, local()) == 0
    assert train(tiny_config(tmp_path / "b", crf_data, *EMA, "train.epochs=2", f"data.val_path={val}",
                             "train.max_steps=3"), local()) == 0
    assert train(tiny_config(tmp_path / "b", crf_data, *EMA, "train.epochs=2", f"data.val_path={val}"),
                 local()) == 0
    la = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "a" / "run" / "checkpoints")[-1])
    lb = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "b" / "run" / "checkpoints")[-1])
    for key in ("G", "G_ema"):
        for k in la[key]:
            assert torch.equal(la[key][k], lb[key][k]), f"{key}.{k} differs after resume"
    assert any(not torch.equal(la["G"][k], la["G_ema"][k]) for k in la["G"]), "the EMA is not G"
    assert la["best"] == lb["best"] and la["best"]["metric"] == "spec_high"


@pytest.mark.timeout(300)
def test_best_checkpoint_is_kept_out_of_rotation_and_evaluated_by_default(tmp_path, crf_data, capsys):
    val = write_crf(tmp_path / "val.h5", 8, seed=3)
    cfg = tiny_config(tmp_path, crf_data, *EMA, "train.epochs=3", f"data.val_path={val}", "train.keep_checkpoints=1",
                      "train.lr_g=0.02")  # a high LR: the validation value moves, so "best" is not always the last
    assert train(cfg, local()) == 0
    run = tmp_path / "run"
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r["spec_high"] for r in records if r["kind"] == "val"]
    bests = [r for r in records if r["kind"] == "best"]
    assert len(vals) == 3 and bests and bests[-1]["value"] == min(vals)
    best_epoch = vals.index(min(vals)) + 1
    assert bests[-1]["epoch"] == best_epoch
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == [ckpt.checkpoint_name(24)]
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["global_step"] == 8 * best_epoch and best["best"]["value"] == min(vals)
    # evaluate: best.pt and its EMA generator by default, the newest with --checkpoint last, raw with --weights.
    out = tmp_path / "ev"
    assert main(["evaluate", str(run), "--data", val, "--out", str(out), "--backend", "local"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint"].endswith("checkpoints/best.pt") and summary["weights"] == "ema"
    assert "(ema generator)" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", val, "--out", str(out), "--backend", "local",
                 "--checkpoint", "last", "--weights", "raw"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["checkpoint"].endswith(ckpt.checkpoint_name(24)) and summary["weights"] == "raw"
