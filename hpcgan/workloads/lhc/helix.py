"""Barrel tracker geometry, the helix track model and the conventional least-squares helix fit.

Units: lengths in mm, momenta in GeV, angles in rad, field in T. The solenoid field points along +z.

Track model (perigee parameters at the point of closest approach, PCA, to the z axis):
  kappa  signed transverse curvature [1/mm]: d(phi_dir)/ds = kappa along the transverse arc s.
         A charge q moving in B along +z turns clockwise for q > 0, so kappa = -q * C * B / pT with
         C = 0.299792458e-3 GeV/(T mm) (radius R[mm] = pT / (C B)).
         Stored as q/pT [1/GeV] = -kappa / (C B).
  phi0   direction of flight in the transverse plane at the PCA.
  d0     signed transverse impact parameter: PCA = d0 * (-sin phi0, cos phi0)
         (positive when the z axis lies to the right of the track).
  z0     z of the PCA.
  eta    pseudorapidity, cot(theta) = sinh(eta) = dz/ds.
The circle through the PCA with these parameters satisfies, for a point at radius r and azimuth Phi,
  kappa r^2 - 2 r (1 + kappa d0) sin(Phi - phi0) + kappa d0^2 + 2 d0 = 0,
so the outgoing crossing of the cylinder of radius r is at
  Phi(r) = phi0 + asin(u),  u = (kappa (r^2 + d0^2) + 2 d0) / (2 r (1 + kappa d0)),
reached after the transverse arc s(r) = 2/|kappa| asin(|kappa| c / 2) with c the chord from the PCA
(s = c when kappa = 0); the point's z is z0 + s sinh(eta). Both forms stay exact for straight tracks.

The conventional reconstruction (`fit_tracks`, vectorised; `fit_track`, one track at a time as a
conventional code does it; both give the same numbers):
  1. circle in r-phi: Karimaki's closed-form fit (NIM A305 (1991) 187) with weights 1/sigma_rphi^2,
  2. refined by `GN_ITERS` Gauss-Newton steps on the exact residuals r_i (Phi_i - Phi(r_i)),
     i.e. the distance along the layer, which is how the hits are measured,
  3. line in s-z: weighted least squares z_i = z0 + s_i cot(theta), weights 1/sigma_z^2,
  4. the fitted point on every layer (also where the hit is missing) from the fitted helix.
Multiple scattering is not in the fit's weights (a diagonal chi^2, as simple conventional fits do),
so the fit is close to optimal at high pT and slightly sub-optimal where scattering dominates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hpcgan.errors import UserError

C_LIGHT = 0.299792458e-3  # GeV / (T mm): pT = C_LIGHT * B * R
B_FIELD = 2.0  # T, solenoid along +z
PION_MASS = 0.13957  # GeV, used for beta in the Highland formula
GN_ITERS = 3  # Gauss-Newton refinements of the circle after the closed-form Karimaki fit
MIN_HITS = 5  # a track is fitted (and kept) with at least this many hits (fewer layers: all of them)
PARAM_NAMES = ("q_over_pt", "phi0", "eta", "d0", "z0")

# The default 10-layer barrel: 4 pixel layers, 6 strip layers (radii of a CMS/ATLAS-like tracker).
_DEFAULT_RADII = (32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1000.0)
PIXEL_MAX_RADIUS = 200.0  # mm: layers inside are pixels, outside strips
PIXEL = dict(half_length=400.0, x_over_x0=0.02, sigma_rphi=0.010, sigma_z=0.050)
STRIP = dict(half_length=1200.0, x_over_x0=0.03, sigma_rphi=0.025, sigma_z=0.500)
EFFICIENCY = 0.97  # per-layer hit efficiency (3 % inefficiency)


@dataclass(frozen=True)
class Detector:
    """Cylindrical barrel layers centred on the z axis (arrays of length n_layers).

    radius [mm], half_length [mm] (|z| covered), x_over_x0 (material per layer at normal incidence,
    sensor + support), sigma_rphi / sigma_z [mm] (Gaussian hit resolution along the layer's
    azimuth and along z), efficiency (probability that a crossing gives a hit)."""
    radius: np.ndarray
    half_length: np.ndarray
    x_over_x0: np.ndarray
    sigma_rphi: np.ndarray
    sigma_z: np.ndarray
    efficiency: float = EFFICIENCY
    bfield: float = B_FIELD

    @property
    def n_layers(self) -> int:
        return len(self.radius)

    @property
    def min_hits(self) -> int:
        return min(MIN_HITS, self.n_layers)


def detector(n_layers: int = 10, bfield: float = B_FIELD) -> Detector:
    """The default barrel for 10 layers; other counts spread radii geometrically over 32-1000 mm."""
    if not isinstance(n_layers, (int, np.integer)) or n_layers < 3:
        raise UserError(f"lhc layers: expected an integer >= 3 (a helix needs 3 points), got {n_layers!r}")
    radii = np.array(_DEFAULT_RADII if n_layers == 10 else np.geomspace(32.0, 1000.0, n_layers), dtype=np.float64)
    kind = [PIXEL if r < PIXEL_MAX_RADIUS else STRIP for r in radii]
    col = lambda k: np.array([d[k] for d in kind], dtype=np.float64)  # noqa: E731
    return Detector(radius=radii, half_length=col("half_length"), x_over_x0=col("x_over_x0"),
                    sigma_rphi=col("sigma_rphi"), sigma_z=col("sigma_z"), bfield=float(bfield))


# --- the helix -----------------------------------------------------------------------------------

def kappa_from_qpt(q_over_pt: np.ndarray, bfield: float = B_FIELD) -> np.ndarray:
    return -np.asarray(q_over_pt) * C_LIGHT * bfield


def qpt_from_kappa(kappa: np.ndarray, bfield: float = B_FIELD) -> np.ndarray:
    return -np.asarray(kappa) / (C_LIGHT * bfield)


def helix_points(params: np.ndarray, radii: np.ndarray, bfield: float = B_FIELD) -> np.ndarray:
    """(N, 5) perigee parameters -> (N, L, 3) crossing points (x, y, z) with the cylinders `radii`.

    A helix that never reaches a radius (|u| > 1, it curls up earlier) gets the point where it comes
    closest to that cylinder (u clipped to +-1) so the output is always finite."""
    p = np.asarray(params, dtype=np.float64)
    kappa = kappa_from_qpt(p[:, 0], bfield)[:, None]
    phi0, eta, d0, z0 = (p[:, i][:, None] for i in (1, 2, 3, 4))
    r = np.asarray(radii, dtype=np.float64)[None, :]
    u = np.clip((kappa * (r * r + d0 * d0) + 2 * d0) / (2 * r * (1 + kappa * d0)), -1.0, 1.0)
    phi = phi0 + np.arcsin(u)
    x, y = r * np.cos(phi), r * np.sin(phi)
    chord = np.hypot(x + d0 * np.sin(phi0), y - d0 * np.cos(phi0))
    z = z0 + _arc(chord, kappa) * np.sinh(eta)
    return np.stack([x, y, z], axis=-1)


def _arc(chord: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """Transverse arc length for a chord on a circle of curvature kappa (exact limit for kappa -> 0)."""
    half = np.abs(kappa) * chord / 2
    safe = np.where(half > 1e-12, half, 1.0)
    return np.where(half > 1e-12, chord * np.arcsin(np.minimum(safe, 1.0)) / safe, chord)


def perigee_from_state(pos: np.ndarray, phi_dir: np.ndarray, kappa: np.ndarray, cot_theta: np.ndarray,
                       bfield: float = B_FIELD) -> np.ndarray:
    """Point (N, 3) + direction of flight phi_dir + curvature -> (N, 5) perigee parameters w.r.t. the z axis."""
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    big = np.abs(kappa) > 1e-12
    k = np.where(big, kappa, 1.0)
    # Circle centre = pos + n(phi_dir) / kappa with n(phi) = (-sin, cos); the PCA lies on the line origin-centre.
    cx, cy = x - np.sin(phi_dir) / k, y + np.cos(phi_dir) / k
    sgn = np.sign(k)
    nx, ny = sgn * cx / np.hypot(cx, cy), sgn * cy / np.hypot(cx, cy)  # n(phi0) points from the PCA to the centre
    phi0_c = np.arctan2(-nx, ny)
    d0_c = sgn * np.hypot(cx, cy) - 1.0 / k
    # Straight line: phi0 = phi_dir, d0 = the signed distance of the origin-projection.
    phi0_l = phi_dir
    d0_l = -x * np.sin(phi_dir) + y * np.cos(phi_dir)
    phi0 = np.where(big, phi0_c, phi0_l)
    d0 = np.where(big, d0_c, d0_l)
    # Arc from the PCA to pos: the direction turns by kappa * s.
    dphi = np.angle(np.exp(1j * (phi_dir - phi0)))
    s_l = x * np.cos(phi_dir) + y * np.sin(phi_dir)
    s = np.where(big, dphi / k, s_l)
    z0 = z - s * cot_theta
    return np.stack([qpt_from_kappa(kappa, bfield), np.angle(np.exp(1j * phi0)), np.arcsinh(cot_theta), d0, z0], axis=1)


# --- the conventional fit, vectorised -------------------------------------------------------------

def fit_tracks(hits: np.ndarray, mask: np.ndarray, det: Detector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares helix fit of many tracks at once.

    hits (N, L, 3) measured x, y, z [mm] on the layers of `det`, mask (N, L) true where a hit exists.
    Returns params (N, 5) = (q/pT, phi0, eta, d0, z0), points (N, L, 3) = the fitted helix on every
    layer, ok (N,) = the track had at least 3 hits (params/points of the others are zeros)."""
    hits = np.asarray(hits, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if hits.ndim != 3 or hits.shape[1:] != (det.n_layers, 3) or m.shape != hits.shape[:2]:
        raise UserError(f"helix fit: expected hits (N, {det.n_layers}, 3) and mask (N, {det.n_layers}), "
                        f"got {hits.shape} and {m.shape}")
    ok = m.sum(axis=1) >= 3
    n = len(hits)
    if not ok.all():  # fit a harmless dummy helix in place of tracks with < 3 hits; zeroed at the end
        hits = hits.copy()
        m = m.copy()
        hits[~ok] = helix_points(np.array([[0.5, 0.0, 0.0, 0.0, 0.0]]), det.radius, det.bfield)[0]
        m[~ok] = True
    x, y, z = hits[..., 0], hits[..., 1], hits[..., 2]
    r = np.broadcast_to(det.radius, (n, det.n_layers))
    w = np.where(m, 1.0 / det.sigma_rphi ** 2, 0.0)
    rr = x * x + y * y
    rho = np.where(m, np.sqrt(rr), r)
    phi_hit = np.arctan2(y, x)

    # 1. Karimaki's closed form.
    sw = w.sum(axis=1)
    mean = lambda a: (w * a).sum(axis=1) / sw  # noqa: E731
    xm, ym, rm = mean(x), mean(y), mean(rr)
    cxx, cxy, cyy = mean(x * x) - xm * xm, mean(x * y) - xm * ym, mean(y * y) - ym * ym
    cxr, cyr, crr = mean(x * rr) - xm * rm, mean(y * rr) - ym * rm, mean(rr * rr) - rm * rm
    q1 = crr * cxy - cxr * cyr
    q2 = crr * (cxx - cyy) - cxr * cxr + cyr * cyr
    phi0 = 0.5 * np.arctan2(2 * q1, q2)
    phi0, kappa, d0 = _karimaki_finish(phi0, xm, ym, rm, cxr, cyr, crr, mean(np.cos(phi_hit)), mean(np.sin(phi_hit)))

    # 2. Gauss-Newton on the distances along the layers.
    for _ in range(GN_ITERS):
        res, jac = _rphi_residuals(phi_hit, rho, kappa, phi0, d0)
        jw = jac * w[..., None]
        a = np.einsum("nli,nlj->nij", jw, jac)
        b = -np.einsum("nli,nl->ni", jw, res)
        step = np.linalg.solve(a, b[..., None])[..., 0]
        kappa, phi0, d0 = kappa + step[:, 0], phi0 + step[:, 1], d0 + step[:, 2]

    # 3. Line in s-z.
    s = _arc_to_radius(rho, kappa, phi0, d0)
    wz = np.where(m, 1.0 / det.sigma_z ** 2, 0.0)
    zz = z
    swz = wz.sum(axis=1)
    sm, zm = (wz * s).sum(axis=1) / swz, (wz * zz).sum(axis=1) / swz
    cot = (wz * (s - sm[:, None]) * (zz - zm[:, None])).sum(axis=1) / (wz * (s - sm[:, None]) ** 2).sum(axis=1)
    z0 = zm - cot * sm

    params = np.stack([qpt_from_kappa(kappa, det.bfield), np.angle(np.exp(1j * phi0)), np.arcsinh(cot), d0, z0], axis=1)
    points = helix_points(params, det.radius, det.bfield)
    params[~ok] = 0.0
    points[~ok] = 0.0
    return params, points, ok


def _karimaki_finish(phi0, xm, ym, rm, cxr, cyr, crr, cos_mean, sin_mean):
    """Curvature and d0 from Karimaki's phi; phi is fixed up to pi, take the direction towards the hits."""
    flip = np.cos(phi0) * cos_mean + np.sin(phi0) * sin_mean < 0
    phi0 = np.where(flip, phi0 + np.pi, phi0)
    k = (np.sin(phi0) * cxr - np.cos(phi0) * cyr) / crr
    delta = -k * rm + np.sin(phi0) * xm - np.cos(phi0) * ym
    root = np.sqrt(np.maximum(1 - 4 * delta * k, 0.0))
    rho_k = 2 * k / root
    d_k = 2 * delta / (1 + root)
    # Karimaki's (rho, d) have the opposite sign convention to (kappa, d0) here.
    return phi0, -rho_k, -d_k


def _rphi_residuals(phi_hit, r, kappa, phi0, d0):
    """Residuals r (Phi_hit - Phi(r)) [mm] and their Jacobian w.r.t. (kappa, phi0, d0), shapes (N, L), (N, L, 3)."""
    k, p, d = kappa[:, None], phi0[:, None], d0[:, None]
    num = k * (r * r + d * d) + 2 * d
    den = 2 * r * (1 + k * d)
    u = np.clip(num / den, -0.999999, 0.999999)
    phi = p + np.arcsin(u)
    res = r * np.angle(np.exp(1j * (phi_hit - phi)))
    g = 1.0 / np.sqrt(1 - u * u)
    du_dk = ((r * r + d * d) * den - num * 2 * r * d) / (den * den)
    du_dd = ((2 * k * d + 2) * den - num * 2 * r * k) / (den * den)
    jac = np.stack([-r * g * du_dk, -r * np.ones_like(u), -r * g * du_dd], axis=-1)
    return res, jac


def _arc_to_radius(r, kappa, phi0, d0):
    """Transverse arc from the PCA to the helix's crossing of radius r (N, L)."""
    k, p, d = kappa[:, None], phi0[:, None], d0[:, None]
    u = np.clip((k * (r * r + d * d) + 2 * d) / (2 * r * (1 + k * d)), -1.0, 1.0)
    phi = p + np.arcsin(u)
    chord = np.hypot(r * np.cos(phi) + d * np.sin(p), r * np.sin(phi) - d * np.cos(p))
    return _arc(chord, k)


# --- the conventional fit, one track at a time ------------------------------------------------------

def fit_track(hits: np.ndarray, mask: np.ndarray, det: Detector) -> tuple[np.ndarray, np.ndarray, bool]:
    """The same fit for one track, written as a conventional per-track code (scalar loops over hits).

    hits (L, 3), mask (L,) -> params (5,), points (L, 3), ok. Agrees with `fit_tracks` to rounding."""
    idx = [i for i in range(det.n_layers) if mask[i]]
    if len(idx) < 3:
        return np.zeros(5), np.zeros((det.n_layers, 3)), False
    xs = [float(hits[i, 0]) for i in idx]
    ys = [float(hits[i, 1]) for i in idx]
    zs = [float(hits[i, 2]) for i in idx]
    ws = [1.0 / float(det.sigma_rphi[i]) ** 2 for i in idx]
    rs = [math.sqrt(x * x + y * y) for x, y in zip(xs, ys)]
    phis = [math.atan2(y, x) for x, y in zip(xs, ys)]
    sw = sum(ws)
    avg = lambda vals: sum(w * v for w, v in zip(ws, vals)) / sw  # noqa: E731
    rr = [x * x + y * y for x, y in zip(xs, ys)]
    xm, ym, rm = avg(xs), avg(ys), avg(rr)
    cxx = avg([x * x for x in xs]) - xm * xm
    cxy = avg([x * y for x, y in zip(xs, ys)]) - xm * ym
    cyy = avg([y * y for y in ys]) - ym * ym
    cxr = avg([x * r2 for x, r2 in zip(xs, rr)]) - xm * rm
    cyr = avg([y * r2 for y, r2 in zip(ys, rr)]) - ym * rm
    crr = avg([r2 * r2 for r2 in rr]) - rm * rm
    q1 = crr * cxy - cxr * cyr
    q2 = crr * (cxx - cyy) - cxr * cxr + cyr * cyr
    phi0 = 0.5 * math.atan2(2 * q1, q2)
    if math.cos(phi0) * avg([math.cos(p) for p in phis]) + math.sin(phi0) * avg([math.sin(p) for p in phis]) < 0:
        phi0 += math.pi
    k = (math.sin(phi0) * cxr - math.cos(phi0) * cyr) / crr
    delta = -k * rm + math.sin(phi0) * xm - math.cos(phi0) * ym
    root = math.sqrt(max(1 - 4 * delta * k, 0.0))
    kappa, d0 = -2 * k / root, -2 * delta / (1 + root)

    for _ in range(GN_ITERS):
        a = [[0.0] * 3 for _ in range(3)]
        b = [0.0] * 3
        for r, ph, w in zip(rs, phis, ws):
            num = kappa * (r * r + d0 * d0) + 2 * d0
            den = 2 * r * (1 + kappa * d0)
            u = min(max(num / den, -0.999999), 0.999999)
            dphi = ph - (phi0 + math.asin(u))
            res = r * math.atan2(math.sin(dphi), math.cos(dphi))
            g = 1.0 / math.sqrt(1 - u * u)
            jac = (-r * g * ((r * r + d0 * d0) * den - num * 2 * r * d0) / (den * den), -r,
                   -r * g * ((2 * kappa * d0 + 2) * den - num * 2 * r * kappa) / (den * den))
            for i in range(3):
                b[i] -= w * jac[i] * res
                for j in range(3):
                    a[i][j] += w * jac[i] * jac[j]
        step = np.linalg.solve(np.array(a), np.array(b))
        kappa, phi0, d0 = kappa + step[0], phi0 + step[1], d0 + step[2]

    ss = []
    for r in rs:
        u = min(max((kappa * (r * r + d0 * d0) + 2 * d0) / (2 * r * (1 + kappa * d0)), -1.0), 1.0)
        ph = phi0 + math.asin(u)
        chord = math.hypot(r * math.cos(ph) + d0 * math.sin(phi0), r * math.sin(ph) - d0 * math.cos(phi0))
        half = abs(kappa) * chord / 2
        ss.append(chord * math.asin(min(half, 1.0)) / half if half > 1e-12 else chord)
    wz = [1.0 / float(det.sigma_z[i]) ** 2 for i in idx]
    swz = sum(wz)
    sm = sum(w * s for w, s in zip(wz, ss)) / swz
    zm = sum(w * z for w, z in zip(wz, zs)) / swz
    cot = (sum(w * (s - sm) * (z - zm) for w, s, z in zip(wz, ss, zs))
           / sum(w * (s - sm) ** 2 for w, s in zip(wz, ss)))
    z0 = zm - cot * sm
    params = np.array([-kappa / (C_LIGHT * det.bfield), math.atan2(math.sin(phi0), math.cos(phi0)), math.asinh(cot), d0, z0])
    return params, helix_points(params[None], det.radius, det.bfield)[0], True


def fit_tracks_loop(hits: np.ndarray, mask: np.ndarray, det: Detector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`fit_track` over every track: the per-track reference for tests and the rate benchmark."""
    n = len(hits)
    params, points, ok = np.zeros((n, 5)), np.zeros((n, det.n_layers, 3)), np.zeros(n, dtype=bool)
    for i in range(n):
        params[i], points[i], ok[i] = fit_track(hits[i], mask[i], det)
    return params, points, ok
