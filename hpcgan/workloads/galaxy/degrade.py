"""The galaxy workload's degradation: a wider PSF plus Poisson and sky noise, as in Schawinski et al. 2017.

The paper (arXiv 1702.00403; public code SpaceML/GalaxyGAN, script roou.m) blurs each SDSS g, r, i image
with a Gaussian of FWHM 1.4 arcsec and adds noise until the sky noise is 1.2 times the original's. Here the
same two numbers are the defaults: `psf_fwhm` (arcsec) is the FWHM of the kernel applied to the original,
and `noise_factor` scales the original sky noise. The noise is photon noise of a shorter exposure: the
original's electrons per nanomaggy divided by noise_factor^2, applied to sky + source, so both the sky noise
and the source's Poisson noise grow by noise_factor. Images are sky-subtracted, in nanomaggies per pixel.

The kernel drawn here is the one deconvolution baselines are given ("the known PSF"), so a baseline
inverts exactly the blur that was applied.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import fftconvolve

BANDS = ("g", "r", "i")
PIXEL_SCALE = 0.396  # arcsec per pixel, SDSS imaging camera
NANOMAGGY_ZEROPOINT = 22.5  # m = 22.5 - 2.5 log10(flux / nanomaggy)
# SDSS dark-sky brightness (mag / arcsec^2) and roughly the survey's electrons per nanomaggy, per band:
# the original sky noise sqrt(sky / gain) is then about 0.02, 0.025, 0.045 nanomaggies per pixel.
SKY_MAG_ARCSEC2 = (22.0, 21.0, 20.3)
ELECTRONS_PER_NMGY = (700.0, 1000.0, 600.0)
PSF_KINDS = ("gaussian", "moffat")
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.355


def mag_to_nmgy(mag):
    return 10.0 ** (-0.4 * (np.asarray(mag, np.float64) - NANOMAGGY_ZEROPOINT))


def sky_per_pixel(pixel_scale: float = PIXEL_SCALE) -> np.ndarray:
    """Sky level per band in nanomaggies per pixel."""
    return mag_to_nmgy(SKY_MAG_ARCSEC2) * pixel_scale ** 2


def original_sky_noise(pixel_scale: float = PIXEL_SCALE) -> np.ndarray:
    """Per-band sky noise (nanomaggies per pixel) of the undegraded survey image."""
    return np.sqrt(sky_per_pixel(pixel_scale) / np.asarray(ELECTRONS_PER_NMGY))


def psf_kernel(fwhm_pix: float, kind: str = "gaussian", beta: float = 3.0) -> np.ndarray:
    """Unit-sum PSF sampled at pixel centres on an odd square grid (Gaussian to 4 sigma, Moffat to 4 FWHM)."""
    if fwhm_pix <= 0:
        raise ValueError(f"psf fwhm {fwhm_pix} pixels: expected > 0")
    if kind == "gaussian":
        sigma = fwhm_pix / FWHM_PER_SIGMA
        half = max(1, math.ceil(4 * sigma))
        y, x = np.mgrid[-half:half + 1, -half:half + 1]
        k = np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    elif kind == "moffat":
        alpha = fwhm_pix / (2 * math.sqrt(2 ** (1 / beta) - 1))
        half = max(1, math.ceil(4 * fwhm_pix))
        y, x = np.mgrid[-half:half + 1, -half:half + 1]
        k = (1 + (x ** 2 + y ** 2) / alpha ** 2) ** (-beta)
    else:
        raise ValueError(f"psf kind {kind!r}: expected one of {', '.join(PSF_KINDS)}")
    return k / k.sum()


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(..., H, W) convolved with the kernel, same size, zero outside the image."""
    img = np.asarray(image, np.float64)
    return fftconvolve(img, kernel.reshape((1,) * (img.ndim - 2) + kernel.shape), mode="same", axes=(-2, -1))


def degrade(rng: np.random.Generator, clean: np.ndarray, psf_fwhm: float, noise_factor: float,
            pixel_scale: float = PIXEL_SCALE, psf: str = "gaussian",
            beta: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Clean (3, H, W) g, r, i in nanomaggies -> (degraded image, per-band sky noise sigma of the result)."""
    kernel = psf_kernel(psf_fwhm / pixel_scale, psf, beta)
    blurred = np.clip(blur(clean, kernel), 0.0, None)
    gain = np.asarray(ELECTRONS_PER_NMGY)[:, None, None] / noise_factor ** 2
    sky = sky_per_pixel(pixel_scale)[:, None, None]
    electrons = rng.poisson((blurred + sky) * gain)
    noisy = electrons / gain - sky
    return noisy, noise_factor * original_sky_noise(pixel_scale)


def robust_sigma(image: np.ndarray) -> np.ndarray:
    """Per-band noise of (..., H, W) images from the median absolute deviation (sources barely move it)."""
    x = np.asarray(image, np.float64).reshape(*np.shape(image)[:-2], -1)
    return 1.4826 * np.median(np.abs(x - np.median(x, axis=-1, keepdims=True)), axis=-1)


def degrade_observed(rng: np.random.Generator, image: np.ndarray, psf_fwhm: float, noise_factor: float,
                     pixel_scale: float = PIXEL_SCALE, psf: str = "gaussian",
                     beta: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A real (already noisy) (3, H, W) image -> (degraded image, its per-band noise sigma), as roou.m does:
    blur, then add white noise until the noise is noise_factor times the original's (both measured robustly)."""
    kernel = psf_kernel(psf_fwhm / pixel_scale, psf, beta)
    blurred = blur(image, kernel)
    target = noise_factor * robust_sigma(image)
    extra = np.sqrt(np.clip(target ** 2 - robust_sigma(blurred) ** 2, 0.0, None))
    return blurred + rng.standard_normal(blurred.shape) * extra[:, None, None], target


def meta_spec(h: int, w: int) -> dict:
    """meta/ datasets every galaxy file carries (synthetic and converted)."""
    return {
        "psf_fwhm": ((), "float32"),  # arcsec, FWHM of the degradation kernel
        "psf_beta": ((), "float32"),  # 0 for a Gaussian kernel, else the Moffat beta
        "pixel_scale": ((), "float32"),  # arcsec per pixel
        "noise_sigma": ((3,), "float32"),  # sky noise of the degraded image per band, nanomaggies/pixel
        "sky": ((3,), "float32"),  # sky level per band that was subtracted, nanomaggies/pixel
        "redshift": ((), "float32"),  # of the central galaxy (NaN when unknown)
        "kind": ((), "int8"),  # KINDS index: galaxy, empty sky, lone star
        "feature": ((), "int8"),  # FEATURES index: none, companion, tidal tail
        "feature_map": ((h, w), "float32"),  # r-band clean flux of the feature (zeros when none)
        "flux": ((3,), "float32"),  # clean flux of the central object per band, nanomaggies
    }


KINDS = ("galaxy", "empty", "star")
FEATURES = ("none", "companion", "tidal")
