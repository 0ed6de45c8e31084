"""Hyperparameter sweeps: many full runs of one preset over a grid, or random points, of dotted config keys.

Each point is an ordinary `hpcgan train` run in its own run directory, so it is
checkpointed, preempted, requeued and resumed like any training job. On SLURM
the points are one job array with a concurrency limit (the LHC study behind
this project scanned 243 and 324 configurations as single-GPU jobs by hand;
clouds_dist had its own submit script); without SLURM they run one after
another. `report` gathers each point's validation metrics into one table.

A sweep directory holds:
  sweep.json          the preset, the points (their overrides and run directories)
  points/NNN.args     point NNN's overrides, one per line (what the array script reads); with --optuna
                      written when the point starts (sweep_optuna.py), beside NNN.trial and optuna.log
  array.sh            the SLURM array script (resubmit it with `sbatch array.sh`)
  logs/               one SLURM output file per array element
  point-NNN/          point NNN's run directory
  report.md/.csv/.png what `hpcgan sweep report` writes
"""
from __future__ import annotations

import csv
import itertools
import json
import math
import random
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hpcgan.config import load_config
from hpcgan.errors import UserError

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Point:
    """One run of the sweep: its index, the values it sweeps, and the overrides shared by every point."""

    index: int
    swept: tuple[str, ...]
    common: tuple[str, ...] = ()

    @property
    def overrides(self) -> tuple[str, ...]:
        return self.common + self.swept

    @property
    def name(self) -> str:
        return f"point-{self.index:03d}"


def _split_spec(spec: str, what: str) -> tuple[str, str]:
    if "=" not in spec or spec.startswith("="):
        raise UserError(f"{what} {spec!r}: expected section.key=VALUES")
    key, values = spec.split("=", 1)
    if not values:
        raise UserError(f"{what} {spec!r}: no values after '='")
    return key.strip(), values


def grid_points(specs: Sequence[str]) -> list[tuple[str, ...]]:
    """Every combination of `key=v1,v2,...` specs, the first key varying slowest."""
    axes = []
    for spec in specs:
        key, values = _split_spec(spec, "--grid")
        axes.append([f"{key}={v.strip()}" for v in values.split(",")])
    return [tuple(combo) for combo in itertools.product(*axes)] if axes else []


