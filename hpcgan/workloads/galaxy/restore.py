"""Image space, quality metrics and the deconvolution baselines the GAN is compared with.

Model space is an asinh stretch, y = asinh(x / soft) / asinh(max / soft): linear near the sky noise,
logarithmic in bright cores, so faint structure and bright bulges both matter to an L1 loss. The paper's
stretch (roou.m: clip to [-0.1, 4] nanomaggies, rescale, asinh(10 u) / 3) softens at about 0.41 nanomaggies;
the default soft = 0.4 follows it, with a higher ceiling (50) so bright cores are not clipped.
PSNR and SSIM are measured in this space with data range 1, on every band.

Baselines get the known degradation kernel (hpcgan.workloads.galaxy.degrade.psf_kernel from meta/psf_fwhm,
meta/pixel_scale, meta/psf_beta): Richardson-Lucy on the image with its sky added back (the photon counts RL
assumes are then non-negative), and a Wiener filter (skimage.restoration.wiener, Laplacian regulariser).
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import richardson_lucy, wiener

from hpcgan.workloads.galaxy.degrade import psf_kernel


def stretch(x: np.ndarray, soft: float, vmax: float) -> np.ndarray:
    """Nanomaggies -> model space (1 at vmax, clipped to [-1, 1])."""
    return np.clip(np.arcsinh(np.asarray(x, np.float64) / soft) / np.arcsinh(vmax / soft), -1.0, 1.0)


def unstretch(y: np.ndarray, soft: float, vmax: float) -> np.ndarray:
    return soft * np.sinh(np.asarray(y, np.float64) * np.arcsinh(vmax / soft))


def psnr(truth: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of images already in model space (data range 1)."""
    return float(peak_signal_noise_ratio(truth, test, data_range=1.0))


def ssim(truth: np.ndarray, test: np.ndarray) -> float:
    """SSIM of one 2-D band image in model space (data range 1, 7x7 window)."""
    return float(structural_similarity(truth, test, data_range=1.0, win_size=7))


def kernel_for(meta: dict, i: int) -> np.ndarray:
    """The degradation kernel of sample i from its meta/ record."""
    beta = float(meta["psf_beta"][i])
    return psf_kernel(float(meta["psf_fwhm"][i]) / float(meta["pixel_scale"][i]),
                      "moffat" if beta > 0 else "gaussian", beta if beta > 0 else 3.0)


def _padded(image: np.ndarray, kernel: np.ndarray, restore_fn) -> np.ndarray:
    """restore_fn on the image mirrored outwards by a kernel width, cropped back: without it both
    baselines see the stamp's edge as a sharp drop and ring along the border."""
    pad = kernel.shape[0]
    out = restore_fn(np.pad(image, pad, mode="reflect"))
    return out[pad:-pad, pad:-pad]


def richardson_lucy_restore(image: np.ndarray, kernel: np.ndarray, sky: np.ndarray, iterations: int) -> np.ndarray:
    """(3, H, W) sky-subtracted image -> RL estimate per band, sky subtracted again."""
    out = np.empty(image.shape, np.float64)
    for b in range(image.shape[0]):
        counts = np.clip(image[b] + sky[b], 1e-12, None)
        out[b] = _padded(counts, kernel, lambda x: richardson_lucy(x, kernel, num_iter=iterations, clip=False)) - sky[b]
    return out


def wiener_restore(image: np.ndarray, kernel: np.ndarray, balance: float) -> np.ndarray:
    """(3, H, W) -> Wiener-filtered estimate per band."""
    return np.stack([_padded(np.asarray(image[b], np.float64), kernel, lambda x: wiener(x, kernel, balance, clip=False))
                     for b in range(image.shape[0])])


def baselines(inputs: np.ndarray, meta: dict, iterations: int, balance: float) -> dict[str, np.ndarray]:
    """Richardson-Lucy and Wiener restorations of every sample (N, 3, H, W), nanomaggies."""
    rl, wi = np.empty(inputs.shape, np.float32), np.empty(inputs.shape, np.float32)
    for i in range(inputs.shape[0]):
        k = kernel_for(meta, i)
        rl[i] = richardson_lucy_restore(inputs[i], k, np.asarray(meta["sky"][i], np.float64), iterations)
        wi[i] = wiener_restore(inputs[i], k, balance)
    return {"richardson_lucy": rl, "wiener": wi}


def quality(truth: np.ndarray, test: np.ndarray, soft: float, vmax: float) -> dict[str, np.ndarray]:
    """Per-sample, per-band PSNR and SSIM (N, 3) in model space."""
    t, x = stretch(truth, soft, vmax), stretch(test, soft, vmax)
    n, c = truth.shape[:2]
    out = {"psnr": np.empty((n, c)), "ssim": np.empty((n, c))}
    for i in range(n):
        for b in range(c):
            out["psnr"][i, b] = psnr(t[i, b], x[i, b])
            out["ssim"][i, b] = ssim(t[i, b], x[i, b])
    return out
