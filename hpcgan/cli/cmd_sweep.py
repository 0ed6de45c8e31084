"""`hpcgan sweep --config NAME --grid KEY=V1,V2 ...` and `hpcgan sweep report DIR`.

A sweep is many full training runs of one preset: on SLURM one job array (each element a data-parallel
run that is preempted, requeued and resumed like `jobs/train_*.sh`), elsewhere one run after another.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from hpcgan.errors import UserError
from hpcgan.train import sweep

REPO = Path(__file__).resolve().parents[2]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="hyperparameter sweep as a SLURM job array (or locally); `sweep report DIR`",
                       description="Plan and submit a sweep, or `hpcgan sweep report DIR` to tabulate a finished one.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides shared by every point (before --grid, which takes every KEY=... after it); "
                        "or `report DIR` to tabulate a sweep")
    p.add_argument("--config", help="preset name or YAML path (required to plan a sweep)")
    p.add_argument("--grid", nargs="+", default=[], metavar="KEY=V1,V2",
                   help="grid axes: every combination of the listed values")
    p.add_argument("--random", type=int, metavar="N", help="N random points from --range/--log-range/--choice")
    p.add_argument("--range", nargs="+", default=[], metavar="KEY=LOW:HIGH", help="uniform range (with --random)")
    p.add_argument("--log-range", nargs="+", default=[], metavar="KEY=LOW:HIGH",
                   help="log-uniform range, e.g. train.lr_g=1e-5:1e-3 (with --random)")
    p.add_argument("--choice", nargs="+", default=[], metavar="KEY=A,B", help="pick one of the values (with --random)")
    p.add_argument("--optuna", type=int, metavar="N",
                   help="N points chosen by an Optuna sampler from --range/--log-range/--choice as the sweep runs, "
                        "minimising --metric (or --maximize); the study is a journal file in the sweep directory")
    p.add_argument("--sampler", default="tpe", help="with --optuna: tpe, random or qmc (default tpe)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random points (and of the Optuna sampler)")
    p.add_argument("--out", help="sweep directory (default sweeps/<config name>)")
    p.add_argument("--max-concurrent", type=int, default=4, help="array elements running at once (0: no limit)")
    p.add_argument("--sbatch-args", default="", help="extra sbatch options, e.g. --sbatch-args='-N 2 --ntasks-per-node=4 -A acct'")
    p.add_argument("--local", action="store_true", help="run the points one after another here, even with SLURM")
    p.add_argument("--launcher", default="", help="local runs: launcher prefix, e.g. 'mpirun -np 2'")
    p.add_argument("--dry-run", action="store_true", help="check every point's config, print the array script")
    p.add_argument("--metric", default="l1", help="report and --optuna: validation metric to rank by (default l1)")
    p.add_argument("--maximize", action="store_true", help="report and --optuna: higher metric is better")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.overrides[:1] == ["report"]:
        if len(args.overrides) != 2:
            raise UserError("usage: hpcgan sweep report DIR [--metric NAME] [--maximize]")
        return report(Path(args.overrides[1]), args.metric, args.maximize)
    if args.overrides[:1] in (["ask"], ["tell"]):  # what an --optuna array element runs around its training
        return ask_or_tell(args.overrides)
    if not args.config:
        raise UserError("hpcgan sweep: --config is required to plan a sweep (or: hpcgan sweep report DIR)")
    given = [name for name, v in (("--grid", args.grid), ("--random", args.random), ("--optuna", args.optuna))
             if v not in (None, [])]
    if len(given) > 1:
        raise UserError(f"hpcgan sweep: give one of --grid, --random and --optuna, not {' and '.join(given)}")
    if args.max_concurrent < 0:
        raise UserError(f"--max-concurrent {args.max_concurrent}: expected 0 (no limit) or more")
    optuna = None
    if args.optuna is not None:
        from hpcgan.train import sweep_optuna

        optuna = sweep_optuna.study_spec(args.optuna, args.sampler, args.seed, args.metric, args.maximize,
                                         args.range, args.log_range, args.choice)
        points = [()] * args.optuna  # values asked from the study as each point starts
    elif args.random is not None:
        points = sweep.random_points(args.random, args.range, args.log_range, args.choice, args.seed)
    else:
        points = sweep.grid_points(args.grid)
    config = args.config
    if Path(config).suffix in (".yaml", ".yml") or "/" in config:  # a YAML path: the jobs may run elsewhere
        config = str(Path(config).resolve())
    planned = sweep.plan(config, points, args.overrides)
    name = Path(config).stem
    out = Path(args.out or f"sweeps/{name}").resolve()
    script = sweep.array_script(out, config, len(planned), args.max_concurrent, REPO, f"hpcgan-sweep-{name}",
                                optuna=optuna is not None)
    if args.dry_run:
        print(script, end="")
        print(f"# dry run: {len(planned)} point(s) checked; nothing written", file=sys.stderr)
        return 0
    sweep.write_sweep(out, config, planned, optuna)
    (out / "array.sh").write_text(script)
    use_slurm = not args.local and shutil.which("sbatch") is not None
    if not use_slurm:
        hpcgan = [sys.executable, "-m", "hpcgan.cli.main"]
        ask_tell = {}
        if optuna is not None:
            from hpcgan.train import sweep_optuna

            ask_tell = {"ask": sweep_optuna.ask, "tell": sweep_optuna.tell}
        failed = sweep.run_local(out, config, planned, shlex.split(args.launcher), hpcgan,
                                 log=lambda m: print(m, file=sys.stderr), **ask_tell)
        print(f"sweep of {len(planned)} point(s) in {out}: {len(planned) - failed} finished, {failed} failed; "
              f"tabulate with: hpcgan sweep report {out}")
        return 1 if failed else 0
    cmd = ["sbatch", "--parsable", *shlex.split(args.sbatch_args), str(out / "array.sh")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        why = ((p.stderr or p.stdout).strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise UserError(f"sbatch {out / 'array.sh'} failed: {why}")
    job = p.stdout.strip().split(";")[0]
    print(f"submitted job array {job}: {len(planned)} point(s) of {config} in {out} "
          f"(logs in {out / 'logs'}); when done: hpcgan sweep report {out}")
    return 0


def ask_or_tell(words: list[str]) -> int:
    """`hpcgan sweep ask|tell DIR INDEX`: ask the study for point INDEX's values (writes points/NNN.args),
    or tell it the point's result."""
    from hpcgan.train import sweep_optuna

    if len(words) != 3 or not words[2].isdigit():
        raise UserError(f"usage: hpcgan sweep {words[0]} DIR INDEX")
    out, index = Path(words[1]), int(words[2])
    if words[0] == "ask":
        print(" ".join(sweep_optuna.ask(out, index)))
    else:
        value = sweep_optuna.tell(out, index)
        print(f"sweep point {index}: told the study {'a failed trial' if value is None else value}")
    return 0


def report(out: Path, metric: str, maximize: bool) -> int:
    rows = sweep.report_rows(out, metric, maximize)
    print(sweep.write_report(out, rows, metric, maximize), end="")
    print(f"(also {out / 'report.csv'} and {out / 'report.png'})", file=sys.stderr)
    return 0