def _bounds(spec: str, what: str) -> tuple[str, float, float]:
    key, values = _split_spec(spec, what)
    try:
        lo, hi = (float(v) for v in values.split(":"))
    except ValueError:
        raise UserError(f"{what} {spec!r}: expected key=LOW:HIGH with two numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise UserError(f"{what} {spec!r}: expected finite LOW < HIGH")
    if what == "--log-range" and lo <= 0:
        raise UserError(f"{what} {spec!r}: a log range needs LOW > 0")
    return key, lo, hi


def random_points(n: int, ranges: Sequence[str] = (), log_ranges: Sequence[str] = (),
                  choices: Sequence[str] = (), seed: int = 0) -> list[tuple[str, ...]]:
    """n points drawn uniformly (ranges), log-uniformly (log_ranges) or from lists (choices); seeded."""
    if n < 1:
        raise UserError(f"--random {n}: expected at least one point")
    uniform = [_bounds(s, "--range") for s in ranges]
    logu = [_bounds(s, "--log-range") for s in log_ranges]
    picks = [(k, v.split(",")) for k, v in (_split_spec(s, "--choice") for s in choices)]
    if not (uniform or logu or picks):
        raise UserError("--random needs at least one --range, --log-range or --choice")
    rng = random.Random(seed)
    points = []
    for _ in range(n):
        point = [f"{k}={rng.uniform(lo, hi):.6g}" for k, lo, hi in uniform]
        point += [f"{k}={math.exp(rng.uniform(math.log(lo), math.log(hi))):.6g}" for k, lo, hi in logu]
        point += [f"{k}={rng.choice(vals).strip()}" for k, vals in picks]
        points.append(tuple(point))
    return points


def plan(config: str, points: Sequence[tuple[str, ...]], common: Sequence[str] = ()) -> list[Point]:
    """Points with their indices, each checked by loading its config (a bad key or value fails here, before
    anything is submitted)."""
    if not points:
        raise UserError("no sweep points: give --grid KEY=V1,V2 ... or --random N with ranges")
    planned = []
    for i, swept in enumerate(points):
        point = Point(i, tuple(swept), tuple(common))
        try:
            load_config(config, list(point.overrides))
        except UserError as e:
            raise UserError(f"sweep point {i} ({' '.join(swept)}): {e}") from None
        planned.append(point)
    return planned


def write_sweep(out: Path, config: str, points: Sequence[Point], optuna: dict | None = None) -> None:
    """sweep.json and points/NNN.args; an existing sweep directory must hold the same plan (resubmission).
    With `optuna` (sweep_optuna.study_spec) the points' values are asked when each starts."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"config": config, "points": [{"index": p.index, "swept": list(p.swept), "overrides": list(p.overrides),
                                            "run_dir": str(out / p.name)} for p in points]}
    if optuna is not None:
        record["optuna"] = optuna
    path = out / SWEEP_FILE
    if path.exists():
        old = json.loads(path.read_text())
        if (old.get("config"), [q["overrides"] for q in old.get("points", [])], old.get("optuna")) != \
                (config, [list(p.overrides) for p in points], optuna):
            raise UserError(f"sweep directory {out}: holds a different sweep ({path}); choose another --out")
    (out / "points").mkdir(exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    for p in points if optuna is None else ():
        (out / "points" / f"{p.index:03d}.args").write_text("".join(f"{o}\n" for o in p.overrides))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)


def load_sweep(out: Path) -> dict:
    path = out / SWEEP_FILE
    if not path.is_file():
        raise UserError(f"sweep directory {out}: no {SWEEP_FILE} (not made by `hpcgan sweep`?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def array_script(out: Path, config: str, n_points: int, max_concurrent: int, home: Path, job_name: str,
                 optuna: bool = False) -> str:
    """The sbatch script of the job array: element i trains point i in out/point-NNN, like jobs/train_*.sh.

    Resources are the train scripts' defaults (one node, 2 ranks); sbatch options on the command line
    override them, e.g. `sbatch -N 4 --ntasks-per-node=4 array.sh`. With `optuna` the element first asks the
    study for its point's values and, when its run has finished, tells the study the result.
    """
    out = out.resolve()
    limit = f"%{max_concurrent}" if max_concurrent else ""
    q = shlex.quote
    ask = ('"$HPCGAN" sweep ask "$SWEEP_DIR" "$SLURM_ARRAY_TASK_ID" || exit $?\n' if optuna else "")
    finish = ('rc=$?\n[ "$rc" -ne 0 ] || "$HPCGAN" sweep tell "$SWEEP_DIR" "$SLURM_ARRAY_TASK_ID"\n'
              'hpcgan_finish "$rc"' if optuna else "hpcgan_finish $?")
    return f"""#!/bin/bash
# hpcgan sweep: {n_points} runs of {config} as one SLURM job array (written by `hpcgan sweep`).
# Element i trains point i (overrides in points/NNN.args) in point-NNN/; a preempted element
# checkpoints, is requeued and resumes like a train job. Resubmit with: sbatch {out}/array.sh
#SBATCH --job-name={job_name}
#SBATCH --array=0-{n_points - 1}{limit}
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --signal=USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={out}/logs/%x-%A_%a.out

export HPCGAN_HOME=${{HPCGAN_HOME:-{q(str(home))}}}
SWEEP_DIR={q(str(out))}
POINT=$(printf %03d "${{SLURM_ARRAY_TASK_ID:?submit with sbatch (a job array)}}")
export HPCGAN_RUN_DIR=$SWEEP_DIR/point-$POINT
source "$HPCGAN_HOME/jobs/env.sh"
hpcgan_use_run_dir
{ask}mapfile -t OVERRIDES < "$SWEEP_DIR/points/$POINT.args"
srun ${{HPCGAN_SRUN_MPI:+--mpi=$HPCGAN_SRUN_MPI}} --kill-on-bad-exit=1 --open-mode=append -u \\
    "$HPCGAN" train --config {q(config)} run_dir="$HPCGAN_RUN_DIR" "${{OVERRIDES[@]}}" "$@"
{finish}
"""


def run_local(out: Path, config: str, points: Sequence[Point], launcher: Sequence[str], hpcgan: Sequence[str],
              log=print, ask=None, tell=None) -> int:
    """Train the points one after another on this machine; returns how many failed. `ask(out, index)` (Optuna:
    sweep_optuna.ask) gives a point's overrides as it starts, `tell(out, index)` reports its result after."""
    failed = 0
    for p in points:
        overrides = ask(out, p.index) if ask else list(p.overrides)
        cmd = [*launcher, *hpcgan, "train", "--config", config, f"run_dir={out / p.name}", *overrides]
        log(f"sweep point {p.index + 1}/{len(points)}: {' '.join(overrides)}")
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode
        if rc != 0:
            failed += 1
            log(f"sweep point {p.index} exited {rc}; its run directory is {out / p.name}")
        elif tell:
            tell(out, p.index)
    return failed


# --- report -------------------------------------------------------------------

def _val_records(run_dir: Path) -> list[dict]:
    from hpcgan.train.run_dir import read_metrics

    return [rec for rec in read_metrics(run_dir) if rec.get("kind") == "val"]


def report_rows(out: Path, metric: str, maximize: bool = False) -> list[dict]:
    """One row per point: its swept values, final and best `metric`, the epoch of the best; best first."""
    sweep = load_sweep(out)
    rows = []
    for p in sweep["points"]:
        recs = [r for r in _val_records(Path(p["run_dir"])) if isinstance(r.get(metric), (int, float))]
        row = {"point": p["index"], "overrides": " ".join(_swept(out, p)), "epochs": 0,
               "final": math.nan, "best": math.nan, "best_epoch": None}
        if recs:
            pick = max if maximize else min
            best = pick(recs, key=lambda r: r[metric])
            row.update(epochs=recs[-1].get("epoch", len(recs)), final=recs[-1][metric], best=best[metric],
                       best_epoch=best.get("epoch"))
        rows.append(row)
    sign = -1.0 if maximize else 1.0
    rows.sort(key=lambda r: (math.isnan(r["best"]), sign * r["best"] if not math.isnan(r["best"]) else 0.0))
    if all(math.isnan(r["best"]) for r in rows):
        raise UserError(f"sweep {out}: no point has validation metric {metric!r} yet "
                        "(still running, no data.val_path, or a different --metric)")
    return rows


def _swept(out: Path, point: dict) -> list[str]:
    """The point's swept values; an --optuna point's are in its args file once asked (after the shared ones)."""
    args = out / "points" / f"{point['index']:03d}.args"
    if point["swept"] or not args.exists():
        return point["swept"]
    return args.read_text().splitlines()[len(point["overrides"]):]


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def write_report(out: Path, rows: list[dict], metric: str, maximize: bool = False) -> str:
    """report.md (returned), report.csv and report.png in the sweep directory."""
    order = "highest" if maximize else "lowest"
    lines = [f"Sweep {out}: validation {metric}, {order} best first", "",
             f"| rank | point | swept | epochs | final {metric} | best {metric} | best epoch |",
             "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['point']} | `{r['overrides']}` | {r['epochs']} | {_fmt(r['final'])} | "
                     f"{_fmt(r['best'])} | {_fmt(r['best_epoch'])} |")
    md = "\n".join(lines) + "\n"
    (out / "report.md").write_text(md)
    with open(out / "report.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "point", "swept", "epochs", f"final_{metric}", f"best_{metric}", "best_epoch"])
        for i, r in enumerate(rows, 1):
            w.writerow([i, r["point"], r["overrides"], r["epochs"], r["final"], r["best"], r["best_epoch"]])
    _plot(out / "report.png", rows, metric)
    return md


def _plot(path: Path, rows: list[dict], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if not math.isnan(r["best"])]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(done) + 1.5))
    y = range(len(done))
    ax.barh(list(y), [r["best"] for r in done], color="tab:blue", label="best")
    ax.scatter([r["final"] for r in done], list(y), color="tab:red", zorder=3, label="final")
    ax.set_yticks(list(y), [f"{r['point']}: {r['overrides']}" for r in done], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"validation {metric}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
