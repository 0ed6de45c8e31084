"""`hpcgan train --config NAME [section.key=value ...]`."""
from __future__ import annotations

import argparse
import sys

from hpcgan.config import load_config
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
    p.add_argument("--dry-run", action="store_true", help="check config, data and models, then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpcgan.cli.preflight import check_training_inputs

    cfg = config_from_args(args)
    backend = session.start(cfg.backend, cfg.device)
    # Inputs every rank can check alone, agreed on before the first collective: bad input ends the job cleanly.
    backend.agree(lambda: check_training_inputs(cfg, backend, args.resume))
    if args.dry_run:
        return dry_run(cfg, backend)
    from hpcgan.train.trainer import train

    with session.rank_local_errors():
        code = train(cfg, backend, resume=args.resume)
    session.stop()
    return code


def dry_run(cfg, backend) -> int:
    """Everything a job needs before it spends its allocation: config, data files, models."""
    from hpcgan.train.step import build_training
    from hpcgan.train.trainer import make_reader

    reader = make_reader(cfg, backend, cfg.data.path, train=True)
    if cfg.data.val_path:
        make_reader(cfg, backend, cfg.data.val_path, train=False).close()
    tr = build_training(cfg, backend, log=lambda m: print(m, file=sys.stderr) if backend.is_root else None)
    tr.workload.check_dataset(reader.attrs, cfg.data.path)
    if backend.is_root:
        print(f"dry run ok: workload {cfg.workload}, {reader.num_samples} training samples, "
              f"{reader.steps_per_epoch // cfg.train.accumulation} steps/epoch at global batch "
              f"{cfg.global_batch(backend.size)} on {backend.size} rank(s)")
    reader.close()
    session.stop()
    return 0
