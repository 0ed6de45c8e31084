"""Optuna's samplers for `hpcgan sweep --optuna N`: points whose values are chosen while the sweep runs.

Each point asks the study for its values when it starts and, once its run has finished, tells the study
its best validation metric (the value `hpcgan sweep report` ranks by), so a sampler such as TPE learns from
the points that ended before. The study lives in a journal file in the sweep directory (optuna.log): no
database server, only a file system that every node sees, which Optuna locks for array elements asking
at once. Asking writes points/NNN.args (after points/NNN.trial, the trial number): a requeued element
finds it and resumes the same point. Telling happens once per trial.

Optuna is optional: only this module imports it, and only when a sweep asks for it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hpcgan.config import load_config
from hpcgan.errors import UserError
from hpcgan.train import sweep

SAMPLERS = ("tpe", "random", "qmc")
STUDY_FILE = "optuna.log"
STUDY_NAME = "hpcgan-sweep"


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("hpcgan sweep --optuna: the optuna package is not installed in this Python "
                        "(pip install optuna), or use --random N") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def study_spec(n: int, sampler: str, seed: int, metric: str, maximize: bool, ranges: Sequence[str] = (),
               log_ranges: Sequence[str] = (), choices: Sequence[str] = ()) -> dict:
    """What sweep.json records of an Optuna sweep (checked here, before anything is written)."""
    if n < 1:
        raise UserError(f"--optuna {n}: expected at least one point")
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler {sampler}: expected one of {', '.join(SAMPLERS)}")
    space: dict[str, dict] = {}
    for specs, what, log in ((ranges, "--range", False), (log_ranges, "--log-range", True)):
        for s in specs:
            key, lo, hi = sweep._bounds(s, what)
            space[key] = {"low": lo, "high": hi, "log": log}
    for s in choices:
        key, values = sweep._split_spec(s, "--choice")
        space[key] = {"choices": [v.strip() for v in values.split(",")]}
    if not space:
        raise UserError("--optuna needs at least one --range, --log-range or --choice")
    _optuna()  # fail at planning time, not in every array element
    return {"sampler": sampler, "seed": seed, "metric": metric, "maximize": maximize, "space": space}


def _study(out: Path, spec: dict, index: int = 0):
    """The sweep's study, with its sampler as point `index` uses it. Every point asks from a fresh process, so
    a random or TPE sampler seeded alike would draw the same first values for every point: their seed is the
    sweep's plus the point's index. QMC indexes its one scrambled sequence by trial number: one seed for all."""
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    seed = spec["seed"] + index
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "qmc": lambda: optuna.samplers.QMCSampler(seed=spec["seed"])}
    return optuna.create_study(study_name=STUDY_NAME, storage=JournalStorage(JournalFileBackend(str(out / STUDY_FILE))),
                               sampler=samplers[spec["sampler"]](), load_if_exists=True,
                               direction="maximize" if spec["maximize"] else "minimize")


def _distributions(space: dict) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {key: CategoricalDistribution(d["choices"]) if "choices" in d else FloatDistribution(d["low"], d["high"],
                                                                                                 log=d["log"])
            for key, d in space.items()}


def _point(out: Path, index: int) -> tuple[dict, dict]:
    record = sweep.load_sweep(out)
    if "optuna" not in record:
        raise UserError(f"sweep directory {out}: not an --optuna sweep")
    points = {p["index"]: p for p in record["points"]}
    if index not in points:
        raise UserError(f"sweep directory {out}: no point {index} (points 0..{len(points) - 1})")
    return record, points[index]


def ask(out: Path, index: int) -> list[str]:
    """Point `index`'s overrides: asked from the study the first time, read back after a requeue."""
    args_path = out / "points" / f"{index:03d}.args"
    if args_path.exists():
        return args_path.read_text().splitlines()
    record, point = _point(out, index)
    spec = record["optuna"]
    study = _study(out, spec, index)
    trial = study.ask(_distributions(spec["space"]))
    swept = [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()]
    overrides = list(point["overrides"]) + swept
    try:
        load_config(record["config"], overrides)
    except UserError as e:
        study.tell(trial.number, state=_optuna().trial.TrialState.FAIL)
        raise UserError(f"sweep point {index} ({' '.join(swept)}): {e}") from None
    (out / "points" / f"{index:03d}.trial").write_text(f"{trial.number}\n")
    tmp = args_path.with_suffix(".tmp")
    tmp.write_text("".join(f"{o}\n" for o in overrides))
    tmp.replace(args_path)  # last: its existence means "asked"
    return overrides


def tell(out: Path, index: int) -> float | None:
    """Tell the study point `index`'s best validation metric (a failed trial when it has none). Once."""
    record, point = _point(out, index)
    spec = record["optuna"]
    trial_path = out / "points" / f"{index:03d}.trial"
    if not trial_path.exists():
        raise UserError(f"sweep point {index}: never asked ({trial_path} missing)")
    number = int(trial_path.read_text())
    study = _study(out, spec)
    state = _optuna().trial.TrialState
    if study.trials[number].state != state.RUNNING:
        return study.trials[number].value
    values = [r[spec["metric"]] for r in sweep._val_records(Path(point["run_dir"]))
              if isinstance(r.get(spec["metric"]), (int, float))]
    if not values:
        study.tell(number, state=state.FAIL)
        return None
    best = max(values) if spec["maximize"] else min(values)
    study.tell(number, best)
    return best
