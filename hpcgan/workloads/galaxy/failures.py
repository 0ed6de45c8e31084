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


def hallucination_rows(truth: np.ndarray, methods: Mapping[str, np.ndarray], meta: dict,
                       native_fwhm_arcsec: float = 1.3) -> dict[str, np.ndarray]:
    """Per stamp (NaN on stamps of another kind): r-band flux and peak invented on empty stamps; flux
    invented beyond 3 FWHM of a lone star, that as a fraction of the star's, and the total flux ratio."""
    kind = np.asarray(meta["kind"])
    sigma = np.asarray(meta["noise_sigma"], np.float64)[:, R_BAND]
    n = len(truth)
    rows = {"kind": kind}
    empty = np.flatnonzero(kind == KINDS.index("empty"))
    stars = np.flatnonzero(kind == KINDS.index("star"))
    npix = truth.shape[-1] * truth.shape[-2]
    if len(stars):
        outside = np.stack([_outside_star(truth[i, R_BAND], meta, i, native_fwhm_arcsec) for i in stars])
        truth_out = (truth[stars, R_BAND] * outside).sum(axis=(1, 2))
        truth_tot = truth[stars, R_BAND].sum(axis=(1, 2))
    for name, img in methods.items():
        cols = {key: np.full(n, np.nan) for key in ("empty_flux", "empty_flux_sigma", "empty_peak_sigma",
                                                      "star_extra", "star_fraction", "star_ratio")}
        if len(empty):
            flux = img[empty, R_BAND].astype(np.float64).sum(axis=(1, 2))
            cols["empty_flux"][empty] = flux
            cols["empty_flux_sigma"][empty] = flux / (sigma[empty] * np.sqrt(npix))
            cols["empty_peak_sigma"][empty] = img[empty, R_BAND].max(axis=(1, 2)) / sigma[empty]
        if len(stars):
            extra = (img[stars, R_BAND] * outside).sum(axis=(1, 2)) - truth_out
            cols["star_extra"][stars] = extra
            cols["star_fraction"][stars] = extra / truth_tot
            cols["star_ratio"][stars] = img[stars, R_BAND].sum(axis=(1, 2)) / truth_tot
        rows.update({f"{key}/{name}": v for key, v in cols.items()})
    return rows


def hallucination_summary(rows: Mapping[str, np.ndarray], names: list[str]) -> dict:
    """Means over the empty stamps and over the lone stars of hallucination_rows (of any number of batches)."""
    kind = np.asarray(rows["kind"])
    out: dict = {}
    empty, stars = kind == KINDS.index("empty"), kind == KINDS.index("star")
    if empty.any():
        out["empty"] = {"n": int(empty.sum()),
                        **{m: {"invented_flux_nmgy": float(rows[f"empty_flux/{m}"][empty].mean()),
                               "invented_flux_sigma": float(rows[f"empty_flux_sigma/{m}"][empty].mean()),
                               "peak_sigma": float(rows[f"empty_peak_sigma/{m}"][empty].mean())} for m in names}}
    if stars.any():
        out["star"] = {"n": int(stars.sum()),
                       **{m: {"invented_flux_nmgy": float(rows[f"star_extra/{m}"][stars].mean()),
                              "invented_fraction": float(rows[f"star_fraction/{m}"][stars].mean()),
                              "flux_ratio": float(rows[f"star_ratio/{m}"][stars].mean())} for m in names}}
    return out


def hallucination(truth: np.ndarray, methods: Mapping[str, np.ndarray], meta: dict,
                  native_fwhm_arcsec: float = 1.3) -> dict:
    """Invented r-band flux on empty stamps and around lone stars, in nanomaggies and in sky-noise units."""
    return hallucination_summary(hallucination_rows(truth, methods, meta, native_fwhm_arcsec), list(methods))


def _outside_star(truth_r: np.ndarray, meta: dict, i: int, native_fwhm: float) -> np.ndarray:
    """Mask of pixels farther than 3 FWHM (degraded seeing) from the star's peak."""
    fwhm_pix = np.hypot(float(meta["psf_fwhm"][i]), native_fwhm) / float(meta["pixel_scale"][i])
    cy, cx = np.unravel_index(int(np.argmax(truth_r)), truth_r.shape)
    y, x = np.mgrid[:truth_r.shape[0], :truth_r.shape[1]]
    return np.hypot(y - cy, x - cx) > 3 * fwhm_pix


def recovery_rows(truth: np.ndarray, methods: Mapping[str, np.ndarray], meta: dict) -> dict[str, np.ndarray]:
    """Per stamp: its feature class and, per method, the recovery R of the feature (NaN without one)."""
    feature = np.asarray(meta["feature"])
    idx = np.flatnonzero(feature != FEATURES.index("none"))
    rows = {"feature": feature}
    if len(idx):
        f = np.asarray(meta["feature_map"], np.float64)[idx]
        base = truth[idx, R_BAND] - f
        # Only where the feature is a sizeable part of the light: elsewhere errors on the galaxy would dominate.
        f = np.where((f >= 0.25 * truth[idx, R_BAND]) & (f >= 0.05 * f.max(axis=(1, 2), keepdims=True)), f, 0.0)
        norm = (f ** 2).sum(axis=(1, 2))
    for m, img in methods.items():
        r = np.full(len(truth), np.nan)
        if len(idx):
            r[idx] = ((img[idx, R_BAND] - base) * f).sum(axis=(1, 2)) / np.maximum(norm, 1e-30)
        rows[f"recovery/{m}"] = r
    return rows


def recovery_summary(rows: Mapping[str, np.ndarray], names: list[str], trained_on: Mapping[str, bool | None]) -> dict:
    """Mean and median recovery per feature class and method, from recovery_rows of any number of batches."""
    feature = np.asarray(rows["feature"])
    out = {}
    for code, name in enumerate(FEATURES):
        sel = feature == code
        if name == "none" or not sel.any():
            continue
        res: dict = {"n": int(sel.sum()), "in_training": trained_on.get(name)}
        for m in names:
            r = rows[f"recovery/{m}"][sel]
            res[m] = {"recovery": float(r.mean()), "recovery_median": float(np.median(r))}
        out[name] = res
    return out


def feature_recovery(truth: np.ndarray, methods: Mapping[str, np.ndarray], meta: dict,
                     trained_on: Mapping[str, bool | None]) -> dict:
    """Mean recovery R per feature class and method (see module doc); trained_on[class]: seen in training?"""
    return recovery_summary(recovery_rows(truth, methods, meta), list(methods), trained_on)


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
