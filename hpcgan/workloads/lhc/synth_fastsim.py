"""Synthetic fast-simulation pairs: the true particle -> what the full chain reconstructs from it.

The full chain is the one of hpcgan.workloads.lhc.synth (same detector, same particles, same fit):
propagation with multiple scattering, hit smearing and inefficiency, then the helix fit. Here every
particle is kept: a track with fewer than min(5, L) hits is lost by the reconstruction and gets
found = 0 with zero parameters. The default acceptance, |eta| < 2 and pT from 0.3 GeV, reaches past
the barrel's coverage (|eta| ~ 1.7 at the outer pixel layers), so the efficiency falls from 1 to
about 0.4 at large |eta| and the generator has an efficiency to learn as well as the resolution.

Layout:
  inputs  (N, 5)   the true q_over_pt [1/GeV], phi0 [rad], eta, d0 [mm], z0 [mm] at the vertex
  targets (N, 6)   the reconstructed q_over_pt, phi0, eta, d0, z0 (zeros when lost), found (1 / 0)
  meta/true_params (N, 5)  = inputs (so the evaluation finds the truth where it does for `lhc`)
  meta/n_hits (N,)         hits on the track
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from hpcgan.workloads.lhc import synth as synth_lhc
from hpcgan.workloads.lhc.helix import PARAM_NAMES, Detector, detector, fit_tracks
from hpcgan.errors import UserError

SYNTH_BLOCK = synth_lhc.SYNTH_BLOCK
DEFAULTS = dict(synth_lhc.DEFAULTS, pt_min=0.3, eta_max=2.0)
TARGET_CHANNELS = list(PARAM_NAMES) + ["found"]


def _options(opts: dict) -> dict:
    given = {k: v for k, v in opts.items() if v is not None}
    unknown = [k for k in given if k not in DEFAULTS]
    if unknown:
        raise UserError(f"synth lhc-fastsim: unknown option {unknown[0]!r} (known: {', '.join(DEFAULTS)})")
    return synth_lhc._options(dict(DEFAULTS, **given))


def schema(**opts) -> dict:
    o = _options(opts)
    detector(int(o["layers"]), o["bfield"])  # checks the layer count
    return dict(input_shape=(5,), target_shape=(6,), input_channels=list(PARAM_NAMES), target_channels=TARGET_CHANNELS,
                meta_spec={"true_params": ((5,), "float32"), "n_hits": ((), "float32")})


def generate(start: int, count: int, seed: int, **opts) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Samples [start, start + count) in blocks of SYNTH_BLOCK; block k uses default_rng([seed, k])."""
    o = _options(opts)
    det = detector(int(o["layers"]), o["bfield"])
    for rng, k in synth_lhc.rng_blocks(start, count, seed, "lhc-fastsim"):
        particles = synth_lhc.draw_particles(rng, SYNTH_BLOCK, o)
        truth, reco, n_hits = full_chain(rng, particles, det)
        yield truth[:k], reco[:k], {"true_params": truth[:k], "n_hits": n_hits[:k]}


def full_chain(rng: np.random.Generator, particles: dict, det: Detector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulation + reconstruction of given particles -> truth (n, 5), reco (n, 6) with `found`, n_hits (n,).

    Hits are rounded to float32 before the fit, as in the `lhc` files."""
    hits, mask, truth = synth_lhc.propagate(rng, particles, det)
    found = mask.sum(axis=1) >= det.min_hits
    params, _, _ = fit_tracks(hits.astype(np.float32), mask & found[:, None], det)
    params[~found] = 0.0
    reco = np.concatenate([params, found[:, None].astype(np.float64)], axis=1)
    return truth.astype(np.float32), reco.astype(np.float32), mask.sum(axis=1).astype(np.float32)
