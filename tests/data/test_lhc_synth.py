"""The synthetic tracker and the conventional helix fit."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hpcgan.workloads.lhc import helix, synth as synth_lhc
from hpcgan.errors import UserError


def _noiseless(det: helix.Detector) -> helix.Detector:
    tiny = np.full(det.n_layers, 1e-9)
    return dataclasses.replace(det, sigma_rphi=tiny, sigma_z=tiny, x_over_x0=np.zeros(det.n_layers), efficiency=1.0)


def _wrap(a):
    return np.angle(np.exp(1j * a))


def test_fit_recovers_noiseless_helices():
    det = _noiseless(helix.detector(10))
    hits, mask, truth, _ = synth_lhc.simulate(np.random.default_rng(1), 500, det, synth_lhc._options({}))
    keep = mask.sum(1) >= 5
    params, points, ok = helix.fit_tracks(hits[keep], mask[keep], det)
    assert ok.all() and keep.mean() > 0.95
    d = params - truth[keep]
    d[:, 1] = _wrap(d[:, 1])
    assert np.abs(d[:, 0] / truth[keep][:, 0]).max() < 1e-7  # q/pT, relative
    assert np.abs(d[:, 1]).max() < 1e-9 and np.abs(d[:, 2]).max() < 1e-9
    assert np.abs(d[:, 3]).max() < 1e-6 and np.abs(d[:, 4]).max() < 1e-6  # mm
    m = mask[keep]
    assert np.abs((points - hits[keep])[m]).max() < 1e-6  # fitted points go through the hits


def test_straight_track_limit_is_exact():
    # q/pT -> 0: helix_points and the fit stay finite and exact (no 1/kappa blow-up).
    det = helix.detector(10)
    params = np.array([[1e-9, 0.3, 0.5, 0.01, 2.0]])
    pts = helix.helix_points(params, det.radius)
    direction = np.array([np.cos(0.3), np.sin(0.3)])
    normal = np.array([-np.sin(0.3), np.cos(0.3)])
    assert np.allclose(pts[0, :, :2] @ normal, 0.01, atol=1e-6)  # all points on the line at distance d0
    s = pts[0, :, :2] @ direction
    assert np.allclose(pts[0, :, 2], 2.0 + s * np.sinh(0.5), atol=1e-6)
    fit, _, ok = helix.fit_tracks(pts, np.ones((1, 10), bool), _noiseless(det))
    assert ok[0] and np.allclose(fit[0, 1:], params[0, 1:], atol=1e-7) and abs(fit[0, 0]) < 1e-6


def test_resolution_scale_on_smeared_hits():
    """Measurement-dominated (no material): sigma(d0) ~ inner-layer resolution, sigma(q/pT) ~ sagitta formula."""
    det = helix.detector(10)
    det = dataclasses.replace(det, x_over_x0=np.zeros(10), efficiency=1.0)
    opts = synth_lhc._options({"pt_min": 20.0, "pt_max": 50.0})
    hits, mask, truth, _ = synth_lhc.simulate(np.random.default_rng(2), 3000, det, opts)
    params, _, ok = helix.fit_tracks(hits, mask, det)
    d = (params - truth)[ok]
    sig_qpt, sig_d0 = d[:, 0].std(), d[:, 3].std()
    # Gluckstern: sigma(kappa) = sigma / L^2 * sqrt(720 / (N + 4)) for N equal, equally spaced points;
    # here unequal spacing and errors: expect the same order (within a factor 3).
    sigma_k = 0.025 / 1000.0 ** 2 * np.sqrt(720 / 14)
    expected_qpt = sigma_k / (helix.C_LIGHT * det.bfield)
    assert expected_qpt / 3 < sig_qpt < expected_qpt * 3, (sig_qpt, expected_qpt)
    assert 0.005 < sig_d0 < 0.03, sig_d0  # 10 um pixels at 32 and 72 mm -> ~10-20 um
    assert abs(d[:, 0].mean()) < 4 * sig_qpt / np.sqrt(len(d)) + 1e-6  # unbiased


def test_vectorised_equals_per_track():
    det = helix.detector(10)
    inputs, _, _ = synth_lhc.make_tracks(np.random.default_rng(3), 200, det, synth_lhc._options({}))
    hits = inputs[:, :3].transpose(0, 2, 1).astype(np.float64)
    mask = inputs[:, 3] > 0.5
    mask[0, :] = False
    mask[0, :2] = True  # < 3 hits: not fitted by either
    pv, xv, okv = helix.fit_tracks(hits, mask, det)
    pl, xl, okl = helix.fit_tracks_loop(hits, mask, det)
    assert (okv == okl).all() and not okv[0] and okv[1:].all()
    assert np.allclose(pv, pl, rtol=1e-9, atol=1e-9) and np.allclose(xv, xl, rtol=1e-9, atol=1e-8)


def test_generator_layout_ranges_and_determinism():
    sc = synth_lhc.schema(layers=10)
    assert sc["input_shape"] == (4, 10) and sc["target_shape"] == (35,)
    assert sc["input_channels"] == ["x", "y", "z", "mask"] and sc["target_channels"][:5] == list(helix.PARAM_NAMES)
    blocks = list(synth_lhc.generate(0, 1500, seed=7))
    assert [len(b[0]) for b in blocks] == [1024, 476]
    x = np.concatenate([b[0] for b in blocks])
    y = np.concatenate([b[1] for b in blocks])
    truth = np.concatenate([b[2]["true_params"] for b in blocks])
    charge = np.concatenate([b[2]["charge"] for b in blocks])
    assert x.dtype == np.float32 and y.dtype == np.float32 and np.isfinite(x).all() and np.isfinite(y).all()
    mask = x[:, 3]
    assert set(np.unique(mask)) <= {0.0, 1.0} and (mask.sum(1) >= 5).all()
    assert 0.9 < mask.mean() < 0.995  # 3 % inefficiency + acceptance
    r = np.hypot(x[:, 0], x[:, 1])
    assert np.allclose(r[mask > 0], np.broadcast_to(helix.detector(10).radius, r.shape)[mask > 0], rtol=1e-5)
    assert (x[:, :3][np.broadcast_to(mask[:, None] == 0, x[:, :3].shape)] == 0).all()
    pt = 1 / np.abs(truth[:, 0])
    assert pt.min() >= 0.5 - 1e-4 and pt.max() <= 100 + 1e-3
    assert np.abs(truth[:, 2]).max() <= 1.0 + 1e-6 and set(np.unique(charge)) == {-1.0, 1.0}
    assert np.array_equal(np.sign(truth[:, 0]), charge)
    # Falling spectrum dN/dpT ~ pT^-3: fraction above 1 GeV = (1^-2 - 100^-2) / (0.5^-2 - 100^-2) ~ 0.25.
    assert 0.21 < (pt > 1).mean() < 0.29
    # The same block from a later start (what another rank computes) is identical.
    again = next(synth_lhc.generate(1024, 476, seed=7))
    assert np.array_equal(again[0], x[1024:]) and np.array_equal(again[1], y[1024:])


def test_other_layer_counts_and_bad_options():
    sc = synth_lhc.schema(layers=6)
    x, y, _ = next(synth_lhc.generate(0, 64, seed=1, layers=6))
    assert x.shape == (64, 4, 6) and y.shape == (64, 5 + 18) and sc["target_shape"] == (23,)
    with pytest.raises(UserError, match="layers"):
        synth_lhc.schema(layers=2)
    with pytest.raises(UserError, match="unknown option 'colour'"):
        synth_lhc.schema(colour=3)
    with pytest.raises(UserError, match="multiple of 1024"):
        next(synth_lhc.generate(100, 10, seed=1))
    with pytest.raises(UserError, match=r"expected hits \(N, 10, 3\)"):
        helix.fit_tracks(np.zeros((2, 9, 3)), np.ones((2, 9), bool), helix.detector(10))
