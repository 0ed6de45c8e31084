"""Synthetic LHC tracks: a barrel tracker in a solenoid, hits with scattering and smearing, the helix fit.

Detector (hpcgan.workloads.lhc.helix.detector, units mm / GeV / T / rad): 10 cylindrical layers at
r = 32, 72, 116, 172 (pixels: |z| < 400, X/X0 = 0.02, sigma_rphi = 10 um, sigma_z = 50 um) and
r = 260, 360, 500, 660, 820, 1000 (strips: |z| < 1200, X/X0 = 0.03, sigma_rphi = 25 um, sigma_z = 0.5 mm),
B = 2 T along z, hit efficiency 0.97 per layer. Other layer counts spread the radii geometrically.

Particles (pions, one per sample): charge +-1 with equal probability; pT from a falling power law
dN/dpT ~ pT^-3 on [0.5, 100] GeV (inverse-CDF sampling); eta uniform in [-1, 1]; phi uniform;
vertex x, y ~ N(0, 0.02 mm), z ~ N(0, 50 mm). pT >= 0.5 GeV means R >= 834 mm, so every track
leaves the outermost layer (2R > 1000 mm) unless scattering bends it back.

Propagation, layer by layer: the exact helix from the current point to the next cylinder (closed
form, see helix.py); at each crossing inside the layer's length the particle scatters in the layer's
material with the Highland width (PDG)
    theta0 = 13.6 MeV / (beta c p) * sqrt(x) * (1 + 0.038 ln(x / beta^2)),  x = X/X0 / |cos(incidence)|,
applied as two independent Gaussian kinks (polar angle, and azimuth / sin(theta)); |p| is conserved
(no energy loss). A crossing gives a hit with probability `efficiency`; the hit is the crossing point
smeared by N(0, sigma_rphi) along the layer's azimuth and N(0, sigma_z) along z (it stays on the
cylinder). Missing hits are zeros with mask 0.

Samples keep only tracks with >= min(5, L) hits (drawn again otherwise, inside the same block RNG).
The conventional reconstruction (helix.fit_tracks on the float32-rounded hits) gives the targets.

Layout (channel axis 1):
  inputs  (N, 4, L)      channels x, y, z [mm], mask (1 hit / 0 none), layer l = l-th radius
  targets (N, 5 + 3L)    q_over_pt [1/GeV], phi0 [rad], eta, d0 [mm], z0 [mm], then the fitted
                         point on each layer: x_l, y_l, z_l [mm] for l = 0..L-1
  meta/true_params (N, 5)  the same 5 parameters of the generated particle at its vertex
  meta/charge (N,)         +1 / -1
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from hpcgan.workloads.lhc.helix import (C_LIGHT, PARAM_NAMES, PION_MASS, Detector, detector, fit_tracks, helix_points,
                               perigee_from_state)
from hpcgan.errors import UserError

SYNTH_BLOCK = 1024  # samples per RNG block (the same constant as hpcgan.data.format.SYNTH_BLOCK)
DEFAULTS = dict(layers=10, bfield=2.0, pt_min=0.5, pt_max=100.0, pt_power=3.0, eta_max=1.0,
                vertex_xy=0.02, vertex_z=50.0)


def _options(opts: dict) -> dict:
    out = dict(DEFAULTS)
    for k, v in opts.items():
        if v is None:
            continue  # CLI options of other workloads (--size) arrive as None
        if k not in DEFAULTS:
            raise UserError(f"synth lhc: unknown option {k!r} (known: {', '.join(DEFAULTS)})")
        out[k] = v
    if not (0 < out["pt_min"] < out["pt_max"]):
        raise UserError(f"synth lhc: expected 0 < pt_min < pt_max, got {out['pt_min']} and {out['pt_max']}")
    return out


def target_channels(n_layers: int) -> list[str]:
    return list(PARAM_NAMES) + [f"{c}_{l}" for l in range(n_layers) for c in ("x", "y", "z")]


def schema(**opts) -> dict:
    o = _options(opts)
    det = detector(int(o["layers"]), o["bfield"])
    L = det.n_layers
    return dict(input_shape=(4, L), target_shape=(5 + 3 * L,), input_channels=["x", "y", "z", "mask"],
                target_channels=target_channels(L),
                meta_spec={"true_params": ((5,), "float32"), "charge": ((), "float32")})


def generate(start: int, count: int, seed: int, **opts) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Samples [start, start + count) in blocks of SYNTH_BLOCK; block k uses default_rng([seed, k])."""
    o = _options(opts)
    det = detector(int(o["layers"]), o["bfield"])
    for rng, k in rng_blocks(start, count, seed, "lhc"):
        inputs, targets, meta = make_tracks(rng, SYNTH_BLOCK, det, o)
        yield inputs[:k], targets[:k], {name: v[:k] for name, v in meta.items()}


