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

from hpcgan.workloads.lhc.helix import C_LIGHT, detector
from hpcgan.workloads.lhc import space
from hpcgan.workloads.precision import full_precision
from hpcgan.workloads import noise as sample_noise

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
        return local_frame(cond)


@full_precision("lhc.frame")
def local_frame(cond: torch.Tensor) -> dict[str, torch.Tensor]:
    """The local frame (fp32: psi carries the fit's 3e-4 rad precision, below bf16's resolution)."""
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
    return {"cos": cr, "sin": sr, "phi": torch.atan2(sr, cr), "z_ref": z_ref, "feats": feats, "psi": psi,
            "cx": cx, "cy": cy, "z": z, "mask": m}


@full_precision("lhc.linear_seed")
def linear_seed(f: dict, radii: torch.Tensor, sigma_rphi: torch.Tensor, sigma_z: torch.Tensor, bfield: float) -> dict:
    """A parameter-free linearised helix estimate from the local-frame hits (a fixed layer of G).

    Small-angle helix: psi(r) = (phi0 - phi_ref) + asin(kappa r / 2 + d0 / r) ~ a + b / r + c r / 2, and
    z(r) ~ z0 + r cot(theta); both are linear least squares over the layers with a hit (weights 1/sigma^2),
    solved for all tracks at once. The asin and arc-length non-linearities (up to ~7 % in kappa at
    pT = 0.5 GeV) are left to the network, which predicts corrections to this seed."""
    m = f["mask"]
    r = radii[None, :]
    basis = torch.stack([torch.ones_like(m), 1.0 / r.expand_as(m), r.expand_as(m) / 2], dim=-1)  # (N, L, 3)
    w = m * (r / sigma_rphi[None, :]) ** 2
    a = torch.einsum("nl,nli,nlj->nij", w, basis, basis) + 1e-9 * torch.eye(3, device=m.device)
    b = torch.einsum("nl,nli,nl->ni", w, basis, f["psi"])
    coef = torch.linalg.solve(a, b)
    wz = m / sigma_z[None, :] ** 2
    sw, sr, sz = wz.sum(1), (wz * r).sum(1), (wz * f["z"]).sum(1)
    srr, srz = (wz * r * r).sum(1), (wz * r * f["z"]).sum(1)
    det = (sw * srr - sr * sr).clamp(min=1e-12)
    cot = (sw * srz - sr * sz) / det
    z0 = (srr * sz - sr * srz) / det
    psi_fit = (basis * coef[:, None, :]).sum(-1)
    return {"dphi0": coef[:, 0], "d0": coef[:, 1], "qpt": -coef[:, 2] / (C_LIGHT * bfield), "eta": torch.asinh(cot),
            "z0": z0, "pull_rphi": torch.asinh(r * (f["psi"] - psi_fit) / sigma_rphi[None, :]) * m,
            "pull_z": torch.asinh((f["z"] - z0[:, None] - r * cot[:, None]) / sigma_z[None, :]) * m}


@full_precision("lhc.helix_refine")
def helix_refine(f: dict, seed: dict, radii: torch.Tensor, sigma_rphi: torch.Tensor, sigma_z: torch.Tensor,
                 bfield: float, iters: int) -> dict:
    """Gauss-Newton refinement of `linear_seed` on the exact helix (a fixed, parameter-free physics layer of G).

    `iters` Gauss-Newton steps on the distances along the layers r (psi - Phi(r)), Phi(r) = phi0 + asin(u),
    u = (kappa (r^2 + d0^2) + 2 d0) / (2 r (1 + kappa d0)) (the model of hpcgan.workloads.lhc.helix, in the
    local frame), then the s-z line z = z0 + s cot(theta) with the exact transverse arc s: the least-squares
    problem the conventional fit solves, started from the linear seed instead of Karimaki's circle. Without
    it the network has to learn the seed's asin and arc-length errors (up to ~7 % in kappa at pT = 0.5 GeV)
    to the fit's precision (~1 %), and what it does not learn widens q/pT. Runs in float64: the normal
    matrix of (kappa, phi0, d0) spans ~11 orders of magnitude. Returns the keys of `linear_seed`."""
    dt = torch.float64
    m, psi, z = f["mask"].to(dt), f["psi"].to(dt), f["z"].to(dt)
    r = radii.to(dt)[None, :]
    srp, sz_ = sigma_rphi.to(dt)[None, :], sigma_z.to(dt)[None, :]
    w = m / srp ** 2
    kappa = -seed["qpt"].to(dt) * C_LIGHT * bfield
    phi0, d0 = seed["dphi0"].to(dt), seed["d0"].to(dt)
    eye = 1e-30 * torch.eye(3, dtype=dt, device=m.device)

    def crossing(kappa, phi0, d0):
        k, d = kappa[:, None], d0[:, None]
        num, den = k * (r * r + d * d) + 2 * d, 2 * r * (1 + k * d)
        u = (num / den).clamp(-0.999999, 0.999999)
        dphi = psi - phi0[:, None] - torch.asin(u)
        return r * torch.atan2(torch.sin(dphi), torch.cos(dphi)), k, d, num, den, u

    for _ in range(iters):
        res, k, d, num, den, u = crossing(kappa, phi0, d0)
        g = torch.rsqrt(1 - u * u)
        du_dk = ((r * r + d * d) * den - num * 2 * r * d) / (den * den)
        du_dd = ((2 * k * d + 2) * den - num * 2 * r * k) / (den * den)
        jac = torch.stack([-r * g * du_dk, -r.expand_as(u), -r * g * du_dd], dim=-1)  # (N, L, 3)
        a = torch.einsum("nl,nli,nlj->nij", w, jac, jac) + eye
        b = -torch.einsum("nl,nli,nl->ni", w, jac, res)
        step = torch.linalg.solve(a, b)
        kappa, phi0, d0 = kappa + step[:, 0], phi0 + step[:, 1], d0 + step[:, 2]
    res, k, d, _, _, u = crossing(kappa, phi0, d0)
    # The s-z line with the exact transverse arc from the PCA to each layer's crossing.
    phi = phi0[:, None] + torch.asin(u)
    p0 = phi0[:, None]
    chord = torch.sqrt((r * torch.cos(phi) + d * torch.sin(p0)) ** 2 + (r * torch.sin(phi) - d * torch.cos(p0)) ** 2)
    half = k.abs() * chord / 2
    safe = half.clamp(min=1e-12, max=1.0)
    s = torch.where(half > 1e-12, chord * torch.asin(safe) / safe, chord)
    wz = m / sz_ ** 2
    swz = wz.sum(1).clamp(min=1e-30)
    sm, zm = (wz * s).sum(1) / swz, (wz * z).sum(1) / swz
    cot = (wz * (s - sm[:, None]) * (z - zm[:, None])).sum(1) / (wz * (s - sm[:, None]) ** 2).sum(1).clamp(min=1e-30)
    z0 = zm - cot * sm
    f32 = torch.float32
    return {"dphi0": phi0.to(f32), "d0": d0.to(f32), "qpt": (-kappa / (C_LIGHT * bfield)).to(f32),
            "eta": torch.asinh(cot).to(f32), "z0": z0.to(f32),
            "pull_rphi": (torch.asinh(res / srp) * m).to(f32),
            "pull_z": (torch.asinh((z - z0[:, None] - s * cot[:, None]) / sz_) * m).to(f32)}


