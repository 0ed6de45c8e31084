"""Model space of the LHC workload: fixed physical scales (no file statistics), exact inverses.

File units (hpcgan.workloads.lhc.synth): inputs (N, 4, L) = x, y, z [mm], mask; targets (N, 5 + 3L) =
q/pT [1/GeV], phi0, eta, d0 [mm], z0 [mm], then x_l, y_l, z_l [mm] of the fitted point on each layer.

Model space, chosen so every component is O(1) and the angle has no 2 pi jump:
  cond (N, 4, L):   x / r_l, y / r_l (a unit vector for a hit on layer l), z / Z_SCALE, mask
  track (N, 6 + 3L): q/pT / QPT_SCALE, cos phi0, sin phi0, eta, d0 / D0_SCALE, z0 / Z0_SCALE,
                     then x_l / r_l, y_l / r_l, z_l / Z_SCALE per layer.
The scales are constants, so `to_data_units` needs nothing but the generated tensor. The reader's
own standardisation must be off (data.normalize: false in the lhc presets): `prepare` expects mm.
"""
from __future__ import annotations

import torch

from hpcgan.workloads.lhc.helix import C_LIGHT
from hpcgan.workloads.precision import full_precision

QPT_SCALE = 2.0  # 1/GeV: |q/pT| <= 2 for pT >= 0.5 GeV
D0_SCALE = 0.2  # mm: the fit's d0 resolution at low pT is a few 0.1 mm
Z0_SCALE = 50.0  # mm: the luminous region's length
Z_SCALE = 500.0  # mm: hit and point z


def n_params_model() -> int:
    return 6


def inputs_to_model(inputs: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """(N, 4, L) hits in mm -> cond in model space."""
    r = radii.to(inputs.dtype)
    return torch.stack([inputs[:, 0] / r, inputs[:, 1] / r, inputs[:, 2] / Z_SCALE, inputs[:, 3]], dim=1)


def inputs_to_data(cond: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    r = radii.to(cond.dtype)
    return torch.stack([cond[:, 0] * r, cond[:, 1] * r, cond[:, 2] * Z_SCALE, cond[:, 3]], dim=1)


def params_to_model(p: torch.Tensor) -> torch.Tensor:
    """(N, 5) q/pT, phi0, eta, d0, z0 in file units -> (N, 6) model space (the angle as cos, sin)."""
    return torch.stack([p[:, 0] / QPT_SCALE, torch.cos(p[:, 1]), torch.sin(p[:, 1]), p[:, 2],
                        p[:, 3] / D0_SCALE, p[:, 4] / Z0_SCALE], dim=1)


def params_to_data(m: torch.Tensor) -> torch.Tensor:
    """Inverse of `params_to_model` (phi0 = atan2(sin, cos))."""
    return torch.stack([m[:, 0] * QPT_SCALE, torch.atan2(m[:, 2], m[:, 1]), m[:, 3], m[:, 4] * D0_SCALE,
                        m[:, 5] * Z0_SCALE], dim=1)


def targets_to_model(targets: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """(N, 5 + 3L) fitted tracks in file units -> (N, 6 + 3L) model space."""
    n, L = targets.shape[0], radii.numel()
    params = params_to_model(targets[:, :5])
    pts = targets[:, 5:].reshape(n, L, 3)
    r = radii.to(targets.dtype)
    points = torch.stack([pts[..., 0] / r, pts[..., 1] / r, pts[..., 2] / Z_SCALE], dim=-1)
    return torch.cat([params, points.reshape(n, 3 * L)], dim=1)


def targets_to_data(track: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Inverse of `targets_to_model` (phi0 = atan2(sin, cos), so any (cos, sin) pair maps to an angle)."""
    n, L = track.shape[0], radii.numel()
    r = radii.to(track.dtype)
    params = params_to_data(track[:, :6])
    pts = track[:, 6:].reshape(n, L, 3)
    points = torch.stack([pts[..., 0] * r, pts[..., 1] * r, pts[..., 2] * Z_SCALE], dim=-1)
    return torch.cat([params, points.reshape(n, 3 * L)], dim=1)


@full_precision("lhc.helix_points")
def helix_points(qpt: torch.Tensor, phi0: torch.Tensor, eta: torch.Tensor, d0: torch.Tensor, z0: torch.Tensor,
                 radii: torch.Tensor, bfield: float) -> torch.Tensor:
    """Differentiable twin of hpcgan.workloads.lhc.helix.helix_points: (N,) params in file units -> (N, L, 3) mm.

    u is clipped just inside +-1 (asin's gradient is infinite at the edge); the arc uses a series
    for tiny curvature so straight tracks stay exact and gradients finite."""
    kappa = (-qpt * C_LIGHT * bfield)[:, None]
    p0, d, z00, e = phi0[:, None], d0[:, None], z0[:, None], eta[:, None]
    r = radii.to(qpt.dtype)[None, :]
    den = 2 * r * (1 + kappa * d)
    u = ((kappa * (r * r + d * d) + 2 * d) / den).clamp(-0.999, 0.999)
    phi = p0 + torch.asin(u)
    x, y = r * torch.cos(phi), r * torch.sin(phi)
    chord = torch.sqrt((x + d * torch.sin(p0)) ** 2 + (y - d * torch.cos(p0)) ** 2 + 1e-12)
    half = (kappa.abs() * chord / 2).clamp(max=0.999)
    safe = half.clamp(min=1e-4)
    arc = torch.where(half > 1e-4, chord * torch.asin(safe) / safe, chord * (1 + half * half / 6))
    z = z00 + arc * torch.sinh(e)
    return torch.stack([x, y, z], dim=-1)


# Nominal resolution of the reconstructed (q/pT, phi0, eta, d0, z0) for a true particle: a + b |q/pT|
# (measurement term + multiple scattering), read off the full chain (synth_lhc_fastsim, |eta| < 2, within a
# factor ~2 everywhere). It makes residuals O(1): the fast-simulation generator's output unit, the
# discriminator's and the two-sample classifier's features.
RESOLUTION_A = (2e-4, 1.5e-4, 3e-4, 0.01, 0.04)  # 1/GeV, rad, -, mm, mm
RESOLUTION_B = (0.015, 0.004, 0.004, 0.25, 0.35)  # the same per 1/GeV of |q/pT|


def resolution_scale(truth):
    """(N, >=5) true parameters in file units (numpy or torch) -> (N, 5) nominal resolution, same type."""
    qpt = abs(truth[:, :1])
    if isinstance(truth, torch.Tensor):
        a, b = (torch.tensor(v, dtype=truth.dtype, device=truth.device) for v in (RESOLUTION_A, RESOLUTION_B))
    else:
        import numpy as np

        a, b = np.array(RESOLUTION_A), np.array(RESOLUTION_B)
    return a + b * qpt