def rng_blocks(start: int, count: int, seed: int, kind: str) -> Iterator[tuple[np.random.Generator, int]]:
    """(rng of block k = default_rng([seed, k]), samples to keep from it) for samples [start, start + count)."""
    if start % SYNTH_BLOCK:
        raise UserError(f"synth {kind}: start {start} is not a multiple of {SYNTH_BLOCK}")
    end = start + count
    for b0 in range(start, end, SYNTH_BLOCK):
        yield np.random.default_rng([seed, b0 // SYNTH_BLOCK]), min(SYNTH_BLOCK, end - b0)


def make_tracks(rng: np.random.Generator, n: int, det: Detector, opts: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """n accepted tracks: simulate, keep those with enough hits, fit; returns the file layout (float32)."""
    parts: list[tuple] = []
    have = 0
    while have < n:
        hits, mask, truth, charge = simulate(rng, int(1.2 * n) + 16, det, opts)
        keep = mask.sum(axis=1) >= det.min_hits
        parts.append((hits[keep], mask[keep], truth[keep], charge[keep]))
        have += int(keep.sum())
    hits, mask, truth, charge = (np.concatenate(a)[:n] for a in zip(*parts))
    hits = hits.astype(np.float32)
    params, points, ok = fit_tracks(hits, mask, det)
    assert ok.all()
    inputs = np.concatenate([hits.transpose(0, 2, 1), mask[:, None, :].astype(np.float32)], axis=1)
    targets = np.concatenate([params, points.reshape(n, -1)], axis=1).astype(np.float32)
    return inputs, targets, {"true_params": truth.astype(np.float32), "charge": charge.astype(np.float32)}


def simulate(rng: np.random.Generator, n: int, det: Detector, opts: dict):
    """n particles through the barrel -> hits (n, L, 3) [mm] float64, mask (n, L), truth (n, 5), charge (n,).

    Every random number is drawn with a fixed shape in a fixed order, so a block is reproducible."""
    particles = draw_particles(rng, n, opts)
    hits, mask, truth = propagate(rng, particles, det)
    return hits, mask, truth, particles["charge"]


def draw_particles(rng: np.random.Generator, n: int, opts: dict) -> dict[str, np.ndarray]:
    """n pions at their vertex: charge, pt [GeV], eta, phi (direction at the vertex), vtx (n, 3) [mm]."""
    charge = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    a = 1.0 - opts["pt_power"]
    lo, hi = opts["pt_min"] ** a, opts["pt_max"] ** a
    pt = (lo + rng.random(n) * (hi - lo)) ** (1.0 / a)
    eta = rng.uniform(-opts["eta_max"], opts["eta_max"], n)
    phi = rng.uniform(-np.pi, np.pi, n)
    vtx = np.stack([rng.normal(0, opts["vertex_xy"], n), rng.normal(0, opts["vertex_xy"], n),
                    rng.normal(0, opts["vertex_z"], n)], axis=1)
    return {"charge": charge, "pt": pt, "eta": eta, "phi": phi, "vtx": vtx}


def propagate(rng: np.random.Generator, particles: dict[str, np.ndarray], det: Detector):
    """The detector's stochastic response to given particles -> hits (n, L, 3), mask (n, L), truth (n, 5).

    Called again with another rng on the same particles, it gives an independent response (the
    reference for 'the full chain against an independent sample of itself')."""
    charge, pt, eta, phi, vtx = (particles[k] for k in ("charge", "pt", "eta", "phi", "vtx"))
    n, L = len(pt), det.n_layers
    u_eff = rng.random((n, L))
    g_rphi, g_z = rng.standard_normal((n, L)), rng.standard_normal((n, L))
    g_ms = rng.standard_normal((n, L, 2))

    bfield = det.bfield
    theta = 2 * np.arctan(np.exp(-eta))
    p = pt / np.sin(theta)
    beta = p / np.sqrt(p * p + PION_MASS ** 2)
    kappa = -charge * C_LIGHT * bfield / pt
    truth = perigee_from_state(vtx, phi, kappa, 1 / np.tan(theta), bfield)

    hits, mask = np.zeros((n, L, 3)), np.zeros((n, L), dtype=bool)
    pos, phi_dir, alive = vtx.copy(), phi.copy(), np.ones(n, dtype=bool)
    for l in range(L):
        r = det.radius[l]
        pt_now = p * np.sin(theta)
        kappa = -charge * C_LIGHT * bfield / pt_now
        per = perigee_from_state(pos, phi_dir, kappa, 1 / np.tan(theta), bfield)
        d0 = per[:, 3]
        u = (kappa * (r * r + d0 * d0) + 2 * d0) / (2 * r * (1 + kappa * d0))
        alive &= np.abs(u) <= 1.0
        point = helix_points(per, np.array([r]), bfield)[:, 0]
        # Direction at the crossing: the PCA direction turned by kappa * arc.
        phi_at = per[:, 1] + np.arcsin(np.clip(u, -1, 1))
        chord = np.hypot(point[:, 0] + d0 * np.sin(per[:, 1]), point[:, 1] - d0 * np.cos(per[:, 1]))
        half = np.abs(kappa) * chord / 2
        arc = np.where(half > 1e-12, chord * np.arcsin(np.minimum(half, 1.0)) / np.maximum(half, 1e-300), chord)
        dir_at = per[:, 1] + kappa * arc
        inside = alive & (np.abs(point[:, 2]) <= det.half_length[l])
        hit = inside & (u_eff[:, l] < det.efficiency)
        phi_m = phi_at + g_rphi[:, l] * det.sigma_rphi[l] / r
        hits[:, l] = np.where(hit[:, None], np.stack([r * np.cos(phi_m), r * np.sin(phi_m),
                                                      point[:, 2] + g_z[:, l] * det.sigma_z[l]], axis=1), 0.0)
        mask[:, l] = hit
        # Multiple scattering in the layer's material (only where the particle crossed the layer).
        cos_inc = np.abs(np.sin(theta) * np.cos(dir_at - phi_at))
        x = det.x_over_x0[l] / np.maximum(cos_inc, 0.05)
        theta0 = 0.0136 / (beta * p) * np.sqrt(x) * (1 + 0.038 * np.log(np.maximum(x, 1e-12) / beta ** 2))
        theta0 = np.where(x > 0, theta0, 0.0)
        theta = np.where(inside, np.clip(theta + theta0 * g_ms[:, l, 0], 1e-3, np.pi - 1e-3), theta)
        phi_dir = np.where(inside, dir_at + theta0 * g_ms[:, l, 1] / np.sin(theta), dir_at)
        pos = np.where(alive[:, None], point, pos)
    return hits, mask, truth
