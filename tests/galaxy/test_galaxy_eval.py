"""Galaxy evaluation: PSNR/SSIM against known values, the baselines, the three failure measurements on tiny
hand-made data, the whole evaluation on a few synthetic stamps, and the workload's units."""
import json

import numpy as np
import pytest
import torch

from hpcgan.config import load_config
from hpcgan.workloads.galaxy import degrade as gd, synth as sg
from hpcgan.errors import UserError
from hpcgan.workloads import get_workload
from hpcgan.workloads.galaxy import failures, restore
from hpcgan.workloads.galaxy.workload import EVAL_FIGURE, EVAL_JSON, EVAL_TABLE, GalaxyWorkload

SMALL = ["workload=galaxy", "galaxy.size=32", "galaxy.widths=[4,8]", "galaxy.d_widths=[8,16]", "data.normalize=false"]


def workload(*extra):
    wl = get_workload(load_config(None, SMALL + list(extra)))
    assert isinstance(wl, GalaxyWorkload) and wl.name == "galaxy"
    return wl


def test_psnr_and_ssim_known_values():
    a = np.full((16, 16), 0.5)
    assert restore.psnr(a, a + 0.1) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert restore.psnr(a, a + 0.01) == pytest.approx(40.0)
    rng = np.random.default_rng(0)
    t = rng.random((16, 16))
    assert restore.ssim(t, t) == pytest.approx(1.0)
    # constant images: only the luminance term, (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = (0.01 L)^2
    c1 = 1e-4
    assert restore.ssim(a, np.full((16, 16), 0.6)) == pytest.approx((0.6 + c1) / (0.61 + c1), rel=1e-6)
    assert restore.ssim(t, t + 0.3 * rng.standard_normal(t.shape)) < 0.7


