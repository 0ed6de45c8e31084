"""Convert the reference CRF layout (Schmidt et al. 2020, krisrs1128/clouds_dist) to hpcgan HDF5.

Layout read (DIR):
  DIR/imgs/<stem>.npz   per timestamp: Reflectance_680, Reflectance_551, Reflectance_443 (H, W) or one
                        3-channel array (REFLECTANCE_KEYS), latitude, longitude and scattering angle (H, W)
  DIR/metos/<stem>[_Collocated_MERRA2].npz   U, T, V, RH (10, H, W) and TS (H, W)
Files are matched by stem; a metos name may carry the reference's "_Collocated_MERRA2" suffix.
Pairs are taken in sorted stem order. Output channels follow hpcgan.workloads.crf.synth (U, T, V, RH, scattering
angle, TS, lat, lon) so synthetic and real data share one schema.

NaN handling (the reference code sets every NaN to 0; hpcgan keeps that for reflectance only):
- reflectance: NaN pixels (no satellite view) become 0, and meta/valid (H, W) uint8 marks the pixels that
  were defined; the reader delivers it with every batch and no loss or metric counts the other pixels
  (hpcgan/workloads/masks.py). A sample with no defined reflectance is dropped.
- meteorology, angles, coordinates: NaN pixels of a channel are filled with that channel's mean over the
  sample's finite pixels (0 K temperatures would wreck the normalisation); a channel with no finite pixel
  drops the sample. meta/filled counts the filled input values per sample.
Dropped samples are listed in the provenance (name and reason) and on stderr.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from hpcgan.data.format import VALID_META, DatasetWriter
from hpcgan.workloads.crf.synth import INPUT_CHANNELS, PRESSURE_LEVELS_HPA, TARGET_CHANNELS
from hpcgan.errors import UserError

REFLECTANCE_KEYS = ("Reflectance_680", "Reflectance_551", "Reflectance_443")
RGB_KEYS = ("reflectance", "Reflectance", "rgb", "RGB")
LAT_KEYS = ("latitude", "Latitude", "lat")
LON_KEYS = ("longitude", "Longitude", "lon")
ANGLE_KEYS = ("scattering_angle", "Scattering_angle", "Scattering_Angle", "scattering_angles", "sca")
METO_VARS = ("U", "T", "V", "RH")
METO_SUFFIX = "_Collocated_MERRA2"


def _stem(p: Path) -> str:
    s = p.stem
    return s[:-len(METO_SUFFIX)] if s.endswith(METO_SUFFIX) else s


def pairs(src_dir: str | Path) -> list[tuple[str, Path, Path]]:
    """(stem, imgs file, metos file) for every stem present in both folders, sorted by stem."""
    src = Path(src_dir)
    for sub in ("imgs", "metos"):
        if not (src / sub).is_dir():
            raise UserError(f"{src / sub}: folder missing (expected {src}/imgs/*.npz and {src}/metos/*.npz)")
    imgs = {_stem(p): p for p in sorted((src / "imgs").glob("*.npz"))}
    metos = {_stem(p): p for p in sorted((src / "metos").glob("*.npz"))}
    common = sorted(set(imgs) & set(metos))
    if not common:
        raise UserError(f"{src}: no imgs/*.npz matches a metos/*.npz by name ({len(imgs)} imgs, {len(metos)} metos)")
    for name in sorted(set(imgs) ^ set(metos)):
        print(f"convert crf-npz: {name}: only in {'imgs' if name in imgs else 'metos'}/, skipped", file=sys.stderr)
    return [(s, imgs[s], metos[s]) for s in common]


def _get(z, keys: tuple, path: Path) -> np.ndarray:
    for k in keys:
        if k in z.files:
            return np.asarray(z[k], dtype=np.float64)
    raise UserError(f"{path}: key {keys[0]!r} missing (accepted names: {', '.join(keys)}; found: {', '.join(z.files)})")


def load_pair(img_path: Path, meto_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raw (inputs (44, H, W), reflectance (3, H, W)) float64, NaNs kept."""
    with np.load(img_path) as z:
        if all(k in z.files for k in REFLECTANCE_KEYS):
            refl = np.stack([np.asarray(z[k], dtype=np.float64) for k in REFLECTANCE_KEYS])
        else:
            refl = _get(z, RGB_KEYS + REFLECTANCE_KEYS, img_path)
            if refl.ndim == 3 and refl.shape[-1] == 3 and refl.shape[0] != 3:
                refl = np.moveaxis(refl, -1, 0)
        if refl.ndim != 3 or refl.shape[0] != 3:
            raise UserError(f"{img_path}: reflectance shape {refl.shape}, expected (3, H, W) or three (H, W) arrays")
        hw = refl.shape[1:]
        extra = [_get(z, keys, img_path) for keys in (ANGLE_KEYS, LAT_KEYS, LON_KEYS)]
    with np.load(meto_path) as z:
        levels = []
        for v in METO_VARS:
            a = _get(z, (v,), meto_path)
            if a.shape != (len(PRESSURE_LEVELS_HPA), *hw):
                raise UserError(f"{meto_path}: key {v!r} shape {a.shape}, expected ({len(PRESSURE_LEVELS_HPA)}, {hw[0]}, {hw[1]})")
            levels.append(a)
        ts = _get(z, ("TS",), meto_path)
    for name, a, path in (("scattering angle", extra[0], img_path), ("latitude", extra[1], img_path),
                          ("longitude", extra[2], img_path), ("TS", ts, meto_path)):
        if a.shape != hw:
            raise UserError(f"{path}: {name} shape {a.shape}, expected {hw}")
    inputs = np.concatenate(levels + [extra[0][None], ts[None], extra[1][None], extra[2][None]])
    return inputs, refl


