"""Inter-band structure of RGB reflectance: coherence between bands per wavenumber, and chroma.

Why: cloud reflectance at 443-680 nm is nearly grey, so the three bands move
together down to the finest scale. A generator can match every band's power
spectrum with texture drawn independently per band (coloured speckle); the
power spectra cannot see that, the coherence between bands and the spread of
each pixel's colour around its grey value can.

Coherence: the magnitude-squared coherence of bands a, b at wavenumber k,
C_ab(k) = S_ab(k)^2 / (P_a(k) P_b(k)), with S_ab the radially binned
co-spectrum and P the power spectra (spectrum.radial_cross_spectrum), each
averaged over the samples before the ratio is taken (a per-sample ratio of
one field would be 1 by construction). 1: the bands' Fourier modes are
proportional; 0: independent. Chroma: each band minus the pixel's luminance
(spectrum.grayscale), in reflectance units.

A mask `valid` (N, H, W) (the data's meta/valid; None: all pixels) restricts
everything to the defined pixels: the spectra taper the others to zero, the
chroma statistics leave them out.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np

from hpcgan.workloads.crf import spectrum

# A generated set whose high-band coherence is below the real set's by more than this is flagged as
# coloured texture. Independent per-band noise carrying half of a band's power gives a drop of ~0.75
# (S_ab / sqrt(P_a P_b) halves), two real sample sets differ by < 0.02 (tests/crf/test_crf_colour.py).
COHERENCE_GAP_FLAG = 0.1
CHROMA_BINS = np.linspace(-0.15, 0.15, 61)  # reflectance units; the histogram's outer bins collect the tails


def band_pairs(names: list[str]) -> list[tuple[int, int, str]]:
    """(i, j, "A-B") for every pair of bands, in channel order: R-G, R-B, G-B for RGB."""
    return [(i, j, f"{names[i]}-{names[j]}") for i, j in combinations(range(len(names)), 2)]


def coherence(images: np.ndarray, names: list[str],
              valid: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(N, C, H, W) -> (k, {"A-B": C_ab(k)}) for every band pair, spectra averaged over the N samples."""
    a = np.asarray(images, np.float64)
    if a.ndim != 4 or a.shape[1] < 2 or a.shape[1] != len(names):
        raise ValueError(f"coherence: expected (N, C, H, W) with C = {len(names)} >= 2 bands, got shape {a.shape}")
    k, power = spectrum.radial_power_spectrum(a, None if valid is None else np.asarray(valid)[:, None])
    power = power.mean(0)
    out = {}
    for i, j, pair in band_pairs(names):
        _, cross = spectrum.radial_cross_spectrum(a[:, i], a[:, j], valid)
        out[pair] = cross.mean(0) ** 2 / np.maximum(power[i] * power[j], 1e-300)
    return k, out


def coherence_per_band(k: np.ndarray, curves: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{band: {pair: mean C(k) over the band's wavenumbers, ..., "mean": over the pairs}}."""
    out = {}
    for band, m in spectrum.band_masks(k).items():
        row = {pair: float(c[m].mean()) for pair, c in curves.items()}
        row["mean"] = float(np.mean(list(row.values())))
        out[band] = row
    return out


def chroma(images: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) RGB -> (N, 3, H, W): each band minus the pixel's luminance (0 everywhere for grey)."""
    a = np.asarray(images, np.float64)
    return a - spectrum.grayscale(a)[:, None]


def valid_chroma(images: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(N, 3, H, W) RGB -> (3, number of valid pixels): each band's chroma at the valid pixels."""
    c = np.moveaxis(chroma(images), 1, 0)
    return c.reshape(len(c), -1) if valid is None else c[:, np.asarray(valid) != 0]


def chroma_stats(images: np.ndarray, names: list[str], valid: np.ndarray | None = None) -> dict:
    """Distribution of chroma over the valid pixels: per band ("bands") mean, std, 1/50/99th percentiles
    and a histogram on CHROMA_BINS; "rms" over all bands and pixels (the colour speckle's amplitude)."""
    c = valid_chroma(images, valid)
    bands = {}
    for i, n in enumerate(names):
        v = c[i]
        hist, _ = np.histogram(np.clip(v, CHROMA_BINS[0], CHROMA_BINS[-1]), bins=CHROMA_BINS, density=True)
        p1, p50, p99 = np.percentile(v, [1, 50, 99])
        bands[n] = {"mean": float(v.mean()), "std": float(v.std()), "p1": float(p1), "p50": float(p50),
                    "p99": float(p99), "hist": hist.tolist()}
    return {"bins": CHROMA_BINS.tolist(), "rms": float(np.sqrt((c ** 2).mean())), "bands": bands}


def histograms(stats: dict) -> dict[str, np.ndarray]:
    """{band: chroma histogram} from chroma_stats' result (or its JSON form)."""
    return {n: np.asarray(b["hist"]) for n, b in stats["bands"].items()}


def wasserstein_1d(a: np.ndarray, b: np.ndarray, n_quantiles: int = 512) -> float:
    """Earth mover's distance between two 1-D samples, as the mean gap between their quantile functions."""
    q = (np.arange(n_quantiles) + 0.5) / n_quantiles
    return float(np.abs(np.quantile(np.ravel(a), q) - np.quantile(np.ravel(b), q)).mean())


def compare(real: np.ndarray, fake: np.ndarray, names: list[str], valid: np.ndarray | None = None) -> dict:
    """Real against generated (N, 3, H, W) reflectance: coherence curves and band means for both, the gap
    real - generated per band, the flag (high-band gap > COHERENCE_GAP_FLAG), chroma statistics and the
    chroma W1 distance per band, all over the valid pixels."""
    k, c_real = coherence(real, names, valid)
    _, c_fake = coherence(fake, names, valid)
    b_real, b_fake = coherence_per_band(k, c_real), coherence_per_band(k, c_fake)
    gap = {band: b_real[band]["mean"] - b_fake[band]["mean"] for band in b_real}
    ch_real, ch_fake = valid_chroma(real, valid), valid_chroma(fake, valid)
    return {
        "k": k.tolist(),
        "coherence_curves": {"real": {p: c.tolist() for p, c in c_real.items()},
                      "fake": {p: c.tolist() for p, c in c_fake.items()}},
        "coherence_bands": {"real": b_real, "fake": b_fake, "gap": gap},
        "coloured_texture": bool(gap["high"] > COHERENCE_GAP_FLAG),
        "coherence_gap_flag": COHERENCE_GAP_FLAG,
        "chroma": {"real": chroma_stats(real, names, valid), "fake": chroma_stats(fake, names, valid),
                   "w1": {n: wasserstein_1d(ch_real[i], ch_fake[i]) for i, n in enumerate(names)}},
    }
