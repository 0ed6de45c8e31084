"""Metrics that tell a good track generator from a bad one (both LHC modes), with the rule that flags one.

Everything is measured against the truth and compared with the reference chain (the conventional
fit of the simulated hits), per bin of true pT and true |eta|:
  resolution  68 % width of the residual reco - truth (half the 16-84 % interval), GAN / reference,
              with its statistical error: a Gaussian's 68 % half-width from n samples has a standard
              error of 0.964 sigma / sqrt(n) (the quantiles' variance p(1-p) / (n f^2) with their
              covariance), so ratio_err = ratio * sqrt(0.93 / n_gen + 0.93 / n_ref);
  bias        median residual, GAN - reference, in units of the reference's width (error
              1.2533 sqrt(1 / n_gen + 1 / n_ref), the median's standard error);
  pulls       residual minus the reference's median, over the reference's width, per track: the
              fraction beyond 2 and 3 (a Gaussian has 4.6 % and 0.27 %), the mean and the 68 % width;
  efficiency  fraction of particles with a reconstructed track (1 in the hits -> track mode);
  correlation the correlation between each pair of parameters' residuals (in units of the nominal
              resolution, asinh-compressed, over found tracks), GAN and reference, compared by Fisher's
              z = atanh(rho), whose standard error is 1 / sqrt(n - 3): the helix fit's residuals are
              strongly correlated (phi0 with d0, eta with z0: about -0.9), which per-parameter widths
              and biases cannot see;
  two-sample  a classifier test: logistic regression on engineered features of (truth, reco) is
              trained to tell GAN tracks from reference tracks on one half and scored on the other;
              the AUC on the held-out half is 0.5 when the two are indistinguishable. Under that null the
              AUC's standard deviation is sqrt((n1 + n2 + 1) / (12 n1 n2)) (Mann-Whitney).
Where the GAN and the reference see the same events (hits -> track) the errors above, written for
independent samples, are conservative. In that mode `per_track_distance` adds (GAN - fit) / width
of the fit, per track.

Flag rule (`flags`): a generator is flagged when any of
  - the resolution ratio of a parameter, pooled over bins (weights 1 / err^2), is |ratio - 1| > Z_FLAG err,
  - the per-bin resolution ratios of a parameter: sum of ((ratio - 1) / err)^2 above the chi^2 quantile at P_FLAG
    (a width right on average but wrong at low pT or forward),
  - the bias of a parameter, pooled the same way, is |bias| > Z_FLAG err,
  - the efficiency differs: sum over bins of z^2 (binomial z) above the chi^2 quantile at P_FLAG,
  - the correlation of a pair of parameters differs by more than Z_FLAG errors (Fisher z),
  - the two-sample AUC is above 0.5 + Z_FLAG sd (the null's standard deviation).
An extra independent error of 0.3 x the resolution widens it by sqrt(1.09) = 1.044; with 2 x 10^4 tracks
the pooled ratio's error is about 0.01, so it is flagged (tests/lhc/test_lhc_metrics.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from hpcgan.workloads.lhc import space

PARAMS = ("q/pT", "phi0", "eta", "d0", "z0")
UNITS = ("1/GeV", "rad", "", "mm", "mm")
PT_BINS = (0.3, 0.5, 1.0, 2.0, 5.0, 100.0)  # GeV, true pT
ETA_BINS = (0.0, 0.5, 1.0, 1.5, 2.0)  # true |eta|
MIN_BIN = 50  # tracks per method: fewer and the bin is left out
WIDTH_SE = 0.93  # n * var(68 % half-width) / sigma^2 for a Gaussian
MEDIAN_SE = 1.2533  # sqrt(pi / 2): sqrt(n) * se(median) / sigma for a Gaussian
Z_FLAG = 3.5
P_FLAG = 1e-3


def residuals(truth: np.ndarray, params: np.ndarray) -> np.ndarray:
    """reco - truth (N, 5), the azimuth wrapped into [-pi, pi)."""
    d = np.asarray(params, np.float64)[:, :5] - np.asarray(truth, np.float64)[:, :5]
    d[:, 1] = (d[:, 1] + np.pi) % (2 * np.pi) - np.pi
    return d


def _width(x: np.ndarray) -> float:
    q16, q84 = np.percentile(x, [16, 84])
    return float(0.5 * (q84 - q16))


def _bins(truth: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, selection) per non-empty (true pT, true |eta|) bin."""
    pt, aeta = 1.0 / np.maximum(np.abs(truth[:, 0]), 1e-9), np.abs(truth[:, 2])
    out = []
    for plo, phi in zip(PT_BINS[:-1], PT_BINS[1:]):
        for elo, ehi in zip(ETA_BINS[:-1], ETA_BINS[1:]):
            sel = (pt >= plo) & (pt < phi) & (aeta >= elo) & (aeta < ehi)
            if sel.any():
                out.append((f"pT {plo:g}-{phi:g}, |eta| {elo:g}-{ehi:g}", sel))
    return out


