"""Radially averaged power and cross spectra of 2D fields, and distances between spectra.

Why: an L1-trained generator predicts the conditional median and so blurs
texture the inputs do not determine; that shows as missing power at high
wavenumbers. Schmidt et al. 2020 compare 2D DFTs of generated and real
reflectance for the same reason.

Conventions: wavenumber k in cycles per image (along the shorter side), bins
of width 1 centred on the integers 1 .. min(H, W) // 2 (the DC term is left
out); P(k) is the mean of |FFT|^2 / sum(w^2) over the bin's Fourier modes,
with w the taper below, so a white-noise field of variance s^2 has P(k) = s^2
at every k, windowed or masked.

Taper: every field is multiplied by a separable 2-D Hann window (periodic
form, 0.5 - 0.5 cos(2 pi n / N) along each axis) before the DFT. The DFT
treats a field as periodic; a real reflectance field is not, and the jump
between its opposite edges (or a large-scale gradient) puts power at every k
that falls only as k^-2, which swamps steep spectra in the high band. Hann
goes to zero at the edges and its own leakage falls as k^-6 (Harris 1978); a
separable window keeps that along both axes, and Hann's main lobe reaches
only 2 bins either side, which matters on 32-pixel tiles.

Invalid pixels (valid == 0, e.g. no satellite view in the converter's
meta/valid): they get weight 0, so their values cannot matter. The mean
removed is the window-weighted mean over the valid pixels (a masked pixel
is thus filled with that mean), and the normalisation sum(w^2) counts only
valid pixels, so white noise on the valid part still gives P = s^2. The mask's
own edges leak like any sharp edge; a sample with only a few valid pixels
gives a noisy spectrum, and every sample weighs the same in a mean spectrum.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

# Frequency bands as fractions of the Nyquist wavenumber: roughly octaves
# apart, so "high" is the finest structure the grid resolves.
BANDS: dict[str, tuple[float, float]] = {"low": (0.0, 0.125), "mid": (0.125, 0.5), "high": (0.5, 1.0)}


def hann2d(h: int, w: int) -> np.ndarray:
    """(h, w) separable periodic Hann window (the taper of the module doc)."""
    wy = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(h) / h)
    wx = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(w) / w)
    return wy[:, None] * wx[None, :]


def _fourier(images: np.ndarray, name: str, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(..., H, W) fields -> (2-D DFT of the tapered fields, sum(w^2) per field (...)). The taper is the
    Hann window times `valid` (broadcast to the fields' shape; None: all valid), applied after removing
    each field's taper-weighted mean (module doc). Every spectrum here (power and cross) goes through this
    one function, so all of them are windowed and masked alike."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim < 2 or min(a.shape[-2:]) < 4:
        raise ValueError(f"{name}: expected (..., H, W) with H, W >= 4, got shape {a.shape}")
    taper = hann2d(*a.shape[-2:])
    if valid is not None:
        v = np.asarray(valid)
        try:
            taper = taper * np.broadcast_to(v != 0, a.shape)
        except ValueError:
            raise ValueError(f"{name}: valid mask of shape {v.shape} does not fit fields of shape {a.shape}") from None
    taper = np.broadcast_to(taper, a.shape)
    weight = taper.sum(axis=(-2, -1), keepdims=True)
    mean = (a * taper).sum(axis=(-2, -1), keepdims=True) / np.maximum(weight, 1e-300)
    norm = (taper ** 2).sum(axis=(-2, -1))
    # A field with no valid pixel has an all-zero taper: its spectrum is 0, not NaN.
    return np.fft.fft2((a - mean) * taper), np.maximum(norm, 1e-300)


def _radial_mean(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., H, W) values on the DFT grid -> (k, mean over each radial bin) with bins 1 .. min(H, W) // 2."""
    h, w = values.shape[-2:]
    n = min(h, w)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    kbin = np.rint(np.sqrt(fx ** 2 + fy ** 2) * n).astype(np.int64).ravel()
    nbins = n // 2
    keep = (kbin >= 1) & (kbin <= nbins)
    counts = np.bincount(kbin[keep], minlength=nbins + 1)[1:]
    flat = values.reshape(-1, h * w)[:, keep]
    sums = np.stack([np.bincount(kbin[keep], weights=row, minlength=nbins + 1)[1:] for row in flat])
    return np.arange(1, nbins + 1, dtype=np.float64), (sums / counts).reshape(*values.shape[:-2], nbins)


