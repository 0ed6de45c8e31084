"""CRF workload: registry, unit round trips, validation metrics, figures, evaluation, dataset checks, presets."""
import json

import numpy as np
import pytest
import torch

from hpcgan.config import load_config
from hpcgan.errors import UserError
from hpcgan.workloads import get_workload
from hpcgan.workloads.crf import CRFWorkload, parameter_count
from hpcgan.workloads.crf.workload import EVAL_GRID, EVAL_JSON, EVAL_SPECTRA

SMALL = ["workload=crf", "crf.size=32", "crf.in_channels=5", "crf.widths=[4,8]", "crf.d_widths=[8,16]",
         "crf.dropout=0.0"]


def workload(*extra: str) -> CRFWorkload:
    wl = get_workload(load_config(None, SMALL + list(extra)))
    assert isinstance(wl, CRFWorkload) and wl.name == "crf"
    return wl


def textured(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Reflectance-like targets in [0, 1]: a smooth field plus pixel-scale texture."""
    x = np.linspace(0, 2 * np.pi, size)
    smooth = 0.4 + 0.2 * np.sin(x)[None, None, :, None] * np.cos(x)[None, None, None, :]
    return np.clip(smooth + 0.1 * rng.standard_normal((n, 3, size, size)), 0, 1)


def blur(a: np.ndarray) -> np.ndarray:
    return sum(np.roll(np.roll(a, dy, -2), dx, -1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0


@pytest.mark.parametrize("output,lo,hi", [("tanh", -1.0, 1.0), ("sigmoid", 0.0, 1.0)])
def test_prepare_and_to_data_units_round_trip(output, lo, hi):
    wl = workload(f"crf.output={output}")
    inputs = torch.randn(2, 5, 32, 32)
    targets = torch.linspace(0, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    cond, real = wl.prepare(inputs, targets, torch.device("cpu"))
    assert torch.equal(cond, inputs)
    assert real.min().item() == pytest.approx(lo) and real.max().item() == pytest.approx(hi)
    torch.testing.assert_close(wl.to_data_units(real), targets, rtol=0, atol=1e-7)
    fake = wl.build_generator()(cond)
    assert fake.shape == targets.shape and lo <= fake.min() and fake.max() <= hi


def test_models_follow_config():
    wl = workload("crf.noise_channels=2", "crf.d_scales=2", "crf.norm=none", "crf.d_conditional=false")
    g, d = wl.build_generator(), wl.build_discriminator()
    assert g.noise_channels == 2 and len(d(torch.zeros(1, 5, 32, 32), torch.zeros(1, 3, 32, 32))) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) and not d.conditional
    assert parameter_count(g) > 0


def test_validation_metrics():
    wl = workload()
    rng = np.random.default_rng(0)
    real01 = torch.tensor(textured(4, 32, rng), dtype=torch.float32)
    cond, real = wl.prepare(torch.zeros(4, 5, 32, 32), real01, torch.device("cpu"))
    same = wl.validation_metrics(cond, real, real.clone())
    assert same == {"l1": 0.0, "mse": 0.0, "spec_high": 0.0, "hf_power_ratio": 1.0}
    fake = wl.prepare(cond, torch.tensor(blur(real01.numpy())), torch.device("cpu"))[1]
    m = wl.validation_metrics(cond, real, fake)
    assert m["l1"] > 0 and m["mse"] > 0 and m["spec_high"] > 0.5 and m["hf_power_ratio"] < 0.3


def test_evaluate_toy_case(tmp_path):
    wl = workload()
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((6, 5, 32, 32)).astype(np.float32)
    real = textured(6, 32, rng)
    same = wl.evaluate(inputs, real, real.copy(), {}, tmp_path / "same")
    assert same["l1"] == 0.0 and same["mse"] == 0.0
    for ch in ("gray", "R", "G", "B"):
        for band in ("low", "mid", "high"):
            assert same["spectral_distance"][ch][band] == {"abs": 0.0, "log_ratio": 0.0}
    for name in (EVAL_JSON, EVAL_GRID, EVAL_SPECTRA):
        assert (tmp_path / "same" / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "same" / EVAL_JSON).read_text())
    assert len(saved["k"]) == 16 and len(saved["spectra"]["real"]["gray"]) == 16
    assert saved["bands"] == {"low": [1, 2], "mid": [3, 8], "high": [9, 16]}

    blurred = wl.evaluate(inputs, real, blur(real), {}, tmp_path / "blur")
    gray = blurred["spectral_distance"]["gray"]
    assert gray["high"]["log_ratio"] < -0.5 and gray["high"]["abs"] > gray["low"]["abs"]
    assert blurred["spectral_slope"]["gray"]["fake"] > blurred["spectral_slope"]["gray"]["real"]
    assert blurred["l1"] > 0


def test_evaluate_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(UserError, match="real and generated"):
        workload().evaluate(np.zeros((2, 5, 32, 32)), np.zeros((2, 3, 32, 32)), np.zeros((2, 3, 16, 16)), {}, tmp_path)


def test_write_figures_with_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    wl = workload()
    rng = np.random.default_rng(2)
    cond, real = wl.prepare(torch.randn(3, 5, 32, 32), torch.tensor(textured(3, 32, rng), dtype=torch.float32),
                            torch.device("cpu"))
    writer = SummaryWriter(str(tmp_path / "tb"))
    wl.write_figures(tmp_path / "fig", "epoch001", cond, real, real * 0.5, tb_writer=writer, step=3)
    writer.close()
    assert (tmp_path / "fig" / "epoch001.png").stat().st_size > 1000
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000  # two image summaries


def test_check_dataset():
    wl = workload()
    good = {"workload": "crf", "input_shape": (5, 32, 32), "target_shape": (3, 32, 32),
            "input_channels": [f"c{i}" for i in range(5)], "target_channels": ["R", "G", "B"]}
    wl.check_dataset(good, "ok.h5")
    with pytest.raises(UserError, match="bad.h5: dataset is for workload 'lhc'"):
        wl.check_dataset({**good, "workload": "lhc"}, "bad.h5")
    with pytest.raises(UserError, match=r"bad.h5: input shape \(44, 32, 32\).*crf.in_channels"):
        wl.check_dataset({**good, "input_shape": (44, 32, 32)}, "bad.h5")
    with pytest.raises(UserError, match=r"target shape \(3, 64, 64\)"):
        wl.check_dataset({**good, "target_shape": (3, 64, 64)}, "bad.h5")


@pytest.mark.parametrize("preset", ["crf", "crf-small"])
def test_presets_build(preset):
    cfg = load_config(preset)
    assert cfg.workload == "crf" and cfg.train.betas == (0.5, 0.999)
    assert cfg.crf.size % 2 ** (len(cfg.crf.widths) - 1) == 0
    if preset == "crf":
        assert (cfg.crf.size, cfg.crf.in_channels, cfg.crf.out_channels) == (256, 44, 3)
        assert cfg.crf.widths == tuple(44 * f for f in (1, 2, 4, 8, 16)) and cfg.train.batch_size == 6
        assert cfg.data.path == "data/crf-train.h5" and cfg.data.val_path == "data/crf-val.h5"
        return
    assert cfg.data.path == "data/crf-small-train.h5" and cfg.data.val_path == "data/crf-small-val.h5"
    wl = get_workload(cfg)
    g, d = wl.build_generator(), wl.build_discriminator()
    x = torch.randn(2, cfg.crf.in_channels, cfg.crf.size, cfg.crf.size)
    y = g(x)
    assert y.shape == (2, 3, cfg.crf.size, cfg.crf.size)
    assert len(d(x, y)) == cfg.crf.d_scales


def test_config_errors():
    with pytest.raises(UserError, match="crf.size: 30 is not divisible by 2"):
        load_config("crf-small", ["crf.size=30"])
    with pytest.raises(UserError, match="crf.norm"):
        load_config("crf", ["crf.norm=group"])
    with pytest.raises(UserError, match="crf.dropout"):
        load_config("crf", ["crf.dropout=1.5"])


def test_grid_channels_follow_the_synthetic_schema():
    from hpcgan.workloads.crf import figures

    synth = pytest.importorskip("hpcgan.workloads.crf.synth")
    assert figures.REFERENCE_INPUTS == synth.INPUT_CHANNELS
    shown = figures.shown_input_channels(44)
    assert [synth.INPUT_CHANNELS[i] for i, _ in shown] == [label for _, label in shown] == ["RH_850", "RH_500", "TS"]
    assert figures.shown_input_channels(5) == [(0, "input 0"), (1, "input 1"), (2, "input 2")]


def test_validation_sums_add_up_over_uneven_shares():
    """Sums over any split of the samples (ranks' uneven shares, short batches) give the metrics of one pass."""
    wl = workload()
    rng = np.random.default_rng(3)
    real01 = torch.tensor(textured(11, 32, rng), dtype=torch.float32)
    cond, real = wl.prepare(torch.zeros(11, 5, 32, 32), real01, torch.device("cpu"))
    fake = wl.prepare(cond, torch.tensor(blur(real01.numpy())), torch.device("cpu"))[1]
    whole = wl.validation_metrics(cond, real, fake)
    totals: dict = {}
    for a, b in ((0, 4), (4, 5), (5, 9), (9, 11)):
        for k, v in wl.validation_sums(cond[a:b], real[a:b], fake[a:b]).items():
            totals[k] = totals.get(k, 0.0) + v
    split = wl.validation_finish(totals, 11)
    assert split.keys() == whole.keys()
    for k in whole:
        assert split[k] == pytest.approx(whole[k], rel=1e-12), k
