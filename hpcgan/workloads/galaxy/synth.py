"""Synthetic SDSS-like galaxy stamps drawn with GalSim: degraded g, r, i image in, clean image out.

A stand-in for the 4,550 SDSS galaxies (0.01 < z < 0.02) of Schawinski et al. 2017, with what real stamps
have. Fluxes are in nanomaggies per pixel (m = 22.5 - 2.5 log10 f), 0.396 arcsec pixels, sky subtracted.

Scene (one central object, plus field objects):
- kind "galaxy" (the default): a Sersic bulge (n 1.5-4, redder: g-r 0.8, r-i 0.4) plus an exponential disk
  (g-r 0.5, r-i 0.25) seen at inclination i (axis ratio sqrt(cos^2 i (1 - q0^2) + q0^2), q0 = 0.15) and a
  random position angle; star-forming knots (galsim.RandomKnots) and, for a fraction `p_spiral`, two
  logarithmic spiral arms r = r0 exp(theta tan(pitch)) made of Gaussian clumps, both blue (g-r 0.2, r-i 0.1)
  and both in the disk plane (sheared with it).
- redshift z uniform in `z_range` sets apparent size and brightness: absolute magnitude M_r uniform in
  (-22.5, -19.5), disk half-light radius 4 kpc x 10^(-0.1 (M_r + 21)) with 0.15 dex scatter; the flux falls
  as D_L^-2 and the size as D_A^-1 (D_L = cz/H0 (1 + (1 - q0) z / 2), H0 = 70, q0 = -0.55; D_A = D_L/(1+z)^2),
  so surface brightness dims as (1+z)^4.
- rare features (meta/feature, its r-band clean flux in meta/feature_map): a companion (a compact galaxy
  with 5-20 % of the central flux at 1.5-3 half-light radii) with probability `p_companion`, else a tidal
  tail (a curved arc of clumps, 5-15 % of the flux, from 1.5 to 4 half-light radii) with probability `p_tidal`.
- kind "empty" (probability `p_empty`): sky and noise only. kind "star" (`p_star`): one star, nothing else.
- field: foreground stars (`star_density` per arcmin^2, flux log-uniform in `star_flux`, g-r 0.3-1.4) and
  smaller background neighbour galaxies (`neighbour_density` per arcmin^2), in galaxy scenes only.
The clean target is the scene seen through the survey's own seeing (Moffat, beta 3.5, FWHM `native_fwhm`),
noise-free; the input is that image degraded as in hpcgan.workloads.galaxy.degrade (kernel FWHM `psf_fwhm`,
noise `noise_factor` times the survey's sky noise). A number for psf_fwhm or noise_factor is used for every
sample; a pair [lo, hi] draws each sample's value uniformly (stored in meta/).
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from hpcgan.workloads.galaxy import degrade as gd
from hpcgan.data.format import synth_samples
from hpcgan.errors import UserError

H0_KMS_MPC, C_KMS, Q0_DECEL = 70.0, 299792.458, -0.55
ARCSEC_PER_RAD = 206264.806
DISK_THICKNESS = 0.15  # intrinsic axis ratio of an edge-on disk
# Colours (g - r, r - i) of the components; flux in band b = flux_r * 10^(-0.4 (m_b - m_r)).
COLOURS = {"bulge": (0.8, 0.4), "disk": (0.5, 0.25), "young": (0.2, 0.1)}

DEFAULTS: dict[str, Any] = {
    "size": (424, 424),  # H, W pixels (the paper's stamps)
    "pixel_scale": gd.PIXEL_SCALE,  # arcsec per pixel
    "z_range": (0.01, 0.02),  # redshift of the central galaxy, uniform (the paper's sample)
    "psf": "gaussian",  # degradation kernel: gaussian | moffat
    "psf_beta": 3.0,  # Moffat beta of the kernel
    "psf_fwhm": 1.4,  # arcsec, number or [lo, hi] (paper: 1.4)
    "noise_factor": 1.2,  # degraded sky noise / original sky noise, number or [lo, hi] (paper: 1.2)
    "native_fwhm": 1.3,  # arcsec, the survey's own seeing in the clean target (SDSS median r)
    "p_empty": 0.0,  # probability of a sky-only stamp
    "p_star": 0.0,  # probability of a lone-star stamp
    "p_companion": 0.1,  # probability of a companion galaxy (galaxy stamps)
    "p_tidal": 0.1,  # probability of a tidal tail (galaxy stamps without a companion)
    "p_spiral": 0.6,  # probability of spiral arms
    "star_density": 1.0,  # foreground stars per arcmin^2
    "neighbour_density": 3.0,  # background galaxies per arcmin^2
    "star_flux": (4.0, 1000.0),  # nanomaggies (r), log-uniform: r = 21 ... 15
}


def options(**opts: Any) -> dict[str, Any]:
    """Defaults + opts, checked. Unknown names are a UserError (they come from the CLI)."""
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise UserError(f"synth galaxy: unknown option(s) {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(DEFAULTS)})")
    o = {**DEFAULTS, **{k: v for k, v in opts.items() if v is not None}}
    size = (o["size"], o["size"]) if isinstance(o["size"], int) else tuple(o["size"])
    if len(size) != 2 or min(size) < 8:
        raise UserError(f"synth galaxy: size {size}: expected H W of at least 8 pixels")
    o["size"] = (int(size[0]), int(size[1]))
    for key in ("psf_fwhm", "noise_factor", "z_range", "star_flux"):
        v = o[key]
        lo, hi = (v, v) if isinstance(v, (int, float)) else tuple(v) if len(v) == 2 else (None, None)
        if lo is None or not 0 < float(lo) <= float(hi):
            raise UserError(f"synth galaxy: {key} {v!r}: expected a positive number or [lo, hi] with 0 < lo <= hi")
        o[key] = (float(lo), float(hi))
    if o["psf"] not in gd.PSF_KINDS:
        raise UserError(f"synth galaxy: psf {o['psf']!r}: expected one of {', '.join(gd.PSF_KINDS)}")
    for key in ("p_empty", "p_star", "p_companion", "p_tidal", "p_spiral"):
        if not 0.0 <= float(o[key]) <= 1.0:
            raise UserError(f"synth galaxy: {key} {o[key]!r}: expected a probability in [0, 1]")
    if o["p_empty"] + o["p_star"] > 1.0:
        raise UserError("synth galaxy: p_empty + p_star exceeds 1")
    return o


def schema(**opts: Any) -> dict:
    h, w = options(**opts)["size"]
    return {"input_shape": (3, h, w), "target_shape": (3, h, w),
            "input_channels": [f"{b}_degraded" for b in gd.BANDS], "target_channels": list(gd.BANDS),
            "meta_spec": gd.meta_spec(h, w)}


def colour_factors(g_r: float, r_i: float) -> np.ndarray:
    """Flux in g, r, i per unit r-band flux."""
    return np.array([10 ** (-0.4 * g_r), 1.0, 10 ** (0.4 * r_i)])


def luminosity_distance_mpc(z: float) -> float:
    """Second-order Hubble law, good to ~1 % below z = 0.2."""
    return C_KMS * z / H0_KMS_MPC * (1 + (1 - Q0_DECEL) * z / 2)


def angular_size_arcsec(kpc: float, z: float) -> float:
    d_a = luminosity_distance_mpc(z) / (1 + z) ** 2
    return kpc / (d_a * 1000.0) * ARCSEC_PER_RAD


def apparent_flux_nmgy(abs_mag: float, z: float) -> float:
    return float(gd.mag_to_nmgy(abs_mag + 5 * math.log10(luminosity_distance_mpc(z) * 1e5)))


class _Scene:
    """Draws GalSim profiles onto the stamp's pixel grid through the native seeing."""

    def __init__(self, o: dict, galsim_seed: int):
        import galsim

        self.galsim, self.o = galsim, o
        self.h, self.w = o["size"]
        self.scale = float(o["pixel_scale"])
        self.psf = galsim.Moffat(beta=3.5, fwhm=float(o["native_fwhm"]))
        self.deviate = galsim.BaseDeviate(galsim_seed)

    def draw(self, profile, offset=(0.0, 0.0)) -> np.ndarray:
        """(H, W) image of profile (flux as given) through the native PSF, offset in pixels from the centre."""
        g = self.galsim
        img = g.Convolve(profile, self.psf).drawImage(nx=self.w, ny=self.h, scale=self.scale,
                                                      offset=offset, method="auto")
        return img.array.astype(np.float64)

    def area_arcmin2(self) -> float:
        return self.h * self.w * (self.scale / 60.0) ** 2


