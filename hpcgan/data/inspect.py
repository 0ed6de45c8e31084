"""Human-readable summary of a dataset (schema, storage, stats, provenance) and a sample figure."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from hpcgan.data.format import attrs_of, count_nonfinite, open_read
from hpcgan.data.reader import SMALL_DATASET_BYTES, resolve_paths


def describe_file(path: str) -> str:
    lines = [f"== {path} ({os.path.getsize(path) / 2**20:.1f} MiB)"]
    with open_read(path) as f:
        a = attrs_of(f, path)
        lines.append(f"format version {a['format_version']}  workload {a['workload']!r}  samples {a['n']}  "
                     f"storage {a['storage_dtype']}")
        names = ["inputs", "targets"] + [f"meta/{k}" for k in sorted(a["meta"])]
        for name in names:
            d = f[name]
            comp = f" {d.compression}" if d.compression else ""
            lines.append(f"  {name:<20} shape {str(d.shape):<22} dtype {str(d.dtype):<8} chunks {d.chunks}{comp}")
        for kind in ("input", "target"):
            chans = a[f"{kind}_channels"] or [str(i) for i in range(a[f"{kind}_shape"][0])]
            st = a[f"{kind}_stats"]
            lines.append(f"  {kind} channels ({len(chans)})" + ("" if st else ": no statistics stored"))
            if st:
                lines.append(f"    {'channel':<20} {'mean':>12} {'std':>12} {'min':>12} {'max':>12}")
                for i, c in enumerate(chans):
                    lines.append(f"    {c:<20} " + " ".join(f"{st[k][i]:>12.5g}" for k in ("mean", "std", "min", "max")))
        lines.append("  provenance: " + json.dumps(a["provenance"], sort_keys=True))
    return "\n".join(lines)


def nonfinite_warnings(path: str, limit_bytes: int = SMALL_DATASET_BYTES) -> list[str]:
    """'warning: ...' per dataset holding NaN or Inf. Files above limit_bytes are not read
    (inspect stays quick; `hpcgan data validate` reads everything): a 'note: ...' says so."""
    size = os.path.getsize(path)
    if size > limit_bytes:
        return [f"note: {path}: values not checked for NaN/Inf ({size / 2**20:.0f} MiB is over "
                f"{limit_bytes / 2**20:.0f} MiB; run 'hpcgan data validate {path}')"]
    out = []
    with open_read(path) as f:
        for name in ("inputs", "targets"):
            values, samples, first = count_nonfinite(f, name)
            if values:
                out.append(f"warning: {path}: dataset '{name}': {values} non-finite value(s) (NaN or Inf) in "
                           f"{samples} sample(s), first at sample {first}")
    return out


def describe(path_or_glob: str) -> str:
    paths = resolve_paths(path_or_glob)
    text = "\n".join(describe_file(p) for p in paths)
    return text + ("\n" + summary_line(paths) if len(paths) > 1 else "")


def plot_sample(path_or_glob: str, out: str | os.PathLike, index: int = 0) -> str:
    """One sample as a figure: images (C, H, W) per channel (targets with 3 channels also as RGB); vectors as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = resolve_paths(path_or_glob)
    with open_read(paths[0]) as f:
        a = attrs_of(f, paths[0])
        if not 0 <= index < a["n"]:
            from hpcgan.errors import UserError
            raise UserError(f"{paths[0]}: sample {index} out of range 0..{a['n'] - 1}")
        x, y = np.asarray(f["inputs"][index], np.float32), np.asarray(f["targets"][index], np.float32)
    chans_in = a["input_channels"] or [str(i) for i in range(x.shape[0])]
    chans_out = a["target_channels"] or [str(i) for i in range(y.shape[0])]
    if x.ndim == 3:
        show_in = list(range(0, x.shape[0], max(1, x.shape[0] // 8)))[:8]
        panels = [(chans_in[i], x[i]) for i in show_in] + [(chans_out[i], y[i]) for i in range(y.shape[0])]
        rgb = y.shape[0] == 3
        cols = 4
        rows = -(-(len(panels) + rgb) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
        for ax, (title, img) in zip(axes.flat, panels):
            im = ax.imshow(img, cmap="viridis")
            ax.set_title(title, fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046)
        if rgb:
            ax = axes.flat[len(panels)]
            ax.imshow(np.clip(np.moveaxis(y, 0, -1), 0, 1))
            ax.set_title("targets as RGB", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, arr, names, title in ((axes[0], x, chans_in, "inputs"), (axes[1], y, chans_out, "targets")):
            if arr.ndim == 1:  # one value per channel (e.g. fitted track parameters)
                ax.bar(range(len(arr)), arr)
                ax.set_xticks(range(len(arr)), names, rotation=90, fontsize=6)
            else:
                arr = arr.reshape(arr.shape[0], -1)
                for i in range(arr.shape[0]):
                    ax.plot(arr[i], marker=".", label=names[i])
                ax.legend(fontsize=6)
            ax.set_title(title)
    fig.suptitle(f"{Path(paths[0]).name} sample {index} ({a['workload']})")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return str(out)


def summary_line(paths: Sequence[str]) -> str:
    n = 0
    for p in paths:
        with open_read(p) as f:
            n += attrs_of(f, p)["n"]
    return f"{len(paths)} file(s), {n} samples in total"
