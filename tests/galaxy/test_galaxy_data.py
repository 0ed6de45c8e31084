"""Galaxy data: the synthetic generator's flux, PSF width, noise level and redshift scaling measured back from
generated stamps; the FITS converter on small files written here."""
import numpy as np
import pytest
from astropy.io import fits

from hpcgan.workloads.galaxy import convert_fits as convert_galaxy, degrade as gd, synth as sg
from hpcgan.data.format import open_read, read_attrs
from hpcgan.errors import UserError

QUIET = dict(size=(48, 48), star_density=0.0, neighbour_density=0.0, p_companion=0.0, p_tidal=0.0)


def stamps(n, seed=0, **opts):
    """n stamps as float64 arrays and their meta, quiet field (no neighbours, stars or features) by default."""
    blocks = list(sg.generate(0, n, seed, **{**QUIET, **opts}))
    return (np.concatenate([b[0] for b in blocks]).astype(np.float64),
            np.concatenate([b[1] for b in blocks]).astype(np.float64),
            {k: np.concatenate([b[2][k] for b in blocks]) for k in blocks[0][2]})


def second_moment(img, radius):
    """Mean of x^2 + y^2 about the centroid (pixels^2) inside a circle around the peak."""
    cy, cx = np.unravel_index(np.argmax(img), img.shape)
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    w = img * (np.hypot(yy - cy, xx - cx) <= radius)
    my, mx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
    return float((w * ((yy - my) ** 2 + (xx - mx) ** 2)).sum() / w.sum())


def test_schema_and_options():
    s = sg.schema(size=(32, 40))
    assert s["input_shape"] == (3, 32, 40) and s["target_channels"] == ["g", "r", "i"]
    assert set(s["meta_spec"]) == set(gd.meta_spec(1, 1)) and s["meta_spec"]["feature_map"][0] == (32, 40)
    assert sg.schema()["input_shape"] == (3, 424, 424)  # the paper's stamps
    assert sg.options()["psf_fwhm"] == (1.4, 1.4) and sg.options()["noise_factor"] == (1.2, 1.2)
    for bad, msg in (({"layers": 3}, "unknown option"), ({"psf_fwhm": [2, 1]}, "psf_fwhm"),
                     ({"p_empty": 0.7, "p_star": 0.6}, "exceeds 1"), ({"psf": "airy"}, "psf")):
        with pytest.raises(UserError, match=msg):
            sg.options(**bad)


def test_lone_star_flux_and_psf_width_recovered():
    x, y, m = stamps(6, p_star=1.0, star_flux=(3000.0, 3000.0), psf_fwhm=2.0)
    assert (m["kind"] == gd.KINDS.index("star")).all()
    np.testing.assert_allclose(y.sum(axis=(2, 3)), m["flux"], rtol=0.01)  # all the star's light is in the stamp
    np.testing.assert_allclose(m["flux"][:, 1], 3000.0, rtol=1e-6)
    # Convolution adds second moments: input - target = the kernel's 2 sigma^2 (pixels^2).
    sigma_pix = 2.0 / gd.PIXEL_SCALE / gd.FWHM_PER_SIGMA
    added = [second_moment(x[i, 1], 16) - second_moment(y[i, 1], 16) for i in range(len(x))]
    np.testing.assert_allclose(np.mean(added), 2 * sigma_pix ** 2, rtol=0.1)
    assert np.allclose(m["psf_fwhm"], 2.0) and (m["psf_beta"] == 0).all()


@pytest.mark.parametrize("factor", [1.2, 2.5])
def test_noise_level_recovered_on_empty_sky(factor):
    x, y, m = stamps(4, p_empty=1.0, noise_factor=factor)
    assert (y == 0).all() and np.isnan(m["redshift"]).all()
    measured = x.std(axis=(0, 2, 3))
    np.testing.assert_allclose(measured, m["noise_sigma"][0], rtol=0.05)
    np.testing.assert_allclose(m["noise_sigma"][0], factor * gd.original_sky_noise(), rtol=1e-5)
    assert abs(x.mean()) < 0.1 * measured.min()  # sky subtracted


def test_redshift_sets_apparent_size_and_brightness():
    near = stamps(8, seed=1, z_range=(0.06, 0.06), size=(128, 128))  # large enough to hold the whole galaxy
    far = stamps(8, seed=1, z_range=(0.12, 0.12), size=(128, 128))  # the same galaxies, twice as far
    ratio_flux = far[2]["flux"][:, 1].sum() / near[2]["flux"][:, 1].sum()
    expect = (sg.luminosity_distance_mpc(0.06) / sg.luminosity_distance_mpc(0.12)) ** 2
    assert ratio_flux == pytest.approx(expect, rel=0.05)
    size = [np.mean([second_moment(t[1][i, 1], 40) for i in range(8)]) for t in (near, far)]
    expect_size = (sg.angular_size_arcsec(1.0, 0.12) / sg.angular_size_arcsec(1.0, 0.06)) ** 2
    assert 0.5 * expect_size < size[1] / size[0] < 1.0  # smaller; the native PSF floors the size
    # bulges are redder than disks: g/r of a bulge-dominated colour is below a disk's
    assert sg.colour_factors(*sg.COLOURS["bulge"])[0] < sg.colour_factors(*sg.COLOURS["disk"])[0]