def _disk_plane(galsim, rng: np.random.Generator, r_e: float, flux: float, p_spiral: float, deviate):
    """Knots and (maybe) spiral arms of a face-on disk of half-light radius r_e (arcsec), total flux given."""
    parts = [galsim.RandomKnots(int(rng.integers(10, 40)), half_light_radius=r_e, flux=flux * 0.5, rng=deviate)]
    if rng.random() < p_spiral:
        pitch = math.radians(rng.uniform(12, 30))
        r0, phase = 0.35 * r_e, rng.uniform(0, 2 * math.pi)
        clumps = []
        for arm in range(2):
            for t in np.linspace(0.0, 1.6 * math.pi, 14):
                r = r0 * math.exp(t * math.tan(pitch))
                a = phase + arm * math.pi + t
                clumps.append((r * math.cos(a), r * math.sin(a), math.exp(-r / r_e)))
        weights = np.array([c[2] for c in clumps])
        weights = weights / weights.sum() * flux * 0.5
        parts += [galsim.Gaussian(sigma=0.12 * r_e, flux=float(f)).shift(x, y)
                  for (x, y, _), f in zip(clumps, weights)]
    else:
        parts[0] = parts[0].withFlux(flux)
    return galsim.Add(parts)


def _galaxy(scene: _Scene, rng: np.random.Generator, flux_r: float, r_e: float) -> tuple[np.ndarray, dict]:
    """Central galaxy (3, H, W) and its description; offset up to 2 pixels from the centre."""
    g = scene.galsim
    bt = rng.uniform(0.0, 0.6)
    young = rng.uniform(0.1, 0.3) * (1 - bt)
    cos_i = rng.uniform(0.2, 1.0)
    q = math.sqrt(cos_i ** 2 * (1 - DISK_THICKNESS ** 2) + DISK_THICKNESS ** 2)
    pa = rng.uniform(0, 180) * g.degrees
    offset = tuple(rng.uniform(-2, 2, 2))
    bulge = g.Sersic(n=rng.uniform(1.5, 4.0), half_light_radius=rng.uniform(0.15, 0.4) * r_e,
                     flux=bt * flux_r).shear(q=rng.uniform(0.7, 1.0), beta=pa)
    disk = g.Exponential(half_light_radius=r_e, flux=(1 - bt - young) * flux_r).shear(q=q, beta=pa)
    plane = _disk_plane(g, rng, r_e, young * flux_r, float(scene.o["p_spiral"]), scene.deviate).shear(q=q, beta=pa)
    image = np.zeros((3, scene.h, scene.w))
    for name, prof, flux in (("bulge", bulge, bt), ("disk", disk, 1 - bt - young), ("young", plane, young)):
        if flux > 0:
            image += colour_factors(*COLOURS[name])[:, None, None] * scene.draw(prof, offset)[None]
    return image, {"offset": offset, "pa": pa, "q": q}


