"""CRF figures: sample grids (inputs / real RGB / generated RGB), power spectra on log axes, inter-band
coherence and chroma histograms.

Figures are built on matplotlib's object API with the Agg canvas, so nothing
touches pyplot's global state or needs a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Reference channel order of the 44 CRF inputs (Schmidt et al. 2020).
_LEVELS_HPA = (1000, 925, 850, 700, 600, 500, 400, 300, 250, 200)
REFERENCE_INPUTS = [f"{v}_{p}" for v in ("U", "T", "V", "RH") for p in _LEVELS_HPA] + \
    ["scattering_angle", "TS", "lat", "lon"]
# Shown in grids when the inputs are in the reference order: humidity drives clouds.
_SHOWN_REFERENCE = ("RH_850", "RH_500", "TS")


def shown_input_channels(n_channels: int, max_shown: int = 3) -> list[tuple[int, str]]:
    """(index, label) of the input channels a grid shows."""
    if n_channels == len(REFERENCE_INPUTS):
        return [(REFERENCE_INPUTS.index(n), n) for n in _SHOWN_REFERENCE[:max_shown]]
    return [(i, f"input {i}") for i in range(min(n_channels, max_shown))]


def rgb_for_display(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, H, W) reflectances -> (N, H, W, 3) in [0, 1], both stretched by the real images' 99.5th
    percentile so dim clouds are visible and real and fake stay comparable."""
    scale = max(float(np.percentile(real, 99.5)), 1e-6)

    def show(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.shape[1] == 1:
            x = np.repeat(x, 3, axis=1)
        return np.clip(np.moveaxis(x[:, :3], 1, -1) / scale, 0.0, 1.0)

    return show(real), show(fake)


def sample_grid(inputs: np.ndarray, real: np.ndarray, fake: np.ndarray, path: Path, title: str = "",
                max_samples: int = 4) -> Path:
    """One row per sample: a few input channels, real RGB, generated RGB."""
    n = min(max_samples, inputs.shape[0])
    channels = shown_input_channels(inputs.shape[1])
    real_rgb, fake_rgb = rgb_for_display(real[:n], fake[:n])
    cols = len(channels) + 2
    fig = Figure(figsize=(2.2 * cols, 2.2 * n + (0.4 if title else 0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        for c, (idx, label) in enumerate(channels):
            axes[r, c].imshow(inputs[r, idx], cmap="viridis")
            axes[r, c].set_title(label if r == 0 else "", fontsize=9)
        axes[r, -2].imshow(real_rgb[r])
        axes[r, -1].imshow(fake_rgb[r])
        if r == 0:
            axes[r, -2].set_title("real RGB", fontsize=9)
            axes[r, -1].set_title("generated RGB", fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path, title)


def spectra_plot(k: np.ndarray, curves: Mapping[str, Mapping[str, np.ndarray]], path: Path,
                 band_edges: Sequence[float] = (), title: str = "") -> Path:
    """One panel per channel (e.g. gray, R, G, B); in each, P(k) of every named model on log-log axes.
    ``curves[panel][label]`` is a spectrum; the label 'real' is drawn in black."""
    panels = list(curves)
    fig = Figure(figsize=(4.0 * len(panels), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for label, p in curves[panel].items():
            ax.loglog(k, np.maximum(p, 1e-30), label=label, **_style(label))
        for e in band_edges:
            ax.axvline(e, color="gray", ls=":", lw=0.8)
        ax.set_title(panel)
        ax.set_xlabel("wavenumber k (cycles per image)")
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("radially averaged power P(k)")
    axes[0].legend(fontsize=8)
    return _save(fig, path, title)


def colour_plot(k: np.ndarray, coherence: Mapping[str, Mapping[str, np.ndarray]], bins: np.ndarray,
                chroma_hist: Mapping[str, Mapping[str, np.ndarray]], path: Path, band_edges: Sequence[float] = (),
                title: str = "") -> Path:
    """Top row: coherence C(k) of each band pair (``coherence[label][pair]``); bottom row: the chroma histogram
    of each band (``chroma_hist[label][band]`` on ``bins``). The label 'real' is drawn in black."""
    pairs = list(next(iter(coherence.values())))
    bands = list(next(iter(chroma_hist.values())))
    cols = max(len(pairs), len(bands))
    fig = Figure(figsize=(4.0 * cols, 6.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, cols, squeeze=False)
    centres = 0.5 * (np.asarray(bins)[1:] + np.asarray(bins)[:-1])
    for ax, pair in zip(axes[0], pairs):
        for label, curves in coherence.items():
            ax.semilogx(k, curves[pair], label=label, **_style(label))
        for e in band_edges:
            ax.axvline(e, color="gray", ls=":", lw=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"coherence {pair}")
        ax.set_xlabel("wavenumber k (cycles per image)")
        ax.grid(True, which="both", alpha=0.25)
    for ax, band in zip(axes[1], bands):
        for label, hists in chroma_hist.items():
            ax.semilogy(centres, np.maximum(hists[band], 1e-3), label=label, **_style(label))
        ax.set_title(f"chroma {band} (band - luminance)")
        ax.set_xlabel("reflectance")
        ax.grid(True, which="both", alpha=0.25)
    axes[0, 0].set_ylabel("magnitude-squared coherence")
    axes[1, 0].set_ylabel("density")
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path, title)


def _style(label: str) -> dict:
    return dict(color="black", lw=2.0) if label == "real" else dict(lw=1.4)


def _save(fig: Figure, path: Path, title: str) -> Path:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
