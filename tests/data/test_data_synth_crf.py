"""Synthetic CRF generator: schema, documented ranges, spectral slope, block determinism, physics direction."""
import numpy as np
import pytest

from hpcgan.workloads.crf import synth as crf
from hpcgan.data.format import SYNTH_BLOCK
from hpcgan.errors import UserError


def _all(start, count, seed=0, **opts):
    xs, ys, ms = [], [], []
    for x, y, m in crf.generate(start, count, seed, **opts):
        xs.append(x), ys.append(y), ms.append(m)
    return np.concatenate(xs), np.concatenate(ys), {k: np.concatenate([m[k] for m in ms]) for k in ms[0]}


def test_schema_matches_reference_channel_order():
    s = crf.schema(size=(16, 24))
    assert s["input_shape"] == (44, 16, 24) and s["target_shape"] == (3, 16, 24)
    names = s["input_channels"]
    assert names[0] == "U_1000" and names[10] == "T_1000" and names[20] == "V_1000" and names[39] == "RH_200"
    assert names[40:] == ["scattering_angle", "TS", "lat", "lon"]
    assert crf.schema()["input_shape"] == (44, 256, 256)
    with pytest.raises(UserError, match="unknown option"):
        crf.schema(layers=3)


def test_documented_physical_ranges():
    x, y, m = _all(0, 60, seed=1, size=(16, 16))
    u, t, v, rh = (x[:, 10 * i:10 * (i + 1)] for i in range(4))
    assert x.dtype == np.float32 and y.dtype == np.float32 and np.isfinite(x).all()
    assert 0 <= rh.min() and rh.max() <= 1
    assert 0 <= y.min() and y.max() <= 1
    assert -80 < u.min() and u.max() < 100 and -60 < v.min() and v.max() < 60
    assert 170 < t.min() and t.max() < 330 and 240 < x[:, 41].min() and x[:, 41].max() < 330
    # lapse rate: every column colder aloft, the level means follow T ~ p^0.19
    tm = t.mean(axis=(0, 2, 3))
    assert np.all(np.diff(tm) < 0)
    np.testing.assert_allclose(tm / tm[0], (np.array(crf.PRESSURE_LEVELS_HPA) / 1000) ** crf.KAPPA_LAPSE, rtol=0.01)
    assert np.all((95 <= x[:, 40]) & (x[:, 40] <= 179))
    assert np.abs(x[:, 42]).max() <= 61 and np.abs(x[:, 43]).max() <= 180
    assert (m["tau"] >= 0).all() and 0.05 < m["cloud_fraction"].mean() < 0.95
    # the wind grows with height (shear) and adjacent levels are correlated as configured (rho = 0.8)
    assert u[:, -1].mean() > u[:, 0].mean()
    a, b = (t[:, 3] - t[:, 3].mean(axis=(1, 2), keepdims=True)), (t[:, 4] - t[:, 4].mean(axis=(1, 2), keepdims=True))
    assert 0.6 < np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.95


def _radial_slope(fields: np.ndarray, kmin: float, kmax: float) -> float:
    h, w = fields.shape[1:]
    power = (np.abs(np.fft.fft2(fields)) ** 2).mean(axis=0)
    k = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    sel = (k >= kmin) & (k <= kmax)
    return float(np.polyfit(np.log(k[sel]), np.log(power[sel]), 1)[0])


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_power_spectrum_slope_matches_configured_exponent(beta):
    x, _, _ = _all(0, 24, seed=2, size=(32, 32), beta=beta)
    fields = x[:, 20:30].reshape(-1, 32, 32).astype(np.float64)  # V anomalies (no deterministic trend)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    slope = _radial_slope(fields, 2 / 32, 0.45)
    assert abs(slope + beta) < 0.2, slope


def test_blocks_do_not_depend_on_how_the_range_is_split():
    n = SYNTH_BLOCK + 5
    whole = _all(0, n, seed=3, size=(4, 4))
    head = _all(0, 3, seed=3, size=(4, 4))
    tail = _all(SYNTH_BLOCK, 5, seed=3, size=(4, 4))
    np.testing.assert_array_equal(head[0], whole[0][:3])
    np.testing.assert_array_equal(tail[1], whole[1][SYNTH_BLOCK:])
    assert not np.array_equal(_all(0, 3, seed=4, size=(4, 4))[0], head[0])
    with pytest.raises(ValueError, match="multiple of SYNTH_BLOCK"):
        next(crf.generate(5, 3, 0))


def test_reflectance_two_stream_limits():
    mu0 = np.ones((1, 1))
    dark = crf.reflectance(np.zeros((1, 1)), mu0, np.zeros((3, 1, 1)))
    thick = crf.reflectance(np.full((1, 1), 1e4), mu0, np.zeros((3, 1, 1)))
    assert dark[2, 0, 0] > dark[1, 0, 0] > dark[0, 0, 0] > 0  # Rayleigh: blue sky is brighter
    assert thick.min() > 0.99
    low_sun = crf.reflectance(np.full((1, 1), 5.0), np.full((1, 1), 0.3), np.zeros((3, 1, 1)))
    assert (low_sun > crf.reflectance(np.full((1, 1), 5.0), mu0, np.zeros((3, 1, 1)))).all()
    bright_ground = crf.reflectance(np.full((1, 1), 2.0), mu0, np.full((3, 1, 1), 0.7))
    assert (bright_ground > crf.reflectance(np.full((1, 1), 2.0), mu0, np.zeros((3, 1, 1)))).all()


def test_targets_follow_humidity_but_keep_unresolved_texture():
    x, y, m = _all(0, 40, seed=5, size=(32, 32))
    rh_col = x[:, 30:40].mean(axis=1)
    corr = np.corrcoef(rh_col.ravel(), y[:, 0].ravel())[0, 1]
    assert corr > 0.5  # the coarse field is predictable from the inputs
    assert corr < 0.99  # the texture is not
