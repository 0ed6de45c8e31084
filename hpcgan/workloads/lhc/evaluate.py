"""Physics evaluation: the GAN's tracks against the conventional fit's, both against the truth.

Figures (conventional fit in blue, GAN in red, ratio GAN / fit below each panel):
  lhc_parameters.png   pT, q/pT, phi0, eta, d0, z0
  lhc_residuals.png    reconstructed - true: (pT - pT_true)/pT_true, q/pT, phi0 [mrad], eta, d0 [um], z0 [mm],
                       and the fitted points' r-phi distance to the measured hits [um]
  lhc_resolution.png   resolution of pT and d0 versus true pT (half the 16-84 % interval per pT bin)
  lhc_metrics.png      the headline: resolution ratio GAN / fit per true pT and |eta| bin, efficiency
Numbers (lhc_evaluation.json and a printed table): the headline, from hpcgan.workloads.lhc.metrics
(resolution and bias relative to the fit per bin, pulls, two-sample AUC, the per-track distance
GAN - fit in units of the fit's resolution, and whether the generator is flagged); then, secondary,
per variable the Wasserstein-1 distance between the GAN's and the fit's marginal distributions
divided by the fit's standard deviation, which moves little when the GAN is worse per track.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hpcgan.errors import UserError
from hpcgan.workloads.lhc import metrics

EVAL_JSON = "lhc_evaluation.json"
FIG_PARAMS = "lhc_parameters.png"
FIG_RESID = "lhc_residuals.png"
FIG_RESOLUTION = "lhc_resolution.png"
FIG_METRICS = "lhc_metrics.png"
PT_BINS = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 100.0)
BLUE, RED = "tab:blue", "tab:red"


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 = integral |F_a(x) - F_b(x)| dx from the two sorted samples (any sizes)."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if a.size == 0 or b.size == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    grid.sort()
    fa = np.searchsorted(a, grid[:-1], side="right") / a.size
    fb = np.searchsorted(b, grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def variables(inputs: np.ndarray, tracks: np.ndarray, truth: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-track quantities of one method (file units in, plot units out)."""
    qpt = tracks[:, 0].astype(np.float64)
    out = {"pT [GeV]": 1.0 / np.maximum(np.abs(qpt), 1e-6), "q/pT [1/GeV]": qpt, "phi0 [rad]": tracks[:, 1],
           "eta": tracks[:, 2], "d0 [mm]": tracks[:, 3], "z0 [mm]": tracks[:, 4]}
    if truth is not None:
        t_qpt = truth[:, 0].astype(np.float64)
        t_pt = 1.0 / np.abs(t_qpt)
        out.update({
            "res pT/pT": (out["pT [GeV]"] - t_pt) / t_pt,
            "res q/pT [1/GeV]": qpt - t_qpt,
            "res phi0 [mrad]": 1e3 * _wrap(tracks[:, 1] - truth[:, 1]),
            "res eta": tracks[:, 2] - truth[:, 2],
            "res d0 [um]": 1e3 * (tracks[:, 3] - truth[:, 3]),
            "res z0 [mm]": tracks[:, 4] - truth[:, 4],
        })
    n, L = len(tracks), inputs.shape[2]
    pts = tracks[:, 5:].reshape(n, L, 3)
    mask = inputs[:, 3] > 0.5
    dphi = _wrap(np.arctan2(pts[..., 1], pts[..., 0]) - np.arctan2(inputs[:, 1], inputs[:, 0]))
    r = np.hypot(inputs[:, 0], inputs[:, 1])
    out["hit-point r-phi [um]"] = (1e3 * r * dphi)[mask]
    return out


