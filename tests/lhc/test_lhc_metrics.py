"""The LHC metrics separate: the full chain plus an extra error of 0.3 x its resolution is flagged,
the full chain against an independent sample of itself is not (rule: hpcgan.workloads.lhc.metrics)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hpcgan.workloads.lhc import helix, synth as synth_lhc, synth_fastsim as synth_lhc_fastsim
from hpcgan.workloads.lhc import metrics

N = 20000


@pytest.fixture(scope="module")
def chain():
    """N particles, two independent passes of the full chain (simulation + fit) over the same particles."""
    det = helix.detector(10)
    particles = synth_lhc.draw_particles(np.random.default_rng(1), N, synth_lhc_fastsim._options({}))
    truth, ref, _ = synth_lhc_fastsim.full_chain(np.random.default_rng(2), particles, det)
    _, again, _ = synth_lhc_fastsim.full_chain(np.random.default_rng(3), particles, det)
    return truth, ref, again


def _smeared(truth: np.ndarray, ref: np.ndarray, tracks: np.ndarray, frac: float, seed: int) -> np.ndarray:
    """tracks + an independent Gaussian error of frac x the reference's 68 % width in the particle's bin."""
    found = ref[:, 5] > 0.5
    res = metrics.residuals(truth, ref)
    width = metrics.space.resolution_scale(truth).copy()
    for _, sel in metrics._bins(truth):
        if (sel & found).sum() >= 20:
            width[sel] = [metrics._width(res[sel & found, k]) for k in range(5)]
    out = tracks.copy()
    out[:, :5] += frac * width * np.random.default_rng(seed).standard_normal((len(truth), 5))
    return out


def test_independent_sample_of_the_chain_is_not_flagged(chain):
    truth, ref, again = chain
    m = metrics.compare(truth, ref, again, ref[:, 5], again[:, 5])
    print(metrics.format_table(m))
    assert not m["flags"]["flagged"], m["flags"]
    assert not m["flags"]["correlation"], m["correlation"]
    assert abs(m["two_sample"]["auc"] - 0.5) < m["two_sample"]["bound"] - 0.5
    for name, v in m["pooled"].items():
        assert abs(v["resolution_ratio"]["value"] - 1) < 0.04, name
    assert 0.85 < m["efficiency"]["ref"] < 0.97  # |eta| < 2 reaches past the barrel: tracks are lost


def test_extra_error_of_a_third_of_the_resolution_is_flagged(chain):
    truth, ref, again = chain
    fake = _smeared(truth, ref, again, 0.3, seed=5)
    m = metrics.compare(truth, ref, fake, ref[:, 5], fake[:, 5])
    print(metrics.format_table(m))
    assert m["flags"]["flagged"]
    assert len(m["flags"]["resolution"]) >= 3, m["flags"]  # sqrt(1.09) = 1.044 at ~1 % error: 3-6 sigma each
    assert m["two_sample"]["auc"] > m["two_sample"]["bound"], m["two_sample"]
    for name, v in m["pooled"].items():
        assert 1.02 < v["resolution_ratio"]["value"] < 1.08, name


def test_uncorrelated_smearing_is_flagged(chain):
    """Every parameter's residual drawn right, bin by bin, but independently of the others (what a
    smearing per parameter does): the widths and biases pass, the correlations and the classifier do not."""
    truth, ref, again = chain
    found = again[:, 5] > 0.5
    res = metrics.residuals(truth, again)
    rng = np.random.default_rng(8)
    for _, sel in metrics._bins(truth):
        idx = np.flatnonzero(sel & found)
        for k in range(5):  # a separate permutation per parameter within the bin: same marginals, no correlation
            res[idx, k] = res[rng.permutation(idx), k]
    fake = again.copy()
    fake[:, :5] = np.where(found[:, None], truth[:, :5] + res, again[:, :5])
    m = metrics.compare(truth, ref, fake, ref[:, 5], fake[:, 5])
    print(metrics.format_table(m))
    assert not m["flags"]["resolution"] and not m["flags"]["bias"], m["flags"]
    assert {"phi0-d0", "eta-z0"} <= set(m["flags"]["correlation"]), m["correlation"]
    assert m["correlation"]["phi0-d0"]["ref"] < -0.8 and abs(m["correlation"]["phi0-d0"]["gan"]) < 0.05
    assert m["two_sample"]["auc"] > m["two_sample"]["bound"] and m["flags"]["flagged"], m["two_sample"]


def test_lost_tracks_are_flagged(chain):
    truth, ref, again = chain
    fake = again.copy()
    lose = (np.abs(truth[:, 2]) > 1.5) & (np.random.default_rng(6).random(N) < 0.1)  # 10 % fewer tracks forward
    fake[lose] = 0.0
    m = metrics.compare(truth, ref, fake, ref[:, 5], fake[:, 5])
    assert m["flags"]["efficiency"] and m["flags"]["flagged"]


def test_paired_mode_distance(chain):
    """Hits -> track: the fit against itself is distance 0 and not flagged; + 0.3 sigma is at distance ~0.3."""
    truth, ref, _ = chain
    same = metrics.compare(truth, ref, ref.copy(), ref[:, 5], ref[:, 5], paired=True)
    assert not same["flags"]["flagged"]
    assert all(v["rms"] == 0 for v in same["per_track_distance"].values())
    fake = _smeared(truth, ref, ref, 0.3, seed=7)
    m = metrics.compare(truth, ref, fake, ref[:, 5], ref[:, 5], paired=True)
    assert m["flags"]["flagged"]
    for name, v in m["per_track_distance"].items():
        assert 0.25 < v["rms"] < 0.35, (name, v)
    assert set(metrics.headline(m)) >= {"resolution_ratio", "two_sample_auc", "per_track_distance_rms", "flagged"}


def test_auc_and_chi2_quantile():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 1, 300), rng.normal(0, 1, 200)
    brute = np.mean(a[:, None] > b[None, :]) + 0.5 * np.mean(a[:, None] == b[None, :])
    assert metrics.auc(a, b) == pytest.approx(brute, abs=1e-12)
    assert metrics.auc(np.ones(5), np.ones(7)) == pytest.approx(0.5)
    assert metrics.chi2_quantile(10, 1e-3) == pytest.approx(29.59, rel=0.01)
    assert metrics.chi2_quantile(2, 1e-3) == pytest.approx(-2 * math.log(1e-3), rel=0.03)