def _pool(values: list[float], errors: list[float], ref: float) -> dict:
    """Inverse-variance mean of per-bin values, its error and its distance from `ref` in errors."""
    v, e = np.array(values, float), np.array(errors, float)
    if v.size == 0:
        return {"value": None, "err": None, "z": 0.0}
    w = 1.0 / e ** 2
    mean, err = float((w * v).sum() / w.sum()), float(1.0 / math.sqrt(w.sum()))
    return {"value": mean, "err": err, "z": (mean - ref) / err}


def _chi2(values: list[float], errors: list[float], ref: float) -> dict:
    """sum over bins of ((value - ref) / err)^2, the bins, the bound at P_FLAG and chi2 per bin."""
    z = (np.array(values, float) - ref) / np.array(errors, float)
    k = len(z)
    chi2 = float(np.sum(z * z))
    return {"chi2": chi2, "bins": k, "bound": chi2_quantile(k, P_FLAG) if k else math.inf,
            "per_bin": chi2 / k if k else None}


def chi2_quantile(k: int, p: float) -> float:
    """Upper p-quantile of chi^2 with k degrees of freedom (Wilson-Hilferty: 2.3 % high at k = 2, < 1 % from k = 10)."""
    z = _normal_quantile(1 - p)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def _normal_quantile(q: float) -> float:
    lo, hi = -10.0, 10.0
    for _ in range(100):  # bisection on the error function: exact enough, no dependency
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q else (lo, mid)
    return 0.5 * (lo + hi)


