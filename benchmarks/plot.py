"""PNG plots from benchmark JSON: allreduce bandwidth, rate and efficiency vs ranks, CPU vs GPU bars, projection.

Each plot function takes a loaded result document and a PNG path; `main`
draws every plot whose JSON exists in the results folder. Matplotlib's Agg
backend: no display needed (clusters, CI).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import DEFAULT_RESULTS, log, read_result  # noqa: E402


def _footer(fig, doc: dict) -> None:
    env = doc["env"]
    fig.text(0.01, 0.005, f"{env.get('host', '')} {env.get('cores', '?')} cores, {env.get('date', '')}, "
                          f"load {env.get('load_start', {}).get('loadavg_1_5_15', '?')}", fontsize=6, color="gray")


def plot_allreduce(doc: dict, png: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in doc["results"]["curves"]:
        x = [r["bytes"] for r in c["rows"]]
        y = [r["busbw_GBps"] for r in c["rows"]]
        ax.plot(x, y, marker="o", linestyle="--" if c["oversubscribed"] else "-",
                label=f"{c['lib']} x{c['ranks']}{' (oversubscribed)' if c['oversubscribed'] else ''}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s) = 2(n-1)/n bytes / time")
    ax.set_title("allreduce bus bandwidth")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _footer(fig, doc)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def plot_scaling(doc: dict, png: Path) -> None:
    runs = doc["results"]["runs"]
    eff = doc["results"]["efficiency"]
    modes = sorted({r["mode"] for r in runs})
    fig, axes = plt.subplots(2, len(modes), figsize=(5 * len(modes), 7), squeeze=False)
    for j, mode in enumerate(modes):
        keys = sorted({(r["workload"], r["backend"], r["data"]) for r in runs if r["mode"] == mode})
        for key in keys:
            rs = sorted((r for r in runs if r["mode"] == mode and (r["workload"], r["backend"], r["data"]) == key),
                        key=lambda r: r["ranks"])
            label = "/".join(key)
            axes[0][j].plot([r["ranks"] for r in rs], [r["samples_per_s"]["median"] for r in rs], marker="o", label=label)
            es = sorted((e for e in eff if e["mode"] == mode and (e["workload"], e["backend"], e["data"]) == key),
                        key=lambda e: e["ranks"])
            axes[1][j].plot([e["ranks"] for e in es], [e["efficiency"] for e in es], marker="o", label=label)
        axes[0][j].set_title(f"{mode} scaling: samples/s")
        axes[1][j].set_title(f"{mode} scaling: efficiency rate(N)/(N rate(1))")
        axes[1][j].axhline(1.0, color="gray", lw=0.8)
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xlabel("ranks")
            ax.set_xscale("log", base=2)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
    over = sorted({r["ranks"] for r in runs if r["oversubscribed"]})
    if over:
        fig.suptitle(f"ranks {', '.join(map(str, over))} oversubscribed ({doc['env'].get('cores')} cores)", fontsize=9)
    _footer(fig, doc)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def plot_throughput(doc: dict, png: Path) -> None:
    rows = doc["results"]["rows"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.5 * len(workloads), 4.5), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        rs = [r for r in rows if r["workload"] == w]
        labels = [f"{r['device']} {r['variant']}\n{r['precision']} b{r['batch']}" for r in rs]
        x = range(len(rs))
        train = [r["train"]["samples_per_s"]["median"] for r in rs]
        err = [[r["train"]["samples_per_s"]["median"] - r["train"]["samples_per_s"]["min"] for r in rs],
               [r["train"]["samples_per_s"]["max"] - r["train"]["samples_per_s"]["median"] for r in rs]]
        gen = [r["generate"]["samples_per_s"]["median"] for r in rs]
        ax.bar([i - 0.2 for i in x], train, width=0.4, yerr=err, label="train", color=["C0" if r["device"] == "cpu"
                                                                                     else "C2" for r in rs])
        ax.bar([i + 0.2 for i in x], gen, width=0.4, label="generate", color="C1", alpha=0.7)
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("samples/s (median, min-max)")
        ax.set_title(w)
        ax.legend(fontsize=7)
    _footer(fig, doc)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def plot_projection(doc: dict, png: Path) -> None:
    curves = doc["results"]["curves"]
    workloads = list(dict.fromkeys(c["workload"] for c in curves))
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.5 * len(workloads), 4.2), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        for c in (c for c in curves if c["workload"] == w):
            ax.plot(c["nodes"], c["efficiency"], marker=".", label=f"{c['machine']} (t_c {c['compute_s'] * 1e3:.1f} ms)")
        for chk in doc["results"].get("check", []):
            if chk["workload"] == w:
                ax.plot([chk["ranks"]], [chk["efficiency_measured"]], "kx")
                ax.plot([chk["ranks"]], [chk["efficiency_model"]], "k+")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("nodes (1 rank each)")
        ax.set_ylabel("weak-scaling efficiency")
        ax.set_title(f"{w}: ring allreduce alpha-beta model\n(x measured, + model, this machine)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    _footer(fig, doc)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


PLOTS = {"allreduce": plot_allreduce, "scaling": plot_scaling, "throughput": plot_throughput,
         "projection": plot_projection}


def plot_all(results: Path, kinds: Sequence[str] = tuple(PLOTS)) -> list[Path]:
    """Draw each kind whose results/<kind>.json exists; return the PNGs written."""
    written = []
    for kind in kinds:
        path = results / f"{kind}.json"
        if not path.is_file():
            log(f"plot: {path} not found, skipped")
            continue
        png = path.with_suffix(".png")
        PLOTS[kind](read_result(path, kind), png)
        log(f"wrote {png}")
        written.append(png)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from hpcgan.errors import UserError

    p = argparse.ArgumentParser(prog="hpcgan bench plot", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="folder with <kind>.json")
    p.add_argument("--kinds", default=",".join(PLOTS), help=f"subset of {','.join(PLOTS)}")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    if not kinds or any(k not in PLOTS for k in kinds):
        raise UserError(f"--kinds {args.kinds!r}: expected a subset of {', '.join(PLOTS)}")
    if not plot_all(args.results, kinds):
        raise UserError(f"{args.results}: no result JSON to plot (run `hpcgan bench allreduce|throughput|scaling` first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
