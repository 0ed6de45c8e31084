"""Inter-band coherence and chroma (crf/colour.py) and the colour-aware model wrappers (crf/colour_models.py)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from hpcgan.config import load_config
from hpcgan.errors import UserError
from hpcgan.workloads import get_workload
from hpcgan.workloads.crf import colour, spectrum
from hpcgan.workloads.crf.colour_models import ChromaInputDiscriminator, LumaChromaGenerator, luminance
from hpcgan.workloads.crf.workload import EVAL_COLOUR, EVAL_JSON

RGB = ["R", "G", "B"]


def synthetic_crf(n: int, seed: int, size: int = 32) -> np.ndarray:
    """(n, 3, size, size) reflectance from the synthetic CRF generator (grey clouds over a coloured surface)."""
    from hpcgan.workloads.crf import synth as synth_crf

    return np.concatenate([y for _, y, _ in synth_crf.generate(0, n, seed, size=(size, size))]).astype(np.float64)


@pytest.fixture(scope="module")
def real_sets() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_crf(48, seed=5), synthetic_crf(48, seed=6)


def high_band_power(a: np.ndarray) -> np.ndarray:
    """Per band, the mean power over the high band's wavenumbers."""
    k, p = spectrum.radial_power_spectrum(a)
    return p.mean(0)[:, spectrum.band_masks(k)["high"]].mean(-1)


def test_metric_separates_coloured_texture_from_real(real_sets):
    real, other = real_sets
    # Independent white noise per band with the real fields' high-band power in each band.
    rng = np.random.default_rng(0)
    sigma = np.sqrt(high_band_power(other))
    speckled = other + rng.standard_normal(other.shape) * sigma[None, :, None, None]
    ratio = high_band_power(speckled) / high_band_power(other)
    assert np.all((ratio > 1.8) & (ratio < 2.2)), ratio  # the noise carries as much high-band power as the field

    same = colour.compare(real, other, RGB)
    assert not same["coloured_texture"]
    assert abs(same["coherence_bands"]["gap"]["high"]) < 0.02
    assert same["coherence_bands"]["real"]["high"]["mean"] > 0.95  # synthetic clouds are grey at fine scales

    flagged = colour.compare(real, speckled, RGB)
    assert flagged["coloured_texture"]
    assert flagged["coherence_bands"]["gap"]["high"] > 5 * colour.COHERENCE_GAP_FLAG
    assert flagged["coherence_bands"]["gap"]["low"] < flagged["coherence_bands"]["gap"]["high"]
    assert flagged["chroma"]["fake"]["rms"] > 1.5 * flagged["chroma"]["real"]["rms"]
    assert min(flagged["chroma"]["w1"].values()) > 3 * max(same["chroma"]["w1"].values())


def test_coherence_limits():
    rng = np.random.default_rng(1)
    field = rng.standard_normal((16, 1, 32, 32))
    grey = np.concatenate([field, 2 * field + 0.3, -field], axis=1)  # proportional (even anti-correlated) bands
    k, c = colour.coherence(grey, RGB)
    assert list(c) == ["R-G", "R-B", "G-B"] and len(k) == 16
    assert all(np.allclose(v, 1.0) for v in c.values())
    _, c = colour.coherence(rng.standard_normal((64, 3, 32, 32)), RGB)
    band = colour.coherence_per_band(k, c)
    assert band["high"]["mean"] < 0.01 and band["low"]["mean"] < 0.2  # few modes at low k: a larger bias
    with pytest.raises(ValueError, match="bands"):
        colour.coherence(np.zeros((2, 3, 32, 32)), ["R", "G"])


def test_cross_spectrum_of_a_field_with_itself_is_its_power():
    a = np.random.default_rng(2).standard_normal((3, 24, 32))
    k, p = spectrum.radial_power_spectrum(a)
    k2, s = spectrum.radial_cross_spectrum(a, a)
    assert np.array_equal(k, k2) and np.allclose(p, s)
    _, s_neg = spectrum.radial_cross_spectrum(a, -a)
    assert np.allclose(s_neg, -p)


def test_chroma_is_zero_for_grey_and_stats_have_every_band():
    grey = np.repeat(np.random.default_rng(3).uniform(0, 1, (2, 1, 8, 8)), 3, axis=1)
    assert np.allclose(colour.chroma(grey), 0.0, atol=1e-3)  # the ITU weights sum to 0.9999
    stats = colour.chroma_stats(grey, RGB)
    assert list(stats["bands"]) == RGB and stats["rms"] < 1e-3
    assert len(stats["bands"]["R"]["hist"]) == len(stats["bins"]) - 1
    # W1 and the percentiles come from a histogram that adds over batches: exact to its 5e-5 sub-bins.
    hist = lambda v: np.histogram(v, colour.CHROMA_FINE)[0]  # noqa: E731
    assert colour.wasserstein_hist(hist(np.zeros(10)), hist(np.full(10, 0.05))) == pytest.approx(0.05, abs=1e-4)
    assert colour.wasserstein_hist(hist(np.zeros(10)), hist(np.zeros(10))) == 0.0
    tinted = 0.5 + np.random.default_rng(4).uniform(-0.1, 0.1, (8, 3, 32, 32))
    stats, c = colour.chroma_stats(tinted, RGB), colour.valid_chroma(tinted)
    for i, band in enumerate(RGB):
        p1, p50, p99 = np.percentile(c[i], [1, 50, 99])
        got = stats["bands"][band]
        assert abs(got["p1"] - p1) < 3e-4 and abs(got["p50"] - p50) < 3e-4 and abs(got["p99"] - p99) < 3e-4
        assert got["std"] == pytest.approx(c[i].std(), rel=1e-9)