def test_stretch_round_trip_and_workload_units():
    x = np.array([-1.0, 0.0, 0.05, 1.0, 20.0])
    y = restore.stretch(x, 0.4, 50.0)
    assert y[1] == 0 and np.all(np.diff(y) > 0) and restore.stretch(np.array([80.0]), 0.4, 50.0)[0] == 1.0
    np.testing.assert_allclose(restore.unstretch(y, 0.4, 50.0), x, rtol=1e-9, atol=1e-12)
    wl = workload()
    t = torch.linspace(-0.5, 30.0, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    cond, real = wl.prepare(t, t, torch.device("cpu"))
    np.testing.assert_allclose(real.numpy(), restore.stretch(t.numpy(), 0.4, 50.0), atol=1e-6)
    torch.testing.assert_close(wl.to_data_units(real), t, rtol=1e-4, atol=1e-5)
    fake = wl.build_generator()(cond)
    assert fake.shape == t.shape and len(wl.build_discriminator()(cond, fake)) == 1
    m = wl.validation_metrics(cond, real, real + 0.01)
    assert m["psnr"] == pytest.approx(40.0, rel=1e-3) and m["l1"] == pytest.approx(0.01, rel=1e-3)


def test_dataset_checks():
    wl = workload()
    wl.check_dataset({"workload": "galaxy", "input_shape": (3, 32, 32), "target_shape": (3, 32, 32)}, "x.h5")
    with pytest.raises(UserError, match="x.h5: input shape"):
        wl.check_dataset({"workload": "galaxy", "input_shape": (3, 64, 64)}, "x.h5")
    with pytest.raises(UserError, match="data.normalize=false"):
        workload("data.normalize=true").check_dataset({"workload": "galaxy"}, "x.h5")
    with pytest.raises(UserError, match="galaxy.size"):
        load_config(None, ["workload=galaxy", "galaxy.size=30"])


def test_baselines_sharpen_a_blurred_star():
    clean = np.zeros((1, 3, 33, 33))
    clean[0, :, 16, 16] = 100.0
    k = gd.psf_kernel(1.4 / gd.PIXEL_SCALE)
    blurred = gd.blur(clean, k)
    meta = {"psf_fwhm": [1.4], "pixel_scale": [gd.PIXEL_SCALE], "psf_beta": [0.0], "sky": [gd.sky_per_pixel()]}
    out = restore.baselines(blurred, meta, 30, 0.001)
    for name, img in out.items():
        assert img[0, 1, 16, 16] > 2 * blurred[0, 1, 16, 16], name  # the peak comes back
        assert img[0, 1].sum() == pytest.approx(100.0, rel=0.05), name  # flux kept


def _meta(n, h, **over):
    m = {"kind": np.zeros(n, np.int8), "feature": np.zeros(n, np.int8), "feature_map": np.zeros((n, h, h)),
         "noise_sigma": np.full((n, 3), 0.1), "psf_fwhm": np.full(n, 1.4), "pixel_scale": np.full(n, gd.PIXEL_SCALE),
         "redshift": np.full(n, np.nan)}
    m.update(over)
    return m


def test_hallucination_measures_invented_flux():
    n, h = 4, 40
    truth = np.zeros((n, 3, h, h))
    meta = _meta(n, h, kind=np.array([1, 1, 2, 2], np.int8))
    truth[2:, :, 20, 20] = 50.0  # lone stars
    blob = np.zeros_like(truth)
    blob[:, :, 2:4, 2:4] = 1.0  # 4 nmgy invented beyond 3 FWHM (14.5 pixels) of the star
    res = failures.hallucination(truth, {"exact": truth, "blob": truth + blob}, meta)
    assert res["empty"]["n"] == 2 and res["star"]["n"] == 2
    assert res["empty"]["exact"]["invented_flux_nmgy"] == 0 and res["star"]["exact"]["invented_flux_nmgy"] == 0
    assert res["empty"]["blob"]["invented_flux_nmgy"] == pytest.approx(4.0)
    assert res["empty"]["blob"]["invented_flux_sigma"] == pytest.approx(4.0 / (0.1 * h))
    assert res["empty"]["blob"]["peak_sigma"] == pytest.approx(10.0)
    assert res["star"]["blob"]["invented_flux_nmgy"] == pytest.approx(4.0)
    assert res["star"]["blob"]["flux_ratio"] == pytest.approx(54.0 / 50.0)
    assert failures.hallucination(truth, {"x": truth}, _meta(n, h)) == {}  # no such stamps, no numbers


def test_feature_recovery_is_one_with_and_zero_without():
    n, h = 3, 24
    base = np.zeros((n, 3, h, h))
    base[:, :, 8:16, 8:16] = 1.0
    fmap = np.zeros((n, h, h))
    fmap[:, 16:20, 16:20] = 0.5
    truth = base.copy()
    truth[:, 1] += fmap
    meta = _meta(n, h, feature=np.array([2, 2, 1], np.int8), feature_map=fmap)
    res = failures.feature_recovery(truth, {"with": truth, "without": base, "half": base + 0.5 * (truth - base)},
                                    meta, {"tidal": False, "companion": True})
    assert res["tidal"]["n"] == 2 and res["tidal"]["in_training"] is False and res["companion"]["in_training"] is True
    assert res["tidal"]["with"]["recovery"] == pytest.approx(1.0)
    assert res["tidal"]["without"]["recovery"] == pytest.approx(0.0)
    assert res["tidal"]["half"]["recovery"] == pytest.approx(0.5)


def test_redshift_shift_bins_and_training_range():
    z = np.array([0.02, 0.05, 0.07, 0.09, 0.11, 0.12, np.nan])  # bin edges 0.02, 0.04, ..., 0.12
    psnr = {"gan": np.array([20, 30, 30, 30, 22, 20, np.nan]), "rl": np.full(7, 25.0)}
    res = failures.redshift_shift(psnr, _meta(7, 4, redshift=z), (0.035, 0.085), bins=5)
    assert [b["n"] for b in res["bins"]] == [1, 1, 1, 1, 2]  # NaN (no galaxy) left out
    assert [b["in_training_range"] for b in res["bins"]] == [False, True, True, False, False]
    assert res["inside"]["n"] == 2 and res["inside"]["gan"] == pytest.approx(30.0)
    assert res["outside"]["gan"] == pytest.approx(23.0) and res["outside"]["rl"] == 25.0
    assert failures.redshift_shift(psnr, _meta(7, 4), None) == {}


def test_evaluate_writes_table_summary_and_figure(tmp_path):
    from hpcgan.data.format import DatasetWriter

    opts = dict(size=(32, 32), z_range=(0.1, 0.2), p_empty=0.2, p_star=0.2, p_tidal=0.4, p_companion=0.3)
    blocks = list(sg.generate(0, 12, 4, **opts))
    x, y, m = blocks[0]
    sch = sg.schema(**opts)
    train = tmp_path / "train.h5"  # only its provenance is read: which classes and redshifts training saw
    with DatasetWriter(train, "galaxy", len(x), sch["input_shape"], sch["target_shape"], sch["input_channels"],
                       sch["target_channels"], sch["meta_spec"],
                       provenance={"generator": "hpcgan.workloads.galaxy.synth",
                                   "options": {"p_tidal": 0, "z_range": [0.1, 0.15]}}) as w:
        w.write(x, y, m)
    wl = workload(f"data.path={train}")
    fake = y + 0.01 * np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    s = wl.evaluate(x, y, fake, m, tmp_path / "ev")
    for name in (EVAL_JSON, EVAL_TABLE, EVAL_FIGURE):
        assert (tmp_path / "ev" / name).stat().st_size > 500
    assert s["n_galaxies"] == int((m["kind"] == 0).sum()) and set(s["quality"]) == {"gan", "richardson_lucy",
                                                                                      "wiener", "input"}
    assert s["gan_beats_richardson_lucy_psnr"] and s["quality"]["gan"]["psnr"]["mean"] > 30
    assert s["quality"]["input"]["psnr"]["mean"] < s["quality"]["gan"]["psnr"]["mean"]
    assert s["redshift_shift"]["training_z_range"] == [0.1, 0.15]
    if "tidal" in s["rare_features"]:
        assert s["rare_features"]["tidal"]["in_training"] is False
    table = (tmp_path / "ev" / EVAL_TABLE).read_text()
    assert "| gan |" in table and "PSNR r" in table and "against redshift" in table
    assert json.loads((tmp_path / "ev" / EVAL_JSON).read_text())["quality"] == s["quality"]
    with pytest.raises(UserError, match="meta/feature_map"):
        wl.evaluate(x, y, fake, {k: v for k, v in m.items() if k != "feature_map"}, tmp_path / "ev2")