def clean(inputs: np.ndarray, refl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, str]:
    """Apply the NaN policy (module doc): (inputs, reflectance, valid mask, filled count, drop reason or '')."""
    valid = np.isfinite(refl).all(axis=0)
    if not valid.any():
        return inputs, refl, valid, 0, "no finite reflectance"
    refl = np.where(np.isfinite(refl), refl, 0.0)
    filled = 0
    inputs = inputs.copy()
    for c in range(len(inputs)):
        bad = ~np.isfinite(inputs[c])
        if bad.any():
            if bad.all():
                return inputs, refl, valid, 0, f"input channel {INPUT_CHANNELS[c]} has no finite value"
            inputs[c][bad] = inputs[c][~bad].mean()
            filled += int(bad.sum())
    return inputs, refl, valid, filled, ""


def convert(src_dir: str, out_path: str, **opts: Any) -> str:
    """imgs/ + metos/ npz pairs -> one HDF5 file at out_path (returned). opts: dtype (float32|float16)."""
    dtype = opts.pop("dtype", "float32")
    if opts:
        raise UserError(f"convert crf-npz: unknown option(s) {', '.join(sorted(opts))}")
    found = pairs(src_dir)
    first_in, first_out = load_pair(found[0][1], found[0][2])
    h, w = first_out.shape[1:]
    dropped: list[str] = []
    provenance = {"converter": "crf-npz", "source": str(Path(src_dir).resolve()), "pairs": len(found),
                  "nan_policy": "reflectance NaN -> 0 with meta/valid; input NaN -> sample channel mean; "
                                "samples with an all-NaN channel dropped", "dropped": dropped}
    with DatasetWriter(out_path, "crf", len(found), (len(INPUT_CHANNELS), h, w), (3, h, w), INPUT_CHANNELS,
                       TARGET_CHANNELS, meta_spec={VALID_META: ((h, w), "uint8"), "filled": ((), "int64")},
                       provenance=provenance, dtype=dtype, exact=False) as writer:
        for stem, img, meto in found:
            inputs, refl = load_pair(img, meto)
            if refl.shape[1:] != (h, w):
                raise UserError(f"{img}: image size {refl.shape[1:]}, expected {(h, w)} like {found[0][1]}")
            inputs, refl, valid, filled, reason = clean(inputs, refl)
            if reason:
                dropped.append(f"{stem}: {reason}")
                print(f"convert crf-npz: {stem}: dropped ({reason})", file=sys.stderr)
                continue
            writer.write(inputs[None].astype(np.float32), refl[None].astype(np.float32),
                         {VALID_META: valid[None].astype(np.uint8), "filled": np.array([filled])})
        provenance["written"] = writer.written
        writer.provenance = provenance
        if writer.written == 0:
            raise UserError(f"{src_dir}: every sample was dropped ({'; '.join(dropped)})")
    return str(out_path)