def compare(truth: np.ndarray, ref: np.ndarray, gen: np.ndarray, ref_found: np.ndarray | None = None,
            gen_found: np.ndarray | None = None, paired: bool = False, seed: int = 0) -> dict:
    """Reference chain versus generator, both (N, >=5) parameters in file units of the same N particles.

    ref_found / gen_found: which particles have a track (default all). paired: the two are
    reconstructions of the same events (hits -> track), which adds `per_track_distance`.
    Returns a JSON-able dict (see the module docstring); `flags` says whether the generator is flagged."""
    truth = np.asarray(truth, np.float64)
    n = len(truth)
    ref_found = np.ones(n, bool) if ref_found is None else np.asarray(ref_found) > 0.5
    gen_found = np.ones(n, bool) if gen_found is None else np.asarray(gen_found) > 0.5
    res_r, res_g = residuals(truth, ref), residuals(truth, gen)
    bins, per_param = [], {p: {"ratio": [], "ratio_err": [], "bias": [], "bias_err": []} for p in PARAMS}
    pulls_r, pulls_g = [[] for _ in PARAMS], [[] for _ in PARAMS]
    width_of_track = np.full((n, 5), np.nan)
    eff_z = []
    for label, sel in _bins(truth):
        n_bin = int(sel.sum())  # the same particles for both: efficiencies out of n_bin each
        eff_r, eff_g = ref_found[sel].mean(), gen_found[sel].mean()
        p = 0.5 * (eff_r + eff_g)
        row = {"bin": label, "n": n_bin, "efficiency_ref": float(eff_r), "efficiency_gan": float(eff_g)}
        if n_bin >= MIN_BIN and 0 < p < 1:
            eff_z.append((eff_g - eff_r) / math.sqrt(p * (1 - p) * 2 / n_bin))
        sr, sg = sel & ref_found, sel & gen_found
        nr, ng = int(sr.sum()), int(sg.sum())
        row.update({"n_ref": nr, "n_gan": ng})
        if nr >= MIN_BIN and ng >= MIN_BIN:
            for k, name in enumerate(PARAMS):
                wr, wg = _width(res_r[sr, k]), _width(res_g[sg, k])
                mr, mg = float(np.median(res_r[sr, k])), float(np.median(res_g[sg, k]))
                if wr <= 0:
                    continue
                width_of_track[sel, k] = wr
                ratio = wg / wr
                ratio_err = ratio * math.sqrt(WIDTH_SE / ng + WIDTH_SE / nr)
                bias, bias_err = (mg - mr) / wr, MEDIAN_SE * math.sqrt(1 / ng + 1 / nr)
                pr, pg = (res_r[sr, k] - mr) / wr, (res_g[sg, k] - mr) / wr
                pulls_r[k].append(pr)
                pulls_g[k].append(pg)
                row[name] = {"width_ref": wr, "width_gan": wg, "ratio": ratio, "ratio_err": ratio_err,
                             "bias": bias, "bias_err": bias_err,
                             "beyond2_ref": float((np.abs(pr) > 2).mean()), "beyond2_gan": float((np.abs(pg) > 2).mean()),
                             "beyond3_ref": float((np.abs(pr) > 3).mean()), "beyond3_gan": float((np.abs(pg) > 3).mean())}
                for key, val in (("ratio", ratio), ("ratio_err", ratio_err), ("bias", bias), ("bias_err", bias_err)):
                    per_param[name][key].append(val)
        bins.append(row)

    pooled = {}
    for k, name in enumerate(PARAMS):
        d = per_param[name]
        pr = np.concatenate(pulls_r[k]) if pulls_r[k] else np.zeros(0)
        pg = np.concatenate(pulls_g[k]) if pulls_g[k] else np.zeros(0)
        pooled[name] = {"resolution_ratio": _pool(d["ratio"], d["ratio_err"], 1.0),
                        "resolution_chi2": _chi2(d["ratio"], d["ratio_err"], 1.0), "bias": _pool(d["bias"], d["bias_err"], 0.0),
                        "pulls_ref": _pull_summary(pr), "pulls_gan": _pull_summary(pg)}
    eff_chi2 = float(np.sum(np.square(eff_z))) if eff_z else 0.0
    eff_bound = chi2_quantile(len(eff_z), P_FLAG) if eff_z else math.inf
    c2st = two_sample_auc(truth, ref, gen, ref_found, gen_found, seed=seed)
    corr = correlations(truth, ref, gen, ref_found, gen_found)
    flags = {
        "resolution": [name for name in PARAMS if abs(pooled[name]["resolution_ratio"]["z"]) > Z_FLAG],
        "resolution_bins": [name for name in PARAMS
                            if pooled[name]["resolution_chi2"]["chi2"] > pooled[name]["resolution_chi2"]["bound"]],
        "bias": [name for name in PARAMS if abs(pooled[name]["bias"]["z"]) > Z_FLAG],
        "efficiency": bool(eff_chi2 > eff_bound),
        "correlation": [pair for pair, v in corr.items() if abs(v["z"]) > Z_FLAG],
        "two_sample": bool(c2st["auc"] > c2st["bound"]),
    }
    flags["flagged"] = bool(flags["resolution"] or flags["resolution_bins"] or flags["bias"] or flags["efficiency"]
                            or flags["correlation"] or flags["two_sample"])
    out = {"pt_bins": list(PT_BINS), "eta_bins": list(ETA_BINS), "bins": bins, "pooled": pooled,
           "efficiency": {"ref": float(ref_found.mean()), "gan": float(gen_found.mean()), "chi2": eff_chi2,
                          "bins": len(eff_z), "chi2_bound": eff_bound},
           "correlation": corr, "two_sample": c2st, "flags": flags,
           "rule": f"flagged if a pooled resolution ratio or bias or a pair's residual correlation is beyond {Z_FLAG} "
                   f"of its error, the resolution ratios' or the efficiency's chi2 over bins is above its {P_FLAG:g} "
                   f"quantile, or the two-sample AUC exceeds 0.5 + {Z_FLAG} sd"}
    if paired:
        out["per_track_distance"] = per_track_distance(ref, gen, width_of_track, ref_found & gen_found)
    return out