def _range(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The fit's 0.5-99.5 % range, widened a little; falls back when it is degenerate."""
    lo, hi = np.percentile(a, [0.5, 99.5])
    if not hi > lo:
        lo, hi = float(np.min(np.concatenate([a, b]))) - 0.5, float(np.max(np.concatenate([a, b]))) + 0.5
    pad = 0.05 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def _overlay(names: list[str], conv: dict, gan: dict, path: Path, title: str, ref_label: str = "conventional fit") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4 if len(names) > 6 else 3
    rows = -(-len(names) // cols)
    fig = plt.figure(figsize=(4.2 * cols, 4.2 * rows))
    outer = fig.add_gridspec(rows, cols, hspace=0.35, wspace=0.3)
    for i, name in enumerate(names):
        inner = outer[i // cols, i % cols].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.05)
        ax, axr = fig.add_subplot(inner[0]), fig.add_subplot(inner[1])
        a, b = conv[name], gan[name]
        lo, hi = _range(a, b)
        edges = np.linspace(lo, hi, 51)
        ha, _ = np.histogram(np.clip(a, lo, hi), edges)
        hb, _ = np.histogram(np.clip(b, lo, hi), edges)
        centers = 0.5 * (edges[1:] + edges[:-1])
        ax.stairs(ha, edges, color=BLUE, label=ref_label)
        ax.stairs(hb, edges, color=RED, label="GAN")
        ax.set_title(name, fontsize=10)
        ax.tick_params(labelbottom=False)
        if i == 0:
            ax.legend(fontsize=8)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ha > 0, hb / np.maximum(ha, 1), np.nan)
        axr.plot(centers, ratio, ".", color=RED, ms=3)
        axr.axhline(1.0, color=BLUE, lw=0.8)
        axr.set_ylim(0, 2)
        axr.set_ylabel("GAN/fit", fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _resolution(res: np.ndarray, pt_true: np.ndarray) -> list[float | None]:
    """Half the 16-84 % interval of `res` per true-pT bin (robust against scattering tails)."""
    out = []
    for lo, hi in zip(PT_BINS[:-1], PT_BINS[1:]):
        sel = (pt_true >= lo) & (pt_true < hi)
        if sel.sum() < 10:
            out.append(None)
            continue
        q16, q84 = np.percentile(res[sel], [16, 84])
        out.append(float(0.5 * (q84 - q16)))
    return out


def _resolution_plot(table: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centers = np.sqrt(np.array(PT_BINS[:-1]) * np.array(PT_BINS[1:]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, (("pT", "sigma(pT)/pT"), ("d0", "sigma(d0) [um]"))):
        for method, color, lab in (("conventional", BLUE, "conventional fit"), ("gan", RED, "GAN")):
            y = np.array([np.nan if v is None else v for v in table[key][method]], dtype=float)
            ax.plot(centers, y, "o-", color=color, label=lab)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("true pT [GeV]")
        ax.set_ylabel(label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def check_inputs(inputs: np.ndarray, real: np.ndarray, fake: np.ndarray, n_layers: int) -> None:
    want_t = 5 + 3 * n_layers
    if inputs.ndim != 3 or inputs.shape[1:] != (4, n_layers):
        raise UserError(f"lhc evaluate: inputs have shape {inputs.shape}, expected (N, 4, {n_layers})")
    for name, a in (("conventional targets", real), ("generated tracks", fake)):
        if a.shape != (len(inputs), want_t):
            raise UserError(f"lhc evaluate: {name} have shape {a.shape}, expected ({len(inputs)}, {want_t})")


def evaluate(inputs: np.ndarray, real: np.ndarray, fake: np.ndarray, meta: dict, out_dir: Path,
             n_layers: int, verbose: bool = True) -> dict:
    """Figures + JSON under out_dir; returns the summary (see the module docstring)."""
    inputs, real, fake = (np.asarray(a, np.float64) for a in (inputs, real, fake))
    check_inputs(inputs, real, fake, n_layers)
    truth = meta.get("true_params") if meta else None
    truth = None if truth is None else np.asarray(truth, np.float64)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conv, gan = variables(inputs, real, truth), variables(inputs, fake, truth)
    w1 = {}
    for name in conv:
        spread = float(np.std(conv[name]))
        w1[name] = {"w1": wasserstein1(gan[name], conv[name]), "spread": spread,
                    "w1_norm": wasserstein1(gan[name], conv[name]) / spread if spread > 0 else float("nan")}
    params = [k for k in conv if not k.startswith("res") and not k.startswith("hit")]
    resid = [k for k in conv if k not in params]
    _overlay(params, conv, gan, out_dir / FIG_PARAMS, f"track parameters, {len(real)} tracks")
    summary = {"n_tracks": int(len(real)), "n_layers": int(n_layers), "wasserstein1": w1,
               "w1_norm_mean_parameters": float(np.mean([w1[k]["w1_norm"] for k in params])),
               "figures": {"parameters": FIG_PARAMS}}
    if truth is not None:
        _overlay(resid, conv, gan, out_dir / FIG_RESID, "residuals to the truth")
        pt_true = 1.0 / np.abs(truth[:, 0])
        table = {"pt_bins": list(PT_BINS)}
        for key, var, scale in (("pT", "res pT/pT", 1.0), ("d0", "res d0 [um]", 1.0)):
            table[key] = {"conventional": _resolution(conv[var] * scale, pt_true),
                          "gan": _resolution(gan[var] * scale, pt_true)}
        _resolution_plot(table, out_dir / FIG_RESOLUTION)
        summary["resolution_vs_pt"] = table
        summary["w1_norm_mean_residuals"] = float(np.mean([w1[k]["w1_norm"] for k in resid]))
        summary["figures"].update({"residuals": FIG_RESID, "resolution": FIG_RESOLUTION})
        m = metrics.compare(truth, real[:, :5], fake[:, :5], paired=True)
        metrics.plot(m, out_dir / FIG_METRICS)
        summary = {"headline": metrics.headline(m), **summary, "metrics": m}
        summary["figures"]["metrics"] = FIG_METRICS
    (out_dir / EVAL_JSON).write_text(json.dumps(summary, indent=1))
    if verbose:
        print(format_table(summary))
    return summary


def format_table(summary: dict) -> str:
    lines = [f"LHC evaluation: {summary['n_tracks']} tracks, {summary['n_layers']} layers"]
    if "metrics" in summary:
        lines += [metrics.format_table(summary["metrics"]), "secondary: marginal distributions"]
    lines += [f"{'variable':<24}{'W1(GAN, fit)':>14}{'fit spread':>14}{'W1 / spread':>13}"]
    for name, v in summary["wasserstein1"].items():
        lines.append(f"{name:<24}{v['w1']:>14.4g}{v['spread']:>14.4g}{v['w1_norm']:>13.4f}")
    table = summary.get("resolution_vs_pt")
    if table:
        lines.append(f"{'true pT bin [GeV]':<18}{'sig(pT)/pT fit':>15}{'GAN':>9}{'sig(d0) um fit':>16}{'GAN':>9}")
        for i, (lo, hi) in enumerate(zip(table["pt_bins"][:-1], table["pt_bins"][1:])):
            f = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
            lines.append(f"{f'{lo:g}-{hi:g}':<18}{f(table['pT']['conventional'][i]):>15}{f(table['pT']['gan'][i]):>9}"
                         f"{f(table['d0']['conventional'][i]):>16}{f(table['d0']['gan'][i]):>9}")
    return "\n".join(lines)


def layers_of(attrs: dict) -> int | None:
    shape = attrs.get("input_shape")
    return int(shape[1]) if shape is not None and len(shape) == 2 else None

