"""`hpcgan export RUN_OR_CHECKPOINT --out G.safetensors`: the generator's weights for use outside hpcgan's trainer."""
from __future__ import annotations

import argparse
from pathlib import Path

from hpcgan.cli.cmd_generate import add_weight_args
from hpcgan.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained generator as safetensors + its config (JSON)")
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="run directory or checkpoint file")
    p.add_argument("--out", required=True, help="weights file (.safetensors); the config goes beside it (.json)")
    add_weight_args(p, "--checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hpcgan.train import checkpoint as ckpt
    from hpcgan.workloads.exported import save_exported

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: expected a .safetensors file name")
    path = ckpt.resolve_checkpoint(args.checkpoint, args.which)
    state = ckpt.load_checkpoint(path)
    weights, used = ckpt.generator_state(state, args.weights)
    record = {"workload": state["workload"], "weights": used, "checkpoint": str(path),
              "global_step": state.get("global_step"), "config": state["config"]}
    written, meta = save_exported(weights, record, out)
    note = "" if used == args.weights else " (the run kept no EMA copy)"
    print(f"exported the {used} generator of {path}{note} to {written}; config {meta}")
    return 0