def _feature(scene: _Scene, rng: np.random.Generator, kind: str, flux_r: float, r_e: float,
             offset) -> np.ndarray:
    """(3, H, W) clean image of a companion or a tidal tail around a galaxy at `offset`."""
    g = scene.galsim
    ang = rng.uniform(0, 2 * math.pi)
    if kind == "companion":
        d = rng.uniform(1.5, 3.0) * r_e
        prof = g.Sersic(n=rng.uniform(1.0, 3.0), half_light_radius=rng.uniform(0.2, 0.4) * r_e,
                        flux=rng.uniform(0.05, 0.2) * flux_r).shear(q=rng.uniform(0.5, 1.0),
                                                                    beta=rng.uniform(0, 180) * g.degrees)
        prof = prof.shift(d * math.cos(ang), d * math.sin(ang))
        colour = COLOURS["bulge" if rng.random() < 0.5 else "disk"]
    else:  # tidal tail: clumps along an arc that bends by up to 90 degrees
        bend = rng.choice([-1, 1]) * rng.uniform(0.6, 1.6)
        radii = np.linspace(1.5, 4.0, 16) * r_e
        angles = ang + bend * (radii - radii[0]) / (radii[-1] - radii[0])
        total = rng.uniform(0.05, 0.15) * flux_r
        w = np.linspace(1.0, 0.4, len(radii))
        w = w / w.sum() * total
        prof = g.Add([g.Gaussian(sigma=0.3 * r_e, flux=float(f)).shift(r * math.cos(a), r * math.sin(a))
                      for r, a, f in zip(radii, angles, w)])
        colour = COLOURS["disk"]
    return colour_factors(*colour)[:, None, None] * scene.draw(prof, offset)[None]