def _compressed(truth: np.ndarray, params: np.ndarray, found: np.ndarray) -> np.ndarray:
    """asinh(residual / nominal resolution) (N, 5), 0 for particles without a track."""
    r = residuals(truth, params) / space.resolution_scale(truth)
    return np.where(found[:, None], np.arcsinh(r), 0.0)


PAIRS = [(i, j) for i in range(len(PARAMS)) for j in range(i + 1, len(PARAMS))]


def correlations(truth: np.ndarray, ref: np.ndarray, gen: np.ndarray, ref_found: np.ndarray,
                 gen_found: np.ndarray) -> dict:
    """Per pair of parameters: the residuals' correlation over found tracks, reference and GAN, and their
    difference in errors (Fisher z = atanh(rho), standard error 1 / sqrt(n - 3) for each)."""
    truth = np.asarray(truth, np.float64)
    cr = np.corrcoef(_compressed(truth, ref, ref_found)[ref_found].T)
    cg = np.corrcoef(_compressed(truth, gen, gen_found)[gen_found].T)
    nr, ng = int(ref_found.sum()), int(gen_found.sum())
    err = math.sqrt(1 / max(nr - 3, 1) + 1 / max(ng - 3, 1))
    out = {}
    for i, j in PAIRS:
        # nan (a parameter without spread, or no track) counts as uncorrelated; |rho| < 1 keeps atanh finite
        rr, rg = (float(np.clip(np.nan_to_num(c[i, j]), -0.999999, 0.999999)) for c in (cr, cg))
        out[f"{PARAMS[i]}-{PARAMS[j]}"] = {"ref": rr, "gan": rg, "z": (math.atanh(rg) - math.atanh(rr)) / err}
    return out


def _pull_summary(p: np.ndarray) -> dict:
    if p.size == 0:
        return {"mean": None, "width68": None, "beyond2": None, "beyond3": None}
    return {"mean": float(np.clip(p, -5, 5).mean()), "width68": _width(p),
            "beyond2": float((np.abs(p) > 2).mean()), "beyond3": float((np.abs(p) > 3).mean())}


def per_track_distance(ref: np.ndarray, gen: np.ndarray, width: np.ndarray, both: np.ndarray) -> dict:
    """(GAN - fit) / the fit's resolution in the track's bin, per track and parameter: rms, median |d|, P(|d| > 1)."""
    d = residuals(ref, gen) / width  # residuals(a, b) = b - a with the azimuth wrapped
    out = {}
    for k, name in enumerate(PARAMS):
        x = d[both, k]
        x = x[np.isfinite(x)]
        out[name] = {"rms": float(np.sqrt(np.mean(x * x))) if x.size else None,
                     "median_abs": float(np.median(np.abs(x))) if x.size else None,
                     "beyond1": float((np.abs(x) > 1).mean()) if x.size else None}
    return out


# --- the classifier two-sample test -------------------------------------------------------------

def features(truth: np.ndarray, params: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Per particle: true log pT and |eta|, found, and the residuals in units of the nominal resolution
    (space.resolution_scale), asinh-compressed, with their squares and their products with log pT and |eta|
    (so a width that is wrong only at low pT or only forward is visible to a linear classifier), and the
    products of each pair of residuals (so is a missing correlation: the smearing of independent
    parameters, which the pair terms were added for on 2026-12-04)."""
    truth = np.asarray(truth, np.float64)
    r = _compressed(truth, params, found)
    lpt = np.log(1.0 / np.maximum(np.abs(truth[:, :1]), 1e-9))
    aeta = np.abs(truth[:, 2:3])
    f = found[:, None].astype(np.float64)
    pairs = np.stack([r[:, i] * r[:, j] for i, j in PAIRS], axis=1)
    return np.concatenate([lpt, aeta, f, f * lpt, f * aeta, r, r * r, r * r * lpt, r * r * aeta, r * lpt, r * aeta, pairs],
                          axis=1)


def auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties counted half (ranks)."""
    s = np.concatenate([scores_pos, scores_neg])
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]  # average rank within ties
    n1, n2 = len(scores_pos), len(scores_neg)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n2))


