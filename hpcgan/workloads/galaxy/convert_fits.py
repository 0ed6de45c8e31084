"""Convert g, r, i FITS cutouts (e.g. SDSS, in nanomaggies) to hpcgan HDF5, applying the paper's degradation.

Layout read (DIR), as the GalaxyGAN release: DIR/<name>/<name>-g.fits, -r.fits, -i.fits, or the three
files directly in DIR (DIR/<name>-g.fits ...). The primary HDU (or the first image HDU) is read. Stamps
larger than `size` are cut to the central size x size pixels; smaller ones are dropped (listed in the
provenance and on stderr). The target is the cutout as it is; the input is it blurred and noised with
hpcgan.workloads.galaxy.degrade.degrade_observed (the noise it already has is counted). A header keyword
REDSHIFT or Z on the r-band file fills meta/redshift (NaN otherwise).
Options: size (default: the first stamp's, made even), psf_fwhm (1.4), noise_factor (1.2), psf (gaussian),
psf_beta (3.0), pixel_scale (0.396), seed (0), dtype (float32).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from hpcgan.workloads.galaxy import degrade as gd
from hpcgan.data.format import DatasetWriter
from hpcgan.errors import UserError

DEFAULTS: dict[str, Any] = {"size": None, "psf_fwhm": 1.4, "noise_factor": 1.2, "psf": "gaussian",
                            "psf_beta": 3.0, "pixel_scale": gd.PIXEL_SCALE, "seed": 0, "dtype": "float32"}


def cutouts(src_dir: str | Path) -> list[tuple[str, list[Path]]]:
    """(name, [g, r, i files]) for every name with all three bands, sorted by name."""
    src = Path(src_dir)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder (expected NAME/NAME-g.fits ... or NAME-g.fits ... in it)")
    found: dict[str, dict[str, Path]] = {}
    for p in list(src.glob("*.fits")) + list(src.glob("*/*.fits")):
        stem, _, band = p.stem.rpartition("-")
        if band in gd.BANDS and stem:
            found.setdefault(stem, {})[band] = p
    complete = sorted(n for n, b in found.items() if len(b) == len(gd.BANDS))
    for name in sorted(set(found) - set(complete)):
        print(f"convert galaxy-fits: {name}: bands {''.join(sorted(found[name]))} only, skipped", file=sys.stderr)
    if not complete:
        raise UserError(f"{src}: no cutout with all of {', '.join(f'NAME-{b}.fits' for b in gd.BANDS)}")
    return [(n, [found[n][b] for b in gd.BANDS]) for n in complete]


def read_band(path: Path) -> tuple[np.ndarray, dict]:
    """2-D image (float64) and header of a FITS file; UserError naming the file when it is not one."""
    from astropy.io import fits

    try:
        with fits.open(path) as hdus:
            for hdu in hdus:
                if hdu.data is not None and hdu.data.ndim == 2:
                    return np.asarray(hdu.data, np.float64), dict(hdu.header)
    except OSError as e:
        raise UserError(f"{path}: cannot read as FITS ({str(e).splitlines()[0]})") from None
    raise UserError(f"{path}: no 2-D image HDU")


def _crop(img: np.ndarray, size: int) -> np.ndarray:
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[y0:y0 + size, x0:x0 + size]


def convert(src_dir: str, out_path: str, **opts: Any) -> str:
    """FITS cutouts in src_dir -> one HDF5 file at out_path (returned). Options: see the module doc."""
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise UserError(f"convert galaxy-fits: unknown option(s) {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(DEFAULTS)})")
    o = {**DEFAULTS, **opts}
    if o["psf"] not in gd.PSF_KINDS or float(o["psf_fwhm"]) <= 0 or float(o["noise_factor"]) < 1:
        raise UserError(f"convert galaxy-fits: psf {o['psf']!r}, psf_fwhm {o['psf_fwhm']}, noise_factor "
                        f"{o['noise_factor']}: expected psf in {gd.PSF_KINDS}, psf_fwhm > 0, noise_factor >= 1")
    found = cutouts(src_dir)
    size = o["size"] or min(read_band(found[0][1][1])[0].shape) // 2 * 2
    rng = np.random.default_rng(int(o["seed"]))
    scale, fwhm, factor = float(o["pixel_scale"]), float(o["psf_fwhm"]), float(o["noise_factor"])
    dropped: list[str] = []
    provenance = {"converter": "galaxy-fits", "source": str(Path(src_dir).resolve()), "cutouts": len(found),
                  "options": {**o, "size": size}, "dropped": dropped}
    with DatasetWriter(out_path, "galaxy", len(found), (3, size, size), (3, size, size),
                       [f"{b}_degraded" for b in gd.BANDS], list(gd.BANDS), meta_spec=gd.meta_spec(size, size),
                       provenance=provenance, dtype=o["dtype"], exact=False) as writer:
        for name, files in found:
            bands = [read_band(p) for p in files]
            shapes = {b[0].shape for b in bands}
            reason = (f"bands differ in shape {sorted(shapes)}" if len(shapes) > 1 else
                      f"{min(bands[0][0].shape)} px is smaller than size {size}" if min(bands[0][0].shape) < size else
                      "non-finite pixels" if not all(np.isfinite(b[0]).all() for b in bands) else "")
            if reason:
                dropped.append(f"{name}: {reason}")
                print(f"convert galaxy-fits: {name}: dropped ({reason})", file=sys.stderr)
                continue
            clean = np.stack([_crop(b[0], size) for b in bands])
            degraded, sigma = gd.degrade_observed(rng, clean, fwhm, factor, scale, o["psf"], float(o["psf_beta"]))
            header = bands[1][1]
            z = header.get("REDSHIFT", header.get("Z", np.nan))
            meta = {"psf_fwhm": [fwhm], "psf_beta": [float(o["psf_beta"]) if o["psf"] == "moffat" else 0.0],
                    "pixel_scale": [scale], "noise_sigma": sigma[None], "sky": gd.sky_per_pixel(scale)[None],
                    "redshift": [float(z)], "kind": [gd.KINDS.index("galaxy")], "feature": [0],
                    "feature_map": np.zeros((1, size, size)), "flux": clean.sum(axis=(1, 2))[None]}
            writer.write(degraded[None].astype(np.float32), clean[None].astype(np.float32),
                         {k: np.asarray(v) for k, v in meta.items()})
        provenance["written"] = writer.written
        writer.provenance = provenance
        if writer.written == 0:
            raise UserError(f"{src_dir}: every cutout was dropped ({'; '.join(dropped)})")
    return str(out_path)
