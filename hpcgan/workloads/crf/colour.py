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


# Chroma statistics come from a fine histogram (100 sub-bins per CHROMA_BINS bin, 5e-5 reflectance wide)
# and exact moment sums, both of which add over batches and ranks; percentiles and W1 are read from it, so
# they are exact to the sub-bin width inside the histogram's range (values beyond it count at its edges).
FINE_PER_BIN = 100
CHROMA_FINE = np.linspace(CHROMA_BINS[0], CHROMA_BINS[-1], (len(CHROMA_BINS) - 1) * FINE_PER_BIN + 1)


def coherence_from(power: np.ndarray, cross: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """C_ab(k) from the power spectra (C, K) and the co-spectra {"A-B": (K,)}, each summed (or averaged)
    over the same samples (the ratio is taken after the sum: module doc)."""
    return {pair: cross[pair] ** 2 / np.maximum(power[i] * power[j], 1e-300) for i, j, pair in band_pairs(names)}


def coherence(images: np.ndarray, names: list[str],
              valid: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(N, C, H, W) -> (k, {"A-B": C_ab(k)}) for every band pair, spectra averaged over the N samples."""
    a = np.asarray(images, np.float64)
    if a.ndim != 4 or a.shape[1] < 2 or a.shape[1] != len(names):
        raise ValueError(f"coherence: expected (N, C, H, W) with C = {len(names)} >= 2 bands, got shape {a.shape}")
    k, power, cross = _spectra(a, names, valid)
    return k, coherence_from(power, cross, names)


def _spectra(a: np.ndarray, names: list[str], valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(k, power spectra (C, K) and co-spectra {"A-B": (K,)}, each summed over the samples)."""
    k, power = spectrum.radial_power_spectrum(a, None if valid is None else np.asarray(valid)[:, None])
    cross = {pair: spectrum.radial_cross_spectrum(a[:, i], a[:, j], valid)[1].sum(0) for i, j, pair in band_pairs(names)}
    return k, power.sum(0), cross


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


def chroma_sums(images: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What a set of images adds to the chroma statistics: per band the fine histogram (C, len(CHROMA_FINE) - 1),
    the sum and the sum of squares of chroma over the valid pixels (C,)."""
    c = valid_chroma(images, valid)
    hist = np.stack([np.histogram(np.clip(v, CHROMA_FINE[0], CHROMA_FINE[-1]), bins=CHROMA_FINE)[0] for v in c])
    return {"hist": hist.astype(np.float64), "sum": c.sum(1), "sq": (c ** 2).sum(1)}


def _quantile(counts: np.ndarray, q: float) -> float:
    """The q-quantile of a histogram on CHROMA_FINE (linear within the sub-bin)."""
    cdf = np.cumsum(counts) / max(counts.sum(), 1e-300)
    i = min(int(np.searchsorted(cdf, q)), len(counts) - 1)
    below = cdf[i - 1] if i else 0.0
    frac = (q - below) / max(cdf[i] - below, 1e-300)
    return float(CHROMA_FINE[i] + np.clip(frac, 0.0, 1.0) * (CHROMA_FINE[i + 1] - CHROMA_FINE[i]))


def chroma_stats_from(sums: dict[str, np.ndarray], names: list[str]) -> dict:
    """Per band ("bands") mean, std, 1/50/99th percentiles and a density histogram on CHROMA_BINS; "rms" over
    all bands and pixels (the colour speckle's amplitude); from chroma_sums of any number of batches."""
    hist = np.asarray(sums["hist"])
    count = hist.sum(1)
    bands = {}
    for i, n in enumerate(names):
        mean = sums["sum"][i] / max(count[i], 1)
        coarse = hist[i].reshape(-1, FINE_PER_BIN).sum(1)
        density = coarse / max(count[i], 1) / np.diff(CHROMA_BINS)
        bands[n] = {"mean": float(mean), "std": float(np.sqrt(max(sums["sq"][i] / max(count[i], 1) - mean ** 2, 0.0))),
                    "p1": _quantile(hist[i], 0.01), "p50": _quantile(hist[i], 0.5), "p99": _quantile(hist[i], 0.99),
                    "hist": density.tolist()}
    return {"bins": CHROMA_BINS.tolist(), "rms": float(np.sqrt(np.sum(sums["sq"]) / max(count.sum(), 1))),
            "bands": bands}


def chroma_stats(images: np.ndarray, names: list[str], valid: np.ndarray | None = None) -> dict:
    """chroma_stats_from one set of images."""
    return chroma_stats_from(chroma_sums(images, valid), names)


def histograms(stats: dict) -> dict[str, np.ndarray]:
    """{band: chroma histogram} from chroma_stats' result (or its JSON form)."""
    return {n: np.asarray(b["hist"]) for n, b in stats["bands"].items()}


def wasserstein_hist(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between two histograms on CHROMA_FINE: the integral of |F_a - F_b|."""
    fa = np.cumsum(a) / max(np.sum(a), 1e-300)
    fb = np.cumsum(b) / max(np.sum(b), 1e-300)
    return float(np.sum(np.abs(fa - fb)[:-1] * np.diff(CHROMA_FINE)[1:]))


def compare_sums(real: np.ndarray, fake: np.ndarray, names: list[str],
                 valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What one batch of real and generated (N, 3, H, W) adds to compare_from: spectra and chroma sums."""
    out: dict[str, np.ndarray] = {}
    for tag, images in (("real", real), ("fake", fake)):
        a = np.asarray(images, np.float64)
        _, power, cross = _spectra(a, names, valid)
        out[f"power/{tag}"] = power
        out.update({f"cross/{tag}/{pair}": c for pair, c in cross.items()})
        out.update({f"chroma_{key}/{tag}": v for key, v in chroma_sums(a, valid).items()})
    return out


def compare_from(sums: dict[str, np.ndarray], names: list[str]) -> dict:
    """Real against generated: coherence curves and band means for both, the gap real - generated per band,
    the flag (high-band gap > COHERENCE_GAP_FLAG), chroma statistics and the chroma W1 distance per band, all
    over the valid pixels; from compare_sums of any number of batches (and ranks)."""
    pairs = [pair for _, _, pair in band_pairs(names)]
    k = np.arange(1, np.asarray(sums["power/real"]).shape[-1] + 1, dtype=np.float64)
    curves = {tag: coherence_from(np.asarray(sums[f"power/{tag}"]),
                                  {p: np.asarray(sums[f"cross/{tag}/{p}"]) for p in pairs}, names)
              for tag in ("real", "fake")}
    b_real, b_fake = coherence_per_band(k, curves["real"]), coherence_per_band(k, curves["fake"])
    gap = {band: b_real[band]["mean"] - b_fake[band]["mean"] for band in b_real}
    chroma_of = {tag: {key: np.asarray(sums[f"chroma_{key}/{tag}"]) for key in ("hist", "sum", "sq")}
                 for tag in ("real", "fake")}
    return {
        "k": k.tolist(),
        "coherence_curves": {tag: {p: c.tolist() for p, c in curves[tag].items()} for tag in ("real", "fake")},
        "coherence_bands": {"real": b_real, "fake": b_fake, "gap": gap},
        "coloured_texture": bool(gap["high"] > COHERENCE_GAP_FLAG),
        "coherence_gap_flag": COHERENCE_GAP_FLAG,
        "chroma": {"real": chroma_stats_from(chroma_of["real"], names),
                   "fake": chroma_stats_from(chroma_of["fake"], names),
                   "w1": {n: wasserstein_hist(chroma_of["real"]["hist"][i], chroma_of["fake"]["hist"][i])
                          for i, n in enumerate(names)}},
    }


def compare(real: np.ndarray, fake: np.ndarray, names: list[str], valid: np.ndarray | None = None) -> dict:
    """compare_from one pass over real and generated (N, 3, H, W) reflectance."""
    return compare_from(compare_sums(real, fake, names, valid), names)