class _Noise(nn.Module):
    """Stands in for a U-Net: independent noise in each output channel, in the tanh range."""

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.tanh(0.3 * torch.randn(cond.shape[0], 3, *cond.shape[-2:]))


def test_luma_chroma_generator_makes_fine_texture_grey():
    torch.manual_seed(0)
    cond = torch.zeros(32, 1, 32, 32)
    raw = _Noise()(cond).numpy()
    wrapped = LumaChromaGenerator(_Noise(), "tanh", pool=4)(cond).numpy()
    k, c_raw = colour.coherence(raw, RGB)
    _, c_wrapped = colour.coherence(wrapped, RGB)
    assert colour.coherence_per_band(k, c_raw)["high"]["mean"] < 0.05
    assert colour.coherence_per_band(k, c_wrapped)["high"]["mean"] > 0.95
    assert wrapped.min() >= -1.0 and wrapped.max() <= 1.0
    # Luminance of the result is the net's first output (the chroma directions carry no luminance).
    torch.manual_seed(1)
    luma_in = _Noise()(cond)[:, :1]
    torch.manual_seed(1)
    out = LumaChromaGenerator(_Noise(), "tanh", pool=4)(cond)
    assert torch.allclose(luminance(out), luma_in * 0.9999, atol=2e-3)


def test_luma_chroma_generator_is_batch_independent():
    """Data parallelism needs each sample's output and gradient to be the same whatever batch it is in."""
    torch.manual_seed(3)
    g = LumaChromaGenerator(nn.Conv2d(4, 3, 3, padding=1), "tanh", pool=4)
    x = torch.randn(16, 4, 16, 16)
    whole = g(x)
    assert torch.equal(whole, torch.cat([g(x[:8]), g(x[8:])]))
    w = torch.randn_like(whole)
    (whole * w).sum().backward()
    grad_whole = g.net.weight.grad.clone()
    g.zero_grad()
    (g(x[:8]) * w[:8]).sum().backward()
    (g(x[8:]) * w[8:]).sum().backward()
    torch.testing.assert_close(g.net.weight.grad, grad_whole, rtol=1e-4, atol=1e-5)  # summation order only


def test_chroma_input_discriminator_sees_grey_as_zero_chroma():
    seen = {}

    class Probe(nn.Module):
        def forward(self, cond, x):
            seen["x"] = x
            return [x.mean()]

    grey = torch.rand(2, 1, 8, 8).repeat(1, 3, 1, 1)
    ChromaInputDiscriminator(Probe())(torch.zeros(2, 4, 8, 8), grey)
    assert seen["x"].shape == (2, 6, 8, 8)
    assert torch.equal(seen["x"][:, :3], grey) and seen["x"][:, 3:].abs().max() < 1e-3


def test_config_builds_the_wrappers_and_rejects_bad_values():
    cfg = load_config("crf-small", ["crf.colour=luma_chroma", "crf.d_chroma=true"])
    wl = get_workload(cfg)
    g, d = wl.build_generator(), wl.build_discriminator()
    assert isinstance(g, LumaChromaGenerator) and isinstance(d, ChromaInputDiscriminator)
    x = torch.randn(2, cfg.crf.in_channels, 32, 32)
    assert [o.shape[0] for o in d(x, g(x))] == [2] * cfg.crf.d_scales
    with pytest.raises(UserError, match="crf.colour: expected one of rgb, luma_chroma"):
        load_config("crf-small", ["crf.colour=grey"])
    with pytest.raises(UserError, match="crf.chroma_pool: 3 does not divide crf.size 32"):
        load_config("crf-small", ["crf.colour=luma_chroma", "crf.chroma_pool=3"])
    with pytest.raises(UserError, match="out_channels = 3"):
        load_config("crf-small", ["crf.d_chroma=true", "crf.out_channels=1"])


def test_evaluate_reports_coherence_and_chroma(tmp_path, real_sets):
    real, other = real_sets
    wl = get_workload(load_config("crf-small"))
    inputs = np.zeros((real.shape[0], 44, 32, 32), np.float32)
    summary = wl.evaluate(inputs, real, other, {}, tmp_path)
    assert summary["coloured_texture"] is False
    assert set(summary["coherence"]["real"]) == {"low", "mid", "high"}
    assert summary["chroma"]["rms"]["real"] > 0 and set(summary["chroma"]["w1"]) == set(RGB)
    assert (tmp_path / EVAL_COLOUR).stat().st_size > 1000
    saved = json.loads((tmp_path / EVAL_JSON).read_text())
    assert len(saved["coherence_curves"]["fake"]["R-G"]) == len(saved["k"]) == 16
    assert len(saved["chroma_distribution"]["fake"]["bands"]["B"]["hist"]) == len(colour.CHROMA_BINS) - 1
