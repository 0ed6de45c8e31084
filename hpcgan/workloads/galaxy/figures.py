"""Galaxy figures: rows of stamps shown as i, r, g -> R, G, B colour images in the model's asinh space,
with r-band residuals (restored - truth) beside them."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hpcgan.workloads.crf.figures import _save


def colour(stretched: np.ndarray, top: float) -> np.ndarray:
    """(3, H, W) g, r, i in model space -> (H, W, 3) RGB in [0, 1], scaled so `top` is white."""
    return np.clip(np.moveaxis(stretched[::-1], 0, -1) / max(top, 1e-6), 0.0, 1.0)


def restoration_grid(panels: Mapping[str, np.ndarray], truth_key: str, residual_keys: tuple[str, ...],
                     path: Path, title: str = "", max_rows: int = 4) -> Path:
    """One row per stamp: each panel (N, 3, H, W, model space) in colour, then r-band residuals vs truth."""
    names = list(panels)
    truth = panels[truth_key]
    n = min(max_rows, truth.shape[0])
    cols = len(names) + len(residual_keys)
    fig = Figure(figsize=(2.0 * cols, 2.0 * n + (0.4 if title else 0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        top = float(np.percentile(truth[r], 99.5))
        for c, name in enumerate(names):
            axes[r, c].imshow(colour(panels[name][r], top), origin="lower")
            axes[r, c].set_title(name if r == 0 else "", fontsize=9)
        span = max(float(np.abs(truth[r, 1]).max()) * 0.3, 1e-6)
        for j, name in enumerate(residual_keys):
            ax = axes[r, len(names) + j]
            ax.imshow(panels[name][r, 1] - truth[r, 1], cmap="RdBu_r", vmin=-span, vmax=span, origin="lower")
            ax.set_title(f"{name} - truth (r)" if r == 0 else "", fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path, title)