def two_sample_auc(truth: np.ndarray, ref: np.ndarray, gen: np.ndarray, ref_found: np.ndarray, gen_found: np.ndarray,
                   seed: int = 0, l2: float = 1e-3) -> dict:
    """Logistic regression (L-BFGS, L2 penalty) GAN-vs-reference on half of the particles, AUC on the other half.

    The halves split particles, not tracks: in the paired mode a particle's two reconstructions never sit
    on both sides of the split."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    idx = rng.permutation(n)
    train, test = idx[: n // 2], idx[n // 2:]
    xr, xg = features(truth, ref, ref_found), features(truth, gen, gen_found)
    mu = np.concatenate([xr[train], xg[train]]).mean(0)
    sd = np.concatenate([xr[train], xg[train]]).std(0) + 1e-9
    x = torch.from_numpy(np.concatenate([xg[train], xr[train]]) - mu) / torch.from_numpy(sd)
    y = torch.cat([torch.ones(len(train)), torch.zeros(len(train))]).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        score = lambda a: ((torch.from_numpy((a[test] - mu) / sd)) @ w + b).numpy()  # noqa: E731
        value = auc(score(xg), score(xr))
    m = len(test)
    sd_null = math.sqrt((2 * m + 1) / (12 * m * m))
    return {"auc": value, "null_sd": sd_null, "bound": 0.5 + Z_FLAG * sd_null, "n_test_per_class": m,
            "classifier": "logistic regression on residual features (metrics.features)"}


def headline(m: dict) -> dict:
    """The few numbers a README line quotes: pooled resolution ratios, biases, efficiency, AUC, flagged."""
    out = {"resolution_ratio": {k: v["resolution_ratio"]["value"] for k, v in m["pooled"].items()},
           "resolution_ratio_err": {k: v["resolution_ratio"]["err"] for k, v in m["pooled"].items()},
           "resolution_chi2_per_bin": {k: v["resolution_chi2"]["per_bin"] for k, v in m["pooled"].items()},
           "bias_in_widths": {k: v["bias"]["value"] for k, v in m["pooled"].items()},
           "beyond3_gan": {k: v["pulls_gan"]["beyond3"] for k, v in m["pooled"].items()},
           "beyond3_ref": {k: v["pulls_ref"]["beyond3"] for k, v in m["pooled"].items()},
           "efficiency_ref": m["efficiency"]["ref"], "efficiency_gan": m["efficiency"]["gan"],
           "two_sample_auc": m["two_sample"]["auc"], "two_sample_bound": m["two_sample"]["bound"],
           "correlation_ref": {k: v["ref"] for k, v in m.get("correlation", {}).items()},
           "correlation_gan": {k: v["gan"] for k, v in m.get("correlation", {}).items()},
           "flagged": m["flags"]["flagged"]}
    if "per_track_distance" in m:
        out["per_track_distance_rms"] = {k: v["rms"] for k, v in m["per_track_distance"].items()}
    return out


def format_table(m: dict) -> str:
    """Printed headline: per parameter the pooled numbers, then the two-sample test and the flags."""
    lines = [f"{'parameter':<10}{'width GAN/ref':>16}{'chi2/bin':>10}{'bias [width]':>15}{'>3 sig ref':>12}{'>3 sig GAN':>12}"
             + ("{:>16}".format("rms (GAN-fit)/w") if "per_track_distance" in m else "")]
    for name, v in m["pooled"].items():
        r, b = v["resolution_ratio"], v["bias"]
        f = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731
        line = (f"{name:<10}{f(r['value'], '.3f') + ' +- ' + f(r['err'], '.3f'):>16}"
                f"{f(v['resolution_chi2']['per_bin'], '.1f'):>10}{f(b['value'], '+.3f'):>15}"
                f"{f(v['pulls_ref']['beyond3'], '.4f'):>12}{f(v['pulls_gan']['beyond3'], '.4f'):>12}")
        if "per_track_distance" in m:
            line += f"{f(m['per_track_distance'][name]['rms'], '.3f'):>16}"
        lines.append(line)
    e, c = m["efficiency"], m["two_sample"]
    lines.append(f"efficiency ref {e['ref']:.4f} GAN {e['gan']:.4f} (chi2 {e['chi2']:.1f} over {e['bins']} bins, "
                 f"bound {e['chi2_bound']:.1f}); two-sample AUC {c['auc']:.4f} (bound {c['bound']:.4f})")
    if "correlation" in m:
        lines.append("residual correlation ref / GAN (z): " + ", ".join(
            f"{k} {v['ref']:+.2f} / {v['gan']:+.2f} ({v['z']:+.1f})" for k, v in m["correlation"].items()
            if max(abs(v["ref"]), abs(v["gan"])) >= 0.05 or abs(v["z"]) > Z_FLAG))
    fl = m["flags"]
    lines.append(f"flagged: {fl['flagged']} (resolution {fl['resolution'] or '-'}, per bin {fl['resolution_bins'] or '-'}, "
                 f"bias {fl['bias'] or '-'}, efficiency {fl['efficiency']}, correlation {fl.get('correlation') or '-'}, "
                 f"two-sample {fl['two_sample']})")
    return "\n".join(lines)


def plot(m: dict, path) -> None:
    """Resolution ratio GAN / reference per pT bin (one line per |eta| bin) for each parameter, and the efficiency."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    centers = np.sqrt(np.array(PT_BINS[:-1]) * np.array(PT_BINS[1:]))
    etas = list(zip(ETA_BINS[:-1], ETA_BINS[1:]))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(etas)))
    for k, name in enumerate(PARAMS):
        ax = axes.flat[k]
        for (elo, ehi), color in zip(etas, colors):
            pts = [(c, row[name]["ratio"], row[name]["ratio_err"]) for c, (plo, phi) in zip(centers, zip(PT_BINS[:-1], PT_BINS[1:]))
                   for row in m["bins"] if row["bin"] == f"pT {plo:g}-{phi:g}, |eta| {elo:g}-{ehi:g}" and name in row]
            if pts:
                x, y, e = zip(*pts)
                ax.errorbar(x, y, e, marker="o", ms=3, color=color, label=f"|eta| {elo:g}-{ehi:g}")
        ax.axhline(1.0, color="tab:blue", lw=0.8)
        ax.set(xscale="log", xlabel="true pT [GeV]", ylabel="68 % width GAN / reference", title=f"resolution of {name}")
        if k == 0 and ax.get_legend_handles_labels()[0]:  # no found track in any bin: nothing to label
            ax.legend(fontsize=7)
    ax = axes.flat[5]
    for (elo, ehi), color in zip(etas, colors):
        rows = [(c, row) for c, (plo, phi) in zip(centers, zip(PT_BINS[:-1], PT_BINS[1:])) for row in m["bins"]
                if row["bin"] == f"pT {plo:g}-{phi:g}, |eta| {elo:g}-{ehi:g}"]
        if rows:
            ax.plot([c for c, _ in rows], [r["efficiency_ref"] for _, r in rows], "-", color=color)
            ax.plot([c for c, _ in rows], [r["efficiency_gan"] for _, r in rows], "o--", color=color, ms=3)
    ax.set(xscale="log", xlabel="true pT [GeV]", ylabel="efficiency", title="efficiency: reference (line), GAN (dashed)")
    c = m["two_sample"]
    fig.suptitle(f"GAN versus reference chain; two-sample AUC {c['auc']:.3f} (0.5 = indistinguishable, bound {c['bound']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