def test_blocks_are_deterministic_and_features_flagged():
    a = stamps(3, seed=5, p_tidal=0.5, p_companion=0.3)
    b = stamps(5, seed=5, p_tidal=0.5, p_companion=0.3)
    np.testing.assert_array_equal(a[0], b[0][:3])
    x, y, m = stamps(12, seed=3, p_tidal=0.3, p_companion=0.3)
    has = m["feature"] > 0
    assert has.any() and (~has).any()
    assert (m["feature_map"][has].sum(axis=(1, 2)) > 0).all() and (m["feature_map"][~has] == 0).all()
    assert (y[:, 1] >= m["feature_map"] - 1e-4).all()  # the feature is part of the truth
    with pytest.raises(ValueError):
        next(sg.generate(1, 2, 0, **QUIET))  # ranges start on a block boundary


# --- converter --------------------------------------------------------------------

def write_cutout(folder, name, shape, rng, nested=True, bands="gri", redshift=None, sigma=0.03):
    d = folder / name if nested else folder
    d.mkdir(parents=True, exist_ok=True)
    images = {}
    for b in bands:
        img = rng.normal(0, sigma, shape)
        img[shape[0] // 2, shape[1] // 2] += 40.0
        hdu = fits.PrimaryHDU(img.astype(np.float32))
        if redshift is not None:
            hdu.header["REDSHIFT"] = redshift
        hdu.writeto(d / f"{name}-{b}.fits")
        images[b] = img
    return images


def test_convert_fits_cutouts(tmp_path, capsys):
    rng = np.random.default_rng(0)
    src = tmp_path / "fits"
    a = write_cutout(src, "a", (70, 72), rng, redshift=0.015)
    write_cutout(src, "b", (64, 64), rng, nested=False)
    write_cutout(src, "c", (64, 64), rng, bands="gr")  # a band missing: skipped
    write_cutout(src, "d", (40, 40), rng)  # too small: dropped
    out = convert_galaxy.convert(str(src), str(tmp_path / "g.h5"), size=64, noise_factor=2.0, psf_fwhm=1.4)
    attrs = read_attrs(out)
    assert attrs["n"] == 2 and attrs["workload"] == "galaxy" and attrs["input_shape"] == (3, 64, 64)
    assert "d: dropped" in capsys.readouterr().err and len(attrs["provenance"]["dropped"]) == 1
    with open_read(out) as f:
        x, y = f["inputs"][:], f["targets"][:]
        z, sigma, fwhm = f["meta/redshift"][:], f["meta/noise_sigma"][:], f["meta/psf_fwhm"][:]
    np.testing.assert_allclose(y[0, 0], a["g"][3:67, 4:68], atol=1e-6)  # central crop, unchanged
    assert z[0] == pytest.approx(0.015) and np.isnan(z[1]) and np.allclose(fwhm, 1.4)
    np.testing.assert_allclose(sigma, 2.0 * 0.03, rtol=0.1)
    np.testing.assert_allclose(gd.robust_sigma(x), sigma, rtol=0.1)  # the noise asked for is the noise there
    assert x[0, 1].max() < 0.5 * y[0, 1].max()  # blurred: the point source spreads
    np.testing.assert_allclose(x.sum(axis=(2, 3)), y.sum(axis=(2, 3)), rtol=0.1, atol=3.0)  # flux kept


def test_convert_errors(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        convert_galaxy.convert(str(tmp_path / "none"), str(tmp_path / "o.h5"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no cutout"):
        convert_galaxy.convert(str(tmp_path / "empty"), str(tmp_path / "o.h5"))
    bad = tmp_path / "bad" / "x"
    bad.mkdir(parents=True)
    for b in "gri":
        (bad / f"x-{b}.fits").write_text("not fits")
    with pytest.raises(UserError, match=r"x-[gri]\.fits: cannot read as FITS"):
        convert_galaxy.convert(str(tmp_path / "bad"), str(tmp_path / "o.h5"))
    with pytest.raises(UserError, match="unknown option"):
        convert_galaxy.convert(str(tmp_path / "bad"), str(tmp_path / "o.h5"), fwhm=2)
