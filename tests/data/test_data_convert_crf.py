"""crf-npz converter: the reference imgs/ + metos/ layout round-trips; the NaN policy holds."""
import h5py
import numpy as np
import pytest

from hpcgan.cli.main import main
from hpcgan.workloads.crf.convert_npz import convert
from hpcgan.workloads.crf.synth import INPUT_CHANNELS, TARGET_CHANNELS
from hpcgan.errors import UserError

H, W = 6, 5


def _fixture(root, rng, stems=("epic_1b_20160101", "epic_1b_20160102", "epic_1b_20160103")):
    (root / "imgs").mkdir(parents=True)
    (root / "metos").mkdir()
    truth = {}
    for i, stem in enumerate(stems):
        refl = rng.random((3, H, W))
        meto = {v: rng.normal(loc, 1, (10, H, W)) for v, loc in (("U", 5), ("T", 260), ("V", 0), ("RH", 0.5))}
        meto["TS"] = rng.normal(290, 1, (H, W))
        extra = {"scattering_angle": rng.uniform(120, 170, (H, W)), "latitude": rng.uniform(-10, 10, (H, W)),
                 "longitude": rng.uniform(0, 20, (H, W))}
        imgs = dict(extra)
        if i == 1:  # one 3-channel array instead of three keys
            imgs["reflectance"] = np.moveaxis(refl, 0, -1)
        else:
            imgs.update({k: refl[c] for c, k in enumerate(("Reflectance_680", "Reflectance_551", "Reflectance_443"))})
        np.savez(root / "imgs" / f"{stem}.npz", **imgs)
        np.savez(root / "metos" / f"{stem}_Collocated_MERRA2.npz", **meto)
        x = np.concatenate([meto["U"], meto["T"], meto["V"], meto["RH"], extra["scattering_angle"][None],
                            meto["TS"][None], extra["latitude"][None], extra["longitude"][None]])
        truth[stem] = (x, refl)
    return truth


def test_round_trip_and_nan_policy(tmp_path):
    rng = np.random.default_rng(0)
    truth = _fixture(tmp_path / "src", rng)
    np.savez(tmp_path / "src" / "imgs" / "epic_1b_orphan.npz", x=np.zeros(1))  # no metos partner: skipped
    # NaNs: reflectance pixels (-> 0 + mask), a temperature pixel (-> channel mean), an all-NaN channel (drop)
    stem0, stem1, stem2 = sorted(truth)
    z = dict(np.load(tmp_path / "src" / "imgs" / f"{stem0}.npz"))
    z["Reflectance_551"][1, 2] = np.nan
    np.savez(tmp_path / "src" / "imgs" / f"{stem0}.npz", **z)
    z = dict(np.load(tmp_path / "src" / "metos" / f"{stem1}_Collocated_MERRA2.npz"))
    z["T"][3, 0, 0] = np.nan
    np.savez(tmp_path / "src" / "metos" / f"{stem1}_Collocated_MERRA2.npz", **z)
    z = dict(np.load(tmp_path / "src" / "metos" / f"{stem2}_Collocated_MERRA2.npz"))
    z["TS"][:] = np.nan
    np.savez(tmp_path / "src" / "metos" / f"{stem2}_Collocated_MERRA2.npz", **z)

    out = tmp_path / "crf.h5"
    assert main(["data", "convert", "crf-npz", str(tmp_path / "src"), "--out", str(out), "--backend", "local"]) == 0
    with h5py.File(out, "r") as f:
        x, y = f["inputs"][:], f["targets"][:]
        valid, filled = f["meta/valid"][:], f["meta/filled"][:]
        assert f["inputs"].chunks == (3, 44, H, W)  # small fields: whole samples grouped (3 candidate scenes)
    assert x.shape == (2, 44, H, W) and y.shape == (2, 3, H, W)
    x0, y0 = truth[stem0]
    np.testing.assert_allclose(x[0], x0, rtol=1e-6)
    assert y[0, 1, 1, 2] == 0 and valid[0, 1, 2] == 0 and valid[0].sum() == H * W - 1
    np.testing.assert_allclose(np.delete(y[0].ravel(), 1 * H * W + 1 * W + 2),
                               np.delete(y0.ravel(), 1 * H * W + 1 * W + 2), rtol=1e-6)
    x1, y1 = truth[stem1]
    np.testing.assert_allclose(y[1], y1, rtol=1e-6)
    t3 = x1[13].copy()
    assert x[1, 13, 0, 0] == pytest.approx(np.nanmean(np.where(np.arange(H * W).reshape(H, W) == 0, np.nan, t3)), rel=1e-6)
    assert list(filled) == [0, 1]
    from hpcgan.data.format import read_attrs
    a = read_attrs(out)
    assert a["input_channels"] == INPUT_CHANNELS and a["target_channels"] == TARGET_CHANNELS
    assert a["provenance"]["dropped"] == [f"{stem2}: input channel TS has no finite value"]


def test_bad_layouts(tmp_path, capsys):
    with pytest.raises(UserError, match="imgs: folder missing"):
        convert(str(tmp_path), str(tmp_path / "o.h5"))
    rng = np.random.default_rng(1)
    _fixture(tmp_path / "s", rng, stems=("a",))
    z = dict(np.load(tmp_path / "s" / "metos" / "a_Collocated_MERRA2.npz"))
    z["RH"] = z["RH"][:9]
    np.savez(tmp_path / "s" / "metos" / "a_Collocated_MERRA2.npz", **z)
    assert main(["data", "convert", "crf-npz", str(tmp_path / "s"), "--out", str(tmp_path / "o.h5"),
                 "--backend", "local"]) == 2
    err = capsys.readouterr().err
    assert "a_Collocated_MERRA2.npz: key 'RH' shape (9, 6, 5), expected (10, 6, 5)" in err
    assert not (tmp_path / "o.h5").exists()