def _field(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """Foreground stars and background neighbour galaxies scattered over the stamp."""
    g, o = scene.galsim, scene.o
    image = np.zeros((3, scene.h, scene.w))
    for _ in range(rng.poisson(float(o["star_density"]) * scene.area_arcmin2())):
        image += _star(scene, rng, tuple(rng.uniform(-0.5, 0.5, 2) * (scene.w, scene.h)))[0]
    for _ in range(rng.poisson(float(o["neighbour_density"]) * scene.area_arcmin2())):
        flux = math.exp(rng.uniform(math.log(2.0), math.log(50.0)))
        prof = g.Exponential(half_light_radius=rng.uniform(0.5, 2.0), flux=flux)
        prof = prof.shear(q=rng.uniform(0.3, 1.0), beta=rng.uniform(0, 180) * g.degrees)
        colour = colour_factors(*COLOURS["bulge" if rng.random() < 0.4 else "disk"])
        off = tuple(rng.uniform(-0.5, 0.5, 2) * (scene.w, scene.h))
        image += colour[:, None, None] * scene.draw(prof, off)[None]
    return image


def _star(scene: _Scene, rng: np.random.Generator, offset) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = scene.o["star_flux"]
    flux = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    g_r = rng.uniform(0.3, 1.4)
    colour = colour_factors(g_r, 0.4 * g_r)
    img = scene.draw(scene.galsim.DeltaFunction(flux=flux), offset)
    return colour[:, None, None] * img[None], flux * colour


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return lo if lo == hi else float(rng.uniform(lo, hi))


def sample(rng: np.random.Generator, o: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """One stamp: degraded (3, H, W), clean (3, H, W), meta. Consumes rng in a fixed order."""
    h, w = o["size"]
    scene = _Scene(o, int(rng.integers(1, 2**31 - 1)))
    # Noise from its own stream: Poisson sampling takes a varying number of draws, and the scene's draws
    # must not depend on it (the same seed then gives the same galaxies at any degradation or redshift).
    noise_rng = np.random.default_rng(int(rng.integers(2**62)))
    u = rng.random()
    kind = "empty" if u < o["p_empty"] else "star" if u < o["p_empty"] + o["p_star"] else "galaxy"
    z = _uniform(rng, o["z_range"])
    clean = np.zeros((3, h, w))
    feature_map = np.zeros((h, w))
    feature = "none"
    flux = np.zeros(3)
    if kind == "star":
        clean, flux = _star(scene, rng, tuple(rng.uniform(-2, 2, 2)))
    elif kind == "galaxy":
        abs_mag = rng.uniform(-22.5, -19.5)
        r_kpc = 4.0 * 10 ** (-0.1 * (abs_mag + 21.0) + rng.normal(0, 0.15))
        flux_r, r_e = apparent_flux_nmgy(abs_mag, z), angular_size_arcsec(r_kpc, z)
        clean, info = _galaxy(scene, rng, flux_r, r_e)
        flux = clean.sum(axis=(1, 2))
        u = rng.random()
        feature = "companion" if u < o["p_companion"] else "tidal" if u < o["p_companion"] + o["p_tidal"] else "none"
        if feature != "none":
            feat = _feature(scene, rng, feature, flux_r, r_e, info["offset"])
            clean, feature_map = clean + feat, feat[1]
        clean = clean + _field(scene, rng)
    psf_fwhm, noise_factor = _uniform(rng, o["psf_fwhm"]), _uniform(rng, o["noise_factor"])
    degraded, sigma = gd.degrade(noise_rng, clean, psf_fwhm, noise_factor, float(o["pixel_scale"]), o["psf"],
                                 float(o["psf_beta"]))
    meta = {"psf_fwhm": np.float32(psf_fwhm), "psf_beta": np.float32(o["psf_beta"] if o["psf"] == "moffat" else 0),
            "pixel_scale": np.float32(o["pixel_scale"]), "noise_sigma": sigma.astype(np.float32),
            "sky": gd.sky_per_pixel(float(o["pixel_scale"])).astype(np.float32),
            "redshift": np.float32(z if kind == "galaxy" else np.nan), "kind": np.int8(gd.KINDS.index(kind)),
            "feature": np.int8(gd.FEATURES.index(feature)), "feature_map": feature_map.astype(np.float32),
            "flux": flux.astype(np.float32)}
    return degraded.astype(np.float32), clean.astype(np.float32), meta


def generate(start: int, count: int, seed: int, **opts: Any) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Samples [start, start+count); block k of SYNTH_BLOCK samples draws from default_rng([seed, k]) in order
    (hpcgan.data.format.synth_samples), so a range that ends inside a block gives the same samples."""
    o = options(**opts)
    h, w = o["size"]
    chunk = max(1, min(64, (64 * 2**20) // (4 * 8 * h * w)))  # bound the memory of one yielded block
    yield from synth_samples(start, count, seed, lambda rng: sample(rng, o), chunk)