# Output scales of G's corrections to the seed at |q/pT| = 2/GeV (typical fit - seed differences there);
# the q/pT correction is relative.
CORR = {"qpt": 0.1, "dphi0": 0.01, "eta": 0.01, "d0": 0.5, "z0": 1.0}


class LHCGenerator(_Geometry):
    """G(cond) -> track in model space (N, 6 + 3L); noise_dim Gaussian numbers per track drawn inside.

    seed=True (default): the network corrects `linear_seed`; seed=False: it predicts the local-frame
    parameters from the raw local hit features alone (much slower to train to the fit's precision).
    refine_iters > 0 (with seed): the seed is first refined by that many Gauss-Newton steps of the exact
    helix (`helix_refine`, no parameters), so the network corrects only what is left (0: the old model).
    corr_scale multiplies the correction scales CORR (a refined seed needs far smaller corrections, and
    a random network's first corrections are then pure spread). zero_init: the output layers (head and
    skip) start at zero, so the untrained G is the seed itself and training only moves it where it helps."""

    def __init__(self, n_layers: int = 10, noise_dim: int = 16, hidden: int = 256, blocks: int = 4,
                 seed: bool = True, refine_iters: int = 0, corr_scale: float = 1.0, zero_init: bool = False):
        super().__init__(n_layers)
        self.noise_dim = noise_dim
        self.seed = seed
        self.refine_iters = refine_iters if seed else 0
        self.corr = {k: v * corr_scale for k, v in CORR.items()}
        n_feat = 3 * n_layers + (5 + 2 * n_layers if seed else 0)
        self.inp = nn.Linear(n_feat + noise_dim, hidden)
        self.blocks = nn.Sequential(*[ResBlock(hidden) for _ in range(blocks)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 5))
        self.skip = nn.Linear(n_feat, 5)
        if zero_init:
            for layer in (self.head[-1], self.skip):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        f = self.frame(cond)
        feats = f["feats"]
        if self.seed:
            s = linear_seed(f, self.radii, self.sigma_rphi, self.sigma_z, self.bfield)
            if self.refine_iters:
                s = helix_refine(f, s, self.radii, self.sigma_rphi, self.sigma_z, self.bfield, self.refine_iters)
            seed_feats = torch.stack([s["qpt"] / space.QPT_SCALE, s["dphi0"] * PSI_SCALE, s["eta"],
                                      s["d0"] / space.D0_SCALE, (s["z0"] - f["z_ref"]) / DZ_SCALE], dim=1)
            feats = torch.cat([feats, seed_feats, s["pull_rphi"], s["pull_z"]], dim=1)
        noise = sample_noise.randn(cond.shape[0], (self.noise_dim,), like=cond)
        out = self.head(self.blocks(self.inp(torch.cat([feats, noise], dim=1)))) + self.skip(feats)
        out = out.float()
        if self.seed:
            # The seed is exact for straight tracks and its errors grow with curvature, so the corrections
            # scale with |q/pT| (relative for q/pT itself): precision is not lost on stiff tracks.
            bend = s["qpt"].abs().detach() / space.QPT_SCALE
            qpt = s["qpt"] * (1 + out[:, 0] * self.corr["qpt"])
            phi0 = f["phi"] + s["dphi0"] + out[:, 1] * self.corr["dphi0"] * bend
            eta = s["eta"] + out[:, 2] * self.corr["eta"] * bend
            d0 = s["d0"] + out[:, 3] * self.corr["d0"] * bend
            z0 = s["z0"] + out[:, 4] * self.corr["z0"] * bend
        else:
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