def radial_power_spectrum(images: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(..., H, W) fields -> (k, P) with k of shape (n,) and P of shape (..., n), n = min(H, W) // 2.

    Each field is tapered (Hann window, times `valid` if given: pixels where it is 0 do not count) after
    removing its weighted mean, so P depends neither on an offset nor on the values of invalid pixels.
    """
    f, norm = _fourier(images, "radial_power_spectrum", valid)
    return _radial_mean(np.abs(f) ** 2 / norm[..., None, None])


def radial_cross_spectrum(a: np.ndarray, b: np.ndarray,
                          valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two stacks of (..., H, W) fields of one shape -> (k, S_ab): the radial mean of Re(A B*) / sum(w^2),
    the co-spectrum (the imaginary part cancels between the modes +f and -f of a bin), both fields tapered
    as in radial_power_spectrum with the same `valid`. S_aa is P_a."""
    if np.shape(a) != np.shape(b):
        raise ValueError(f"radial_cross_spectrum: shapes differ, {np.shape(a)} and {np.shape(b)}")
    (fa, norm), (fb, _) = _fourier(a, "radial_cross_spectrum", valid), _fourier(b, "radial_cross_spectrum", valid)
    return _radial_mean((fa * np.conj(fb)).real / norm[..., None, None])


def band_masks(k: np.ndarray, bands: Mapping[str, tuple[float, float]] = BANDS) -> dict[str, np.ndarray]:
    """Boolean masks over k for each band (lo, hi] given as fractions of the largest k (Nyquist)."""
    kmax = float(k.max())
    masks = {name: (k > lo * kmax) & (k <= hi * kmax) for name, (lo, hi) in bands.items()}
    for name, m in masks.items():
        if not m.any():
            raise ValueError(f"band {name!r} holds no wavenumber for k up to {kmax:g}: image too small")
    return masks


def spectral_distance(k: np.ndarray, p_fake: np.ndarray, p_real: np.ndarray,
                      bands: Mapping[str, tuple[float, float]] = BANDS, eps: float = 1e-30) -> dict[str, dict[str, float]]:
    """Per band: mean |log10 P_fake - log10 P_real| ("abs", 0 when equal) and mean log10(P_fake / P_real)
    ("log_ratio", negative when the fake lacks power: blur)."""
    d = np.log10(np.asarray(p_fake, np.float64) + eps) - np.log10(np.asarray(p_real, np.float64) + eps)
    return {name: {"abs": float(np.abs(d[..., m]).mean()), "log_ratio": float(d[..., m].mean())}
            for name, m in band_masks(k, bands).items()}


def fit_slope(k: np.ndarray, p: np.ndarray, kmin: float = 1.0, kmax: float | None = None) -> float:
    """beta of a P(k) ~ k^-beta least-squares fit in log-log over kmin <= k <= kmax."""
    k = np.asarray(k, np.float64)
    sel = (k >= kmin) & (k <= (k.max() if kmax is None else kmax)) & (np.asarray(p) > 0)
    if sel.sum() < 2:
        raise ValueError("fit_slope: fewer than two positive points in the fit range")
    slope, _ = np.polyfit(np.log(k[sel]), np.log(np.asarray(p, np.float64)[sel]), 1)
    return float(-slope)


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """(..., 3, H, W) RGB -> (..., H, W) luminance with the ITU-R 601 weights the reference code used."""
    w = np.array([0.2989, 0.5870, 0.1140])
    return np.tensordot(np.moveaxis(np.asarray(rgb, np.float64), -3, -1), w, axes=([-1], [0]))
