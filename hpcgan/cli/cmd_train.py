"""`hpcgan train --config NAME [section.key=value ...]`."""
from __future__ import annotations

import argparse
import os
import sys

from hpcgan.config import load_config
from hpcgan.errors import UserError
from hpcgan.runtime import session


def add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument("--config", required=config_required, help="preset name (hpcgan/configs/NAME.yaml) or a YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=15")
    p.add_argument("--run-dir", help="output directory (same as run_dir=...)")
    p.add_argument("--backend", choices=["auto", "horovod", "torch", "local"], help="communication backend")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (auto: the rank's GPU if any)")


def config_from_args(args: argparse.Namespace):
    overrides = list(args.overrides)
    for key, value in (("run_dir", args.run_dir), ("backend", args.backend), ("device", args.device)):
        if value:
            overrides.append(f"{key}={value}")
    return load_config(args.config, overrides)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a GAN (run under mpirun/srun for several ranks)")
    add_config_args(p)
    p.add_argument("--resume", default="auto",
                   help="auto (newest valid checkpoint in the run dir, if any), never, or a checkpoint path")
    p.add_argument("--dry-run", action="store_true",
                   help="check config, data and models, print the plan (steps, batch, LR, warm-up, validation, "
                        "shards) and every error the job would hit (exit 2), then exit")
    p.add_argument("--world-size", type=_world_sizes, metavar="N[,N...]",
                   help="with --dry-run: plan for N ranks (or several sizes, 16,128,1024) from this one process "
                        "(default: the ranks launched)")
    p.set_defaults(func=run)


def _checkpoint_to_resume(cfg, resume: str) -> tuple | None:
    """(path, state) of the checkpoint `hpcgan train --resume RESUME` would continue from, if any."""
    from pathlib import Path

    from hpcgan.train import checkpoint as ckpt

    path = (ckpt.find_resume_checkpoint(Path(cfg.run_dir) / "checkpoints", log=lambda m: None) if resume == "auto"
            else ckpt.resolve_checkpoint(resume))
    return None if path is None else (path, ckpt.load_checkpoint(path))


def _world_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive rank counts, e.g. 128 or 16,128,1024")
    return sizes


def run(args: argparse.Namespace) -> int:
    from hpcgan.cli.preflight import check_training_inputs

    cfg = config_from_args(args)
    if args.world_size is not None and not args.dry_run:
        raise UserError("--world-size plans a job without starting it: use it with --dry-run")
    backend = session.start(cfg.backend, cfg.device)
    if args.dry_run:  # checks everything itself and lists every error, not only the first
        return dry_run(cfg, backend, args.world_size or [backend.size], args.resume)
    # Inputs every rank can check alone, agreed on before the first collective: bad input ends the job cleanly.
    backend.agree(lambda: check_training_inputs(cfg, backend, args.resume))
    # One job per run directory: rank 0 takes the lock before anything is written; all ranks learn the outcome.
    from hpcgan.train.run_lock import release_run_lock, take_run_lock

    backend.agree(lambda: take_run_lock(cfg.run_dir) if backend.is_root else None)
    from hpcgan.train.trainer import train

    try:
        with session.rank_local_errors():
            code = train(cfg, backend, resume=args.resume)
    finally:
        if backend.is_root:
            release_run_lock(cfg.run_dir)  # the kernel would too, at exit; released here for in-process callers
    session.stop()
    return code


def dry_run(cfg, backend, world_sizes: list[int], resume: str = "auto") -> int:
    """Everything a job needs before it spends its allocation, at each of `world_sizes` ranks: config, data
    files, models, the plan the trainer would run by (hpcgan/train/plan.py) and what resuming from the run
    directory's checkpoint would do. Errors are collected, not raised one at a time, so one dry run lists
    every problem; each is one line on stderr, exit 2."""
    from hpcgan.data.stage import check_stage_dir
    from hpcgan.train.agreement import check_same_training_data
    from hpcgan.train.plan import make_plan
    from hpcgan.train.step import build_training

    sizes, attrs, fingerprint, errors = _open_datasets(cfg, world_sizes[0])
    try:
        tr = build_training(cfg, backend, log=lambda m: None)  # model notices are the real run's to print
        if attrs is not None:
            tr.workload.check_dataset(attrs, cfg.data.path)
    except UserError as e:
        errors.append(str(e))
    if cfg.data.stage:
        try:
            check_stage_dir(cfg.data.stage_dir, os.environ)
        except UserError as e:
            errors.append(str(e))
    checkpoint = None
    if fingerprint is not None and resume != "never":
        try:
            checkpoint = _checkpoint_to_resume(cfg, resume)
            if checkpoint is not None:
                check_same_training_data(checkpoint[0], checkpoint[1].get("data"), fingerprint, cfg.data.path)
        except UserError as e:
            errors.append(str(e))
    for n in world_sizes if "data.path" in sizes else []:
        plan = make_plan(cfg, n, sizes["data.path"], sizes.get("data.val_path", 0))
        errors += [f"at {n} ranks: {e}" for e in plan.errors] if len(world_sizes) > 1 else list(plan.errors)
        if backend.is_root:
            lines = plan.lines(cfg)  # errors go to stderr below, notices after the resume line
            print("\n".join(ln for ln in lines if not ln.startswith(("notice: ", "error: "))))
            if checkpoint is not None:
                print(_resume_line(cfg, n, plan, *checkpoint))
            for line in lines:
                if line.startswith("notice: "):
                    print(line)
    session.stop()
    if backend.is_root:
        for e in errors:
            print(f"hpcgan: error: {e}", file=sys.stderr)
        if not errors:
            print(f"dry run ok at {','.join(map(str, world_sizes))} rank(s)")
    return 2 if errors else 0


def _open_datasets(cfg, world_size: int) -> tuple[dict, dict | None, dict | None, list[str]]:
    """Sample counts of data.path and data.val_path, the training data's attributes and fingerprint, and the
    errors opening them (rank 0's readers at this world size)."""
    from hpcgan.train.trainer import make_reader

    sizes, attrs, fingerprint, errors = {}, None, None, []
    for key, path in (("data.path", cfg.data.path), ("data.val_path", cfg.data.val_path)):
        if not path:
            continue
        try:
            with make_reader(cfg, 0, world_size, path, train=key == "data.path") as reader:
                reader.scan_finite(0, 1)  # the dry run is one process: the whole data set
                sizes[key] = reader.num_samples
                if key == "data.path":
                    attrs, fingerprint = reader.attrs, reader.fingerprint()
        except UserError as e:
            errors.append(f"{key}: {e}")
    return sizes, attrs, fingerprint, errors


def _resume_line(cfg, world_size: int, plan, path, state: dict) -> str:
    """What resuming this checkpoint at `world_size` ranks does (the trainer's own resume_point)."""
    from hpcgan.train.resume import resume_point

    point = resume_point(state, cfg, world_size, plan.train_samples, plan.steps_per_epoch)
    return (f"  resume           {path}: epoch {state['epoch'] + 1}, step {state['step_in_epoch']}; "
            + (point.line if point.line else "continues exactly"))
