"""The method's three known failures, as numbers (Schawinski et al. 2017 and the discussion around it).

(a) hallucination: on stamps with nothing in them (meta/kind "empty") every restored flux is invented;
    on a lone star (kind "star") the flux outside 3 FWHM of the star, beyond the truth's own wings, is.
(b) rare features: for stamps with a companion or a tidal tail (meta/feature, its clean r-band flux in
    meta/feature_map F), the recovery R = sum((out - (truth - F)) F) / sum(F^2) over the pixels where F is at
    least a quarter of the truth: 1 when the output holds the feature as the truth does, 0 when it shows the
    galaxy without it. Whether the class was in the training set is read from the training file's
    provenance (its p_companion / p_tidal options).
(c) distribution shift: PSNR against redshift in bins, each bin marked inside or outside the training
    set's redshift range (its z_range option).
`methods` maps a name (gan, richardson_lucy, wiener, input) to restored images (N, 3, H, W) in nanomaggies.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from hpcgan.workloads.galaxy.degrade import FEATURES, KINDS

R_BAND = 1


def hallucination(truth: np.ndarray, methods: Mapping[str, np.ndarray], meta: dict,
                  native_fwhm_arcsec: float = 1.3) -> dict:
    """Invented r-band flux on empty stamps and around lone stars, in nanomaggies and in sky-noise units."""
    kind = np.asarray(meta["kind"])
    sigma = np.asarray(meta["noise_sigma"], np.float64)[:, R_BAND]
    out: dict = {}
    empty = np.flatnonzero(kind == KINDS.index("empty"))
    if len(empty):
        npix = truth.shape[-1] * truth.shape[-2]
        res = {"n": int(len(empty))}
        for name, img in methods.items():
            flux = img[empty, R_BAND].astype(np.float64).sum(axis=(1, 2))
            peak = img[empty, R_BAND].max(axis=(1, 2)) / sigma[empty]
            res[name] = {"invented_flux_nmgy": float(flux.mean()),
                         "invented_flux_sigma": float((flux / (sigma[empty] * np.sqrt(npix))).mean()),
                         "peak_sigma": float(peak.mean())}
        out["empty"] = res
    stars = np.flatnonzero(kind == KINDS.index("star"))
    if len(stars):
        res = {"n": int(len(stars))}
        outside = np.stack([_outside_star(truth[i, R_BAND], meta, i, native_fwhm_arcsec) for i in stars])
        truth_out = (truth[stars, R_BAND] * outside).sum(axis=(1, 2))
        truth_tot = truth[stars, R_BAND].sum(axis=(1, 2))
        for name, img in methods.items():
            extra = (img[stars, R_BAND] * outside).sum(axis=(1, 2)) - truth_out
            res[name] = {"invented_flux_nmgy": float(extra.mean()),
                         "invented_fraction": float((extra / truth_tot).mean()),
                         "flux_ratio": float((img[stars, R_BAND].sum(axis=(1, 2)) / truth_tot).mean())}
        out["star"] = res
    return out


def _outside_star(truth_r: np.ndarray, meta: dict, i: int, native_fwhm: float) -> np.ndarray:
    """Mask of pixels farther than 3 FWHM (degraded seeing) from the star's peak."""
    fwhm_pix = np.hypot(float(meta["psf_fwhm"][i]), native_fwhm) / float(meta["pixel_scale"][i])
    cy, cx = np.unravel_index(int(np.argmax(truth_r)), truth_r.shape)
    y, x = np.mgrid[:truth_r.shape[0], :truth_r.shape[1]]
    return np.hypot(y - cy, x - cx) > 3 * fwhm_pix


def feature_recovery(truth: np.ndarray, methods: Mapping[str, np.ndarray], meta: dict,
                     trained_on: Mapping[str, bool | None]) -> dict:
    """Mean recovery R per feature class and method (see module doc); trained_on[class]: seen in training?"""
    feature = np.asarray(meta["feature"])
    fmap = np.asarray(meta["feature_map"], np.float64)
    out = {}
    for code, name in enumerate(FEATURES):
        idx = np.flatnonzero(feature == code)
        if name == "none" or not len(idx):
            continue
        f = fmap[idx]
        base = truth[idx, R_BAND] - f
        # Only where the feature is a sizeable part of the light: elsewhere errors on the galaxy would dominate.
        f = np.where((f >= 0.25 * truth[idx, R_BAND]) & (f >= 0.05 * f.max(axis=(1, 2), keepdims=True)), f, 0.0)
        norm = (f ** 2).sum(axis=(1, 2))
        res: dict = {"n": int(len(idx)), "in_training": trained_on.get(name)}
        for m, img in methods.items():
            r = ((img[idx, R_BAND] - base) * f).sum(axis=(1, 2)) / np.maximum(norm, 1e-30)
            res[m] = {"recovery": float(r.mean()), "recovery_median": float(np.median(r))}
        out[name] = res
    return out


def redshift_shift(psnr_by_method: Mapping[str, np.ndarray], meta: dict, train_range: tuple | None,
                   bins: int = 6) -> dict:
    """Mean PSNR (over bands) of galaxy stamps in redshift bins, each bin flagged inside/outside training."""
    z = np.asarray(meta["redshift"], np.float64)
    ok = np.isfinite(z)
    if ok.sum() < 2 or np.ptp(z[ok]) == 0:
        return {}
    edges = np.linspace(z[ok].min(), z[ok].max() + 1e-9, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = ok & (z >= lo) & (z < hi)
        if not sel.any():
            continue
        mid = 0.5 * (lo + hi)
        inside = None if train_range is None else bool(train_range[0] <= mid <= train_range[1])
        rows.append({"z_lo": float(lo), "z_hi": float(hi), "n": int(sel.sum()), "in_training_range": inside,
                     **{m: float(np.asarray(p)[sel].mean()) for m, p in psnr_by_method.items()}})
    out: dict = {"bins": rows, "training_z_range": list(train_range) if train_range else None}
    if train_range is not None:
        inside = ok & (z >= train_range[0]) & (z <= train_range[1])
        for label, sel in (("inside", inside), ("outside", ok & ~inside)):
            if sel.any():
                out[label] = {"n": int(sel.sum()),
                              **{m: float(np.asarray(p)[sel].mean()) for m, p in psnr_by_method.items()}}
    return out
