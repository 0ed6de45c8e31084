"""Conditional generator and discriminator for tracks: residual MLPs in a rotation-aligned local frame.

Both networks first turn the hits into features that do not depend on where the track points:
the hits are rotated by the azimuth phi_ref of their (masked) mean direction and shifted by their
mean z, so a network sees psi_l (the hit's azimuth relative to phi_ref) and dz_l (its z relative to
the mean), which is what the helix fit itself is sensitive to. Without this, the fit's precision
(10 um on a 32 mm layer = 3e-4 rad) would drown in the 2 pi range of the absolute azimuth.

Generator: features + noise (drawn inside G from torch's RNG) -> residual MLP plus a linear skip (the
fit is close to linear in psi and dz) -> (q/pT, phi0 - phi_ref, eta, d0, z0 - z_ref) -> absolute
parameters -> the fitted point on every layer from the helix through those parameters (the same
closed form as the conventional fit, so points and parameters are always consistent).
Discriminator: hit features, the track's parameters in the local frame, and the pulls
(point - hit) / resolution on every layer with a hit (asinh-compressed), -> residual MLP -> one logit.
"""
from __future__ import annotations

import torch
from torch import nn

from hpcgan.data.helix import detector
from hpcgan.workloads.lhc import space

PSI_SCALE = 10.0  # psi feature = psi [rad] * 10 (|psi| <~ 0.6 rad at 1 m for pT = 0.5 GeV)
DZ_SCALE = 100.0  # mm per unit of the dz features and of z0 - z_ref


class ResBlock(nn.Module):
    def __init__(self, width: int, act: type = nn.SiLU):
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), act(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Geometry(nn.Module):
    """Detector constants as buffers (follow .to(device), not saved in checkpoints) + the local frame."""

    def __init__(self, n_layers: int):
        super().__init__()
        det = detector(n_layers)
        self.n_layers = n_layers
        self.bfield = det.bfield
        self.register_buffer("radii", torch.tensor(det.radius, dtype=torch.float32), persistent=False)
        self.register_buffer("sigma_rphi", torch.tensor(det.sigma_rphi, dtype=torch.float32), persistent=False)
        self.register_buffer("sigma_z", torch.tensor(det.sigma_z, dtype=torch.float32), persistent=False)

    def frame(self, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """cond (N, 4, L) in model space -> reference direction, reference z and per-layer local features."""
        cx, cy, cz, m = cond[:, 0], cond[:, 1], cond[:, 2], cond[:, 3]
        vx, vy = (m * cx).sum(1), (m * cy).sum(1)
        norm = torch.sqrt(vx * vx + vy * vy).clamp(min=1e-12)
        cr, sr = vx / norm, vy / norm
        a = cx * cr[:, None] + cy * sr[:, None]
        b = cy * cr[:, None] - cx * sr[:, None]
        psi = torch.atan2(b, a) * m
        z = cz * space.Z_SCALE
        z_ref = (m * z).sum(1) / m.sum(1).clamp(min=1)
        dz = (z - z_ref[:, None]) * m
        feats = torch.cat([psi * PSI_SCALE, dz / DZ_SCALE, m], dim=1)
        return {"cos": cr, "sin": sr, "phi": torch.atan2(sr, cr), "z_ref": z_ref, "feats": feats,
                "cx": cx, "cy": cy, "z": z, "mask": m}


class LHCGenerator(_Geometry):
    """G(cond) -> track in model space (N, 6 + 3L); noise_dim Gaussian numbers per track drawn inside."""

    def __init__(self, n_layers: int = 10, noise_dim: int = 16, hidden: int = 256, blocks: int = 4):
        super().__init__(n_layers)
        self.noise_dim = noise_dim
        n_feat = 3 * n_layers
        self.inp = nn.Linear(n_feat + noise_dim, hidden)
        self.blocks = nn.Sequential(*[ResBlock(hidden) for _ in range(blocks)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 5))
        self.skip = nn.Linear(n_feat, 5)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        f = self.frame(cond)
        noise = torch.randn(cond.shape[0], self.noise_dim, device=cond.device, dtype=cond.dtype)
        out = self.head(self.blocks(self.inp(torch.cat([f["feats"], noise], dim=1)))) + self.skip(f["feats"])
        out = out.float()
        qpt = out[:, 0] * space.QPT_SCALE
        phi0 = f["phi"] + out[:, 1] / PSI_SCALE
        eta = out[:, 2]
        d0 = out[:, 3] * space.D0_SCALE
        z0 = f["z_ref"] + out[:, 4] * DZ_SCALE
        pts = space.helix_points(qpt, phi0, eta, d0, z0, self.radii, self.bfield)
        params = torch.stack([qpt / space.QPT_SCALE, torch.cos(phi0), torch.sin(phi0), eta, d0 / space.D0_SCALE,
                              z0 / space.Z0_SCALE], dim=1)
        r = self.radii
        points = torch.stack([pts[..., 0] / r, pts[..., 1] / r, pts[..., 2] / space.Z_SCALE], dim=-1)
        return torch.cat([params, points.reshape(len(cond), -1)], dim=1)


class LHCDiscriminator(_Geometry):
    """D(cond, track) -> [logits (N, 1)]: is this the conventional fit of these hits?"""

    def __init__(self, n_layers: int = 10, hidden: int = 256, blocks: int = 3):
        super().__init__(n_layers)
        n_feat = 3 * n_layers + 6 + 4 * n_layers
        self.inp = nn.Linear(n_feat, hidden)
        self.blocks = nn.Sequential(*[ResBlock(hidden, act=lambda: nn.LeakyReLU(0.2)) for _ in range(blocks)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 1))

    def forward(self, cond: torch.Tensor, track: torch.Tensor) -> list[torch.Tensor]:
        f = self.frame(cond)
        t = track.float()
        cr, sr, m = f["cos"], f["sin"], f["mask"]
        # Parameters in the local frame.
        cos_d = t[:, 1] * cr + t[:, 2] * sr
        sin_d = t[:, 2] * cr - t[:, 1] * sr
        z0 = t[:, 5] * space.Z0_SCALE
        params = torch.stack([t[:, 0], sin_d * PSI_SCALE, cos_d, t[:, 3], t[:, 4],
                              (z0 - f["z_ref"]) / DZ_SCALE], dim=1)
        # The track's points: local position, and pulls against the hits where there are hits.
        pts = t[:, 6:].reshape(len(t), self.n_layers, 3)
        px, py, pz = pts[..., 0], pts[..., 1], pts[..., 2] * space.Z_SCALE
        psi_t = torch.atan2(py * cr[:, None] - px * sr[:, None], px * cr[:, None] + py * sr[:, None])
        dphi = torch.atan2(f["cx"] * py - f["cy"] * px, f["cx"] * px + f["cy"] * py)
        pull_rphi = torch.asinh(self.radii * dphi / self.sigma_rphi) * m
        pull_z = torch.asinh((pz - f["z"]) / self.sigma_z) * m
        local = torch.cat([psi_t * PSI_SCALE, (pz - f["z_ref"][:, None]) / DZ_SCALE], dim=1)
        x = torch.cat([f["feats"], params, pull_rphi, pull_z, local], dim=1)
        return [self.head(self.blocks(self.inp(x)))]
