"""Radially averaged power spectrum against fields whose spectrum is known analytically."""
import numpy as np
import pytest

from hpcgan.workloads.crf import spectrum


def power_law_field(n: int, beta: float, rng: np.random.Generator, count: int = 1, shape=None) -> np.ndarray:
    """Periodic Gaussian random fields with P(k) ~ k^-beta: white noise filtered by k^(-beta/2) in Fourier space."""
    h, w = shape or (n, n)
    white = rng.standard_normal((count, h, w))
    kk = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2) * min(h, w)
    filt = np.zeros_like(kk)
    filt[kk > 0] = kk[kk > 0] ** (-beta / 2)
    return np.real(np.fft.ifft2(np.fft.fft2(white) * filt))


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_power_law_slope_recovered(beta):
    rng = np.random.default_rng(7)
    k, p = spectrum.radial_power_spectrum(power_law_field(128, beta, rng, count=8))
    assert k[0] == 1 and k[-1] == 64 and p.shape == (8, 64)
    got = spectrum.fit_slope(k, p.mean(0), kmin=2, kmax=50)
    assert abs(got - beta) < 0.08, (beta, got)


def test_power_law_slope_on_non_square_field():
    rng = np.random.default_rng(3)
    k, p = spectrum.radial_power_spectrum(power_law_field(0, 2.5, rng, count=6, shape=(96, 128)))
    assert k[-1] == 48
    assert abs(spectrum.fit_slope(k, p.mean(0), kmin=2, kmax=40) - 2.5) < 0.1


def test_white_noise_is_flat_at_its_variance():
    rng = np.random.default_rng(0)
    sigma = 0.3
    # The Hann taper leaves fewer independent values per field than pixels: average more fields.
    k, p = spectrum.radial_power_spectrum(rng.normal(5.0, sigma, size=(64, 64, 64)))
    p = p.mean(0)
    np.testing.assert_allclose(p[4:], sigma ** 2, rtol=0.1)
    assert abs(spectrum.fit_slope(k, p)) < 0.1


def test_sinusoid_puts_its_power_in_the_window_main_lobe():
    n, k0 = 64, 9
    x = np.arange(n)
    field = 3.0 + np.cos(2 * np.pi * k0 * x / n)[None, :] * np.ones((n, 1))
    k, p = spectrum.radial_power_spectrum(field)
    assert int(k[np.argmax(p)]) == k0
    # Hann's transform is nonzero only at 0 and +-1 bin: the power lies in k0 - 1 .. k0 + 1 and nowhere else.
    lobe = np.abs(k - k0) <= 1
    assert p[~lobe].max() < 1e-20 * p.max() + 1e-20
    # Parseval with the taper's normalisation: the modes hold the window-weighted variance (1/2) times H*W.
    counts = np.bincount(np.rint(np.sqrt(np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2) * n)
                         .astype(int).ravel())[1:n // 2 + 1]
    np.testing.assert_allclose((p * counts).sum(), 0.5 * n * n, rtol=1e-10)


def test_spectral_distance_zero_for_equal_and_negative_for_blur():
    rng = np.random.default_rng(1)
    real = power_law_field(64, 2.0, rng, count=4)
    k, p_real = spectrum.radial_power_spectrum(real)
    same = spectrum.spectral_distance(k, p_real.mean(0), p_real.mean(0))
    assert all(v["abs"] == 0.0 and v["log_ratio"] == 0.0 for v in same.values())
    # 3x3 periodic box blur: transfer function ~1 at low k, small near Nyquist.
    blur = sum(np.roll(np.roll(real, dy, -2), dx, -1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    _, p_blur = spectrum.radial_power_spectrum(blur)
    d = spectrum.spectral_distance(k, p_blur.mean(0), p_real.mean(0))
    assert d["high"]["log_ratio"] < -1.0
    assert d["low"]["abs"] < 0.05
    assert d["high"]["abs"] > d["mid"]["abs"] > d["low"]["abs"]


def test_bands_partition_k():
    k = np.arange(1, 33, dtype=float)
    masks = spectrum.band_masks(k)
    total = sum(m.astype(int) for m in masks.values())
    assert (total == 1).all()
    assert k[masks["low"]].max() == 4 and k[masks["high"]].min() == 17


def test_grayscale_weights_and_shape():
    rgb = np.zeros((2, 3, 8, 8))
    rgb[:, 1] = 1.0
    g = spectrum.grayscale(rgb)
    assert g.shape == (2, 8, 8)
    np.testing.assert_allclose(g, 0.5870)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        spectrum.radial_power_spectrum(np.zeros(10))
    with pytest.raises(ValueError):
        spectrum.band_masks(np.arange(1, 3, dtype=float))


def test_large_scale_ramp_leaves_the_high_band_slope():
    """A non-periodic field (a periodic k^-4 field plus a ramp across the image) seen by the DFT as periodic
    has a jump at the edges; untapered, its k^-2 leakage flattens the high band to a slope of about 2.3."""
    n = 64
    rng = np.random.default_rng(5)
    field = power_law_field(n, 4.0, rng, count=8)
    field /= field.std()
    y, x = np.mgrid[0:n, 0:n] / n
    k, p_periodic = spectrum.radial_power_spectrum(field)
    _, p_ramp = spectrum.radial_power_spectrum(field + 3.0 * (x + 0.5 * y))
    high = 0.5 * k.max()
    periodic = spectrum.fit_slope(k, p_periodic.mean(0), kmin=high)
    ramp = spectrum.fit_slope(k, p_ramp.mean(0), kmin=high)
    assert abs(periodic - 4.0) < 0.15, periodic
    assert abs(ramp - periodic) < 0.1, (ramp, periodic)


def test_masked_pixels_do_not_change_the_spectrum():
    rng = np.random.default_rng(2)
    field = power_law_field(32, 2.0, rng, count=4)
    valid = np.ones(field.shape, bool)
    valid[:, 5:9, 10:20] = False
    valid[2, :, :3] = False
    k, p = spectrum.radial_power_spectrum(field, valid)
    changed = np.where(valid, field, rng.normal(0.0, 50.0, field.shape))
    np.testing.assert_allclose(spectrum.radial_power_spectrum(changed, valid)[1], p, rtol=1e-10)
    assert not np.allclose(spectrum.radial_power_spectrum(changed)[1], p, rtol=0.1)
    _, cross = spectrum.radial_cross_spectrum(changed, field, valid)
    np.testing.assert_allclose(cross, p, rtol=1e-10)
    # All valid is the same as no mask.
    np.testing.assert_allclose(spectrum.radial_power_spectrum(field, np.ones(field.shape))[1],
                               spectrum.radial_power_spectrum(field)[1], rtol=1e-12)


def test_white_noise_level_kept_under_a_mask():
    rng = np.random.default_rng(4)
    sigma = 0.3
    noise = rng.normal(1.0, sigma, size=(64, 64, 64))
    valid = np.ones(noise.shape, bool)
    valid[:, 20:40, 8:30] = False  # a hole, zero-filled as the converter does
    noise[~valid] = 0.0
    _, p = spectrum.radial_power_spectrum(noise, valid)
    np.testing.assert_allclose(p.mean(0)[4:], sigma ** 2, rtol=0.12)


def test_mask_shape_mismatch_raises():
    with pytest.raises(ValueError, match="valid mask of shape"):
        spectrum.radial_power_spectrum(np.zeros((2, 8, 8)), np.ones((3, 8, 8)))
