"""LHC workload: shapes, model-space round trips, evaluation, dataset checks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hpcgan.config import load_config
from hpcgan.workloads.lhc import helix, synth as synth_lhc
from hpcgan.errors import UserError
from hpcgan.workloads import get_workload
from hpcgan.workloads.lhc import evaluate as ev


@pytest.fixture(scope="module")
def data():
    return synth_lhc.make_tracks(np.random.default_rng(11), 600, helix.detector(10), synth_lhc._options({}))


def _workload(*overrides):
    return get_workload(load_config("lhc-small", list(overrides)))


def test_shapes_and_noise(data):
    inputs, targets, _ = data
    w = _workload("lhc.zero_init=false")  # zero-initialised output layers ignore the noise until trained
    cond, real = w.prepare(torch.from_numpy(inputs[:32]), torch.from_numpy(targets[:32]), torch.device("cpu"))
    assert cond.shape == (32, 4, 10) and real.shape == (32, 36)
    G, D = w.build_generator(), w.build_discriminator()
    torch.manual_seed(0)
    a = G(cond)
    b = G(cond)
    assert a.shape == real.shape and torch.isfinite(a).all()
    assert not torch.equal(a, b)  # noise is drawn inside G
    logits = D(cond, a)
    assert isinstance(logits, list) and len(logits) == 1 and logits[0].shape == (32, 1)
    fake_units = w.to_data_units(a.detach())
    assert fake_units.shape == (32, 35)
    # The generated points lie on the layers (x/r, y/r is a unit vector) and on the generated helix.
    pts = fake_units[:, 5:].reshape(32, 10, 3).double().numpy()
    assert np.allclose(np.hypot(pts[..., 0], pts[..., 1]), helix.detector(10).radius, rtol=1e-5)
    ref = helix.helix_points(fake_units[:, :5].double().numpy(), helix.detector(10).radius)
    assert np.allclose(pts, ref, atol=2e-2)


def test_gradients_reach_every_parameter(data):
    inputs, targets, _ = data
    w = _workload()
    cond, real = w.prepare(torch.from_numpy(inputs[:16]), torch.from_numpy(targets[:16]), torch.device("cpu"))
    G, D = w.build_generator(), w.build_discriminator()
    (D(cond, G(cond))[0].mean() + (G(cond) - real).abs().mean()).backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_normalisation_round_trips(data):
    inputs, targets, _ = data
    w = _workload()
    cond, real = w.prepare(torch.from_numpy(inputs), torch.from_numpy(targets), torch.device("cpu"))
    back = w.to_data_units(real).numpy()
    assert np.allclose(back, targets, rtol=1e-6, atol=2e-5)
    again = w.prepare(torch.from_numpy(inputs), torch.from_numpy(back), torch.device("cpu"))[1]
    assert torch.allclose(again, real, atol=1e-6)
    from hpcgan.workloads.lhc import space
    assert torch.allclose(space.inputs_to_data(cond, w.radii), torch.from_numpy(inputs), atol=1e-4)
    # Model space is O(1).
    assert real.abs().max() < 30 and cond.abs().max() < 5


def test_generator_helix_matches_numpy(data):
    from hpcgan.workloads.lhc import space
    _, targets, _ = data
    p = torch.from_numpy(targets[:, :5]).double()
    radii = torch.tensor(helix.detector(10).radius)
    pts = space.helix_points(p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4], radii, helix.B_FIELD)
    assert np.allclose(pts.numpy().reshape(len(p), -1), targets[:, 5:], atol=5e-4)


def test_evaluation_identical_is_zero_and_writes_plots(data, tmp_path):
    inputs, targets, meta = data
    w = _workload()
    summary = w.evaluate(inputs, targets, targets.copy(), meta, tmp_path)
    assert all(v["w1"] == 0 for v in summary["wasserstein1"].values())
    assert summary["w1_norm_mean_parameters"] == 0 and summary["w1_norm_mean_residuals"] == 0
    for name in (ev.FIG_PARAMS, ev.FIG_RESID, ev.FIG_RESOLUTION, ev.FIG_METRICS, ev.EVAL_JSON):
        assert (tmp_path / name).stat().st_size > 1000
    saved = json.loads((tmp_path / ev.EVAL_JSON).read_text())
    head = saved["headline"]  # the fit against itself: not flagged, zero per-track distance
    assert not head["flagged"] and all(v == 0 for v in head["per_track_distance_rms"].values())
    assert head["two_sample_auc"] <= head["two_sample_bound"]
    table = saved["resolution_vs_pt"]
    assert table["pT"]["conventional"] == table["pT"]["gan"] and table["pT"]["conventional"][0] > 0


def test_evaluation_detects_a_shift(data, tmp_path):
    inputs, targets, meta = data
    fake = targets.copy()
    fake[:, 3] += 0.1  # d0 shifted by 100 um
    s = ev.evaluate(inputs, targets, fake, meta, tmp_path, 10, verbose=False)
    w1 = s["wasserstein1"]
    assert w1["d0 [mm]"]["w1"] == pytest.approx(0.1, rel=1e-6)
    assert w1["eta"]["w1"] == 0 and w1["res d0 [um]"]["w1"] == pytest.approx(100, rel=1e-4)


def test_wasserstein_matches_sorted_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=1000), rng.normal(0.5, 1, size=1000)
    assert ev.wasserstein1(a, b) == pytest.approx(np.abs(np.sort(a) - np.sort(b)).mean(), rel=1e-12)
    assert ev.wasserstein1(a, a[:500]) < 0.1 and ev.wasserstein1(a, a) == 0


def test_bad_inputs_one_line_errors(data, tmp_path):
    inputs, targets, meta = data
    w = _workload()
    with pytest.raises(UserError, match=r"workload 'crf', expected 'lhc'") as e:
        w.check_dataset({"workload": "crf", "input_shape": (4, 10), "target_shape": (35,)}, "x.h5")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"x.h5: inputs have shape \(4, 8\).*lhc.n_layers=10") as e:
        w.check_dataset({"workload": "lhc", "input_shape": (4, 8), "target_shape": (29,)}, "x.h5")
    assert "\n" not in str(e.value)
    w.check_dataset({"workload": "lhc", "input_shape": (4, 10), "target_shape": (35,)}, "x.h5")
    with pytest.raises(UserError, match="generated tracks have shape"):
        w.evaluate(inputs, targets, targets[:, :10], meta, tmp_path)


def test_validation_sums_add_up_over_uneven_shares():
    """Sums over any split of the samples give the metrics of one pass (per-sample means, not per-batch)."""
    wl = get_workload(load_config("lhc-small"))
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(13, 36, generator=g), torch.randn(13, 36, generator=g)  # model space: 6 + 3 x 10
    whole = wl.validation_metrics(None, real, fake)
    totals: dict = {}
    for a, b in ((0, 1), (1, 8), (8, 13)):
        for k, v in wl.validation_sums(None, real[a:b], fake[a:b]).items():
            totals[k] = totals.get(k, 0.0) + v
    split = wl.validation_finish(totals, 13)
    assert split.keys() == whole.keys() and {"l1", "qpt_mae", "z0_mae_mm"} <= whole.keys()
    for k in whole:
        assert split[k] == pytest.approx(whole[k], rel=1e-12), k
