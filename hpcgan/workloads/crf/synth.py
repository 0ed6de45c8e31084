"""Synthetic cloud-reflectance-field (CRF) data: meteorology in, RGB reflectance out.

A stand-in for the MERRA-2 / EPIC pairs of Schmidt et al. (2020), in the same
channel layout (44 inputs, 3 targets) so models and converters share one schema.

Inputs (channel order of the reference code, variable-major):
  0-9    U   zonal wind [m/s] at PRESSURE_LEVELS_HPA (1000 ... 200 hPa)
  10-19  T   temperature [K] at the same levels
  20-29  V   meridional wind [m/s]
  30-39  RH  relative humidity [0-1]
  40     scattering angle [deg] (nadir view: 180 deg minus the solar zenith angle)
  41     TS  surface temperature [K]
  42, 43 latitude, longitude [deg]
Targets: reflectance at 680, 551, 443 nm (R, G, B), in [0, 1].
Meta: tau (H, W) cloud optical thickness, cloud_fraction (tau > 1).

Random fields. Every anomaly field is Gaussian noise filtered in Fourier space
so that its 2-D power spectral density follows P(k) ~ k^-beta (k in cycles per
pixel, k = 0 removed), then scaled to unit variance. Levels are vertically
correlated as an AR(1) chain z_l = rho z_{l-1} + sqrt(1 - rho^2) e_l, which keeps
the spectrum and gives corr(level l, level l+m) = rho^m.

Physics (deliberately simple, every constant here):
- T(p) = T_ref * (p / 1000 hPa)^(R_d Gamma / g) + anomaly: a constant lapse rate
  Gamma = 6.5 K/km (R_d = 287.05 J/kg/K, g = 9.80665 m/s^2, exponent 0.190),
  T_ref = TS's large-scale part 300 K - 40 K sin^2(latitude).
- U grows with height (thermal wind): U0 + shear (1 - p/1000) + anomaly; V = V0 + anomaly.
- RH = logistic(logit(RH_mean(p)) + moisture + 1.5 anomaly), RH_mean from 0.80 at 1000 hPa to 0.40 at 200 hPa.
- Cloud water where RH exceeds RH_C = 0.75: c_l = ((RH_l - RH_C) / (1 - RH_C))^1.5, and the column
  optical thickness tau_col = TAU_MAX * sum_l w_l c_l with w_l the pressure thickness of level l
  (TAU_MAX = 60). The observed cloud adds small-scale texture that the inputs do not determine:
  tau = tau_col * exp(sigma t - sigma^2 / 2), t a unit-variance field with a shallower spectrum
  (texture_beta) and no power below TEXTURE_KMIN_CYCLES cycles per image (sigma = TEXTURE_SIGMA).
- Two-stream reflectance of a conservative-scattering layer lit at mu0 = cos(solar zenith)
  = -cos(scattering angle): R_atm = s / (2 mu0 + s), s = (1 - g) tau + tau_R(lambda) the similarity-scaled
  optical thickness (g = 0.85 for water droplets; Rayleigh g = 0 with tau_R = 0.0088 lambda[um]^-4.05).
  This is the classic (1 - g) tau / (2 + (1 - g) tau) law (Bohren 1987) with a slant-path mu0.
  A Lambertian surface of albedo A under it (adding method, T = 1 - R for a conservative layer):
  R = R_atm + (1 - R_atm)^2 A / (1 - R_atm A). A is dark ocean, or snow/sea ice where TS < 271 K.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from hpcgan.data.format import synth_samples
from hpcgan.errors import UserError

PRESSURE_LEVELS_HPA = (1000.0, 925.0, 850.0, 700.0, 600.0, 500.0, 400.0, 300.0, 250.0, 200.0)
VARIABLES = ("U", "T", "V", "RH")
INPUT_CHANNELS = [f"{v}_{int(p)}" for v in VARIABLES for p in PRESSURE_LEVELS_HPA] + \
    ["scattering_angle", "TS", "lat", "lon"]
TARGET_CHANNELS = ["reflectance_680", "reflectance_551", "reflectance_443"]
WAVELENGTHS_UM = (0.680, 0.551, 0.443)

R_D, GRAVITY, LAPSE_RATE = 287.05, 9.80665, 0.0065  # J/kg/K, m/s^2, K/m
KAPPA_LAPSE = R_D * LAPSE_RATE / GRAVITY  # 0.190: T ~ p^kappa for a constant lapse rate
RH_C = 0.75  # relative humidity at which cloud water starts
TAU_MAX = 60.0  # column optical thickness of a saturated column
ASYMMETRY = 0.85  # cloud droplet asymmetry parameter g
TEXTURE_SIGMA = 0.6  # log-normal spread of the sub-grid texture
TEXTURE_KMIN_CYCLES = 4.0  # texture has no power below this many cycles per image
OCEAN_ALBEDO = (0.03, 0.04, 0.06)  # R, G, B
ICE_ALBEDO = (0.70, 0.75, 0.80)
FREEZE_K = 271.35  # sea water freezing point

DEFAULTS: dict[str, Any] = {
    "size": (256, 256),  # H, W pixels
    "beta": 3.0,  # spectral exponent of the meteorological anomalies, P(k) ~ k^-beta
    "texture_beta": 1.5,  # spectral exponent of the unresolved cloud texture
    "rho": 0.8,  # correlation of anomalies between adjacent pressure levels
    "pixel_deg": 0.05,  # grid spacing in degrees of latitude/longitude
}


def options(**opts: Any) -> dict[str, Any]:
    """Defaults + opts, checked. Unknown names are a UserError (they come from the CLI)."""
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise UserError(f"synth crf: unknown option(s) {', '.join(sorted(unknown))} (known: {', '.join(DEFAULTS)})")
    o = {**DEFAULTS, **{k: v for k, v in opts.items() if v is not None}}
    size = o["size"]
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(size) < 4:
        raise UserError(f"synth crf: size {size}: expected H W of at least 4 pixels")
    o["size"] = (int(size[0]), int(size[1]))
    if not 0 <= float(o["rho"]) < 1:
        raise UserError(f"synth crf: rho {o['rho']}: expected 0 <= rho < 1")
    return o


def schema(**opts: Any) -> dict:
    h, w = options(**opts)["size"]
    return {
        "input_shape": (len(INPUT_CHANNELS), h, w),
        "target_shape": (len(TARGET_CHANNELS), h, w),
        "input_channels": list(INPUT_CHANNELS),
        "target_channels": list(TARGET_CHANNELS),
        "meta_spec": {"tau": ((h, w), "float32"), "cloud_fraction": ((), "float32")},
    }


def spectral_filter(h: int, w: int, beta: float, kmin: float = 0.0) -> np.ndarray:
    """Amplitude k^(-beta/2) on the rfft2 grid (k in cycles/pixel); zero at k = 0 and below kmin."""
    k = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    amp = np.zeros_like(k)
    keep = (k > 0) & (k >= kmin)
    amp[keep] = k[keep] ** (-beta / 2)
    return amp


def power_law_fields(rng: np.random.Generator, count: int, amp: np.ndarray, h: int, w: int) -> np.ndarray:
    """`count` unit-variance Gaussian fields (count, h, w) with power spectral density ~ amp^2."""
    f = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((count, h, w))) * amp, s=(h, w))
    f -= f.mean(axis=(1, 2), keepdims=True)
    f /= np.maximum(f.std(axis=(1, 2), keepdims=True), 1e-12)
    return f


def vertical_chain(fields: np.ndarray, rho: float) -> np.ndarray:
    """AR(1) over levels (axis 0): unit variance, corr rho^m between levels m apart, spectrum unchanged."""
    out = np.empty_like(fields)
    out[0] = fields[0]
    c = math.sqrt(1 - rho * rho)
    for level in range(1, len(fields)):
        out[level] = rho * out[level - 1] + c * fields[level]
    return out


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def reflectance(tau: np.ndarray, mu0: np.ndarray, albedo: np.ndarray) -> np.ndarray:
    """Two-stream RGB reflectance (3, H, W) of cloud + Rayleigh layer over a Lambertian surface (see module doc).

    tau (H, W) cloud optical thickness, mu0 (H, W) cosine of the solar zenith angle, albedo (3, H, W)."""
    tau_r = 0.0088 * np.asarray(WAVELENGTHS_UM)[:, None, None] ** -4.05
    s = (1 - ASYMMETRY) * tau[None] + tau_r
    r_atm = s / (2 * mu0[None] + s)
    r = r_atm + (1 - r_atm) ** 2 * albedo / (1 - r_atm * albedo)
    return np.clip(r, 0.0, 1.0)


class _Filters:
    def __init__(self, o: dict):
        h, w = o["size"]
        self.h, self.w = h, w
        self.meteo = spectral_filter(h, w, float(o["beta"]))
        self.texture = spectral_filter(h, w, float(o["texture_beta"]), kmin=TEXTURE_KMIN_CYCLES / min(h, w))
        p = np.asarray(PRESSURE_LEVELS_HPA)
        edges = np.concatenate([[1013.25], (p[1:] + p[:-1]) / 2, [p[-1] - (p[-2] - p[-1]) / 2]])
        self.layer_weight = (edges[:-1] - edges[1:]) / (edges[0] - edges[-1])
        self.p = p
        self.rh_mean = 0.8 - 0.4 * (1000.0 - p) / 800.0
        self.rows = (np.arange(h) - (h - 1) / 2)[:, None]
        self.cols = (np.arange(w) - (w - 1) / 2)[None, :]


def sample(rng: np.random.Generator, o: dict, fl: _Filters) -> tuple[np.ndarray, np.ndarray, dict]:
    """One scene: inputs (44, H, W), targets (3, H, W), meta. Consumes rng in a fixed order."""
    h, w, nl = fl.h, fl.w, len(PRESSURE_LEVELS_HPA)
    rho = float(o["rho"])
    anomalies = power_law_fields(rng, 4 * nl + 1, fl.meteo, h, w)
    texture = power_law_fields(rng, 1, fl.texture, h, w)[0]
    lat0, lon0 = rng.uniform(-60, 60), rng.uniform(-180, 180)
    u0, shear, v0, moist = rng.normal(0, 5), rng.uniform(5, 30), rng.normal(0, 4), rng.normal(0, 0.7)
    theta0, dtheta_r, dtheta_c = rng.uniform(120, 170), rng.uniform(-5, 5), rng.uniform(-5, 5)

    deg = float(o["pixel_deg"])
    lat = np.broadcast_to(lat0 - fl.rows * deg, (h, w))
    lon = np.broadcast_to((lon0 + fl.cols * deg + 180.0) % 360.0 - 180.0, (h, w))
    t_ref = 300.0 - 40.0 * np.sin(np.radians(lat)) ** 2
    ts = t_ref + 3.0 * anomalies[4 * nl]
    p = fl.p[:, None, None]
    a_u, a_t, a_v, a_rh = (vertical_chain(anomalies[i * nl:(i + 1) * nl], rho) for i in range(4))
    u = u0 + shear * (1 - p / 1000.0) + 4.0 * a_u
    t = t_ref[None] * (p / 1000.0) ** KAPPA_LAPSE + 2.0 * a_t
    v = v0 + 4.0 * a_v
    rh_mean = fl.rh_mean[:, None, None]
    rh = _logistic(np.log(rh_mean / (1 - rh_mean)) + moist + 1.5 * a_rh)
    theta = np.clip(theta0 + (dtheta_r * fl.rows + dtheta_c * fl.cols) / max(h, w), 95.0, 179.0)

    cloud_water = np.clip((rh - RH_C) / (1 - RH_C), 0.0, 1.0) ** 1.5
    tau_col = TAU_MAX * np.tensordot(fl.layer_weight, cloud_water, axes=1)
    tau = tau_col * np.exp(TEXTURE_SIGMA * texture - TEXTURE_SIGMA ** 2 / 2)
    mu0 = -np.cos(np.radians(theta))
    ice = _logistic((FREEZE_K - ts) / 1.0)
    albedo = np.asarray(OCEAN_ALBEDO)[:, None, None] * (1 - ice) + np.asarray(ICE_ALBEDO)[:, None, None] * ice
    target = reflectance(tau, mu0, albedo)

    inputs = np.concatenate([u, t, v, rh, theta[None], ts[None], lat[None], lon[None]]).astype(np.float32)
    meta = {"tau": tau.astype(np.float32), "cloud_fraction": np.float32((tau > 1.0).mean())}
    return inputs, target.astype(np.float32), meta


def generate(start: int, count: int, seed: int, **opts: Any) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Samples [start, start+count) in blocks; block k of SYNTH_BLOCK samples draws from default_rng([seed, k]).

    Samples are drawn one after another from the block's generator, so a range
    that ends inside a block gives the same samples as the full block.
    """
    o = options(**opts)
    fl = _Filters(o)
    h, w = o["size"]
    chunk = max(1, min(64, (256 * 2**20) // (4 * 48 * h * w)))  # bound the memory of one yielded block
    yield from synth_samples(start, count, seed, lambda rng: sample(rng, o, fl), chunk)
