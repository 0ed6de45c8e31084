"""The fast simulation's likelihood base alone: a copy of a checkpoint with the adversarial correction zeroed.

FastSimGenerator adds the correction's output layer (head.1, in G and in its EMA) to the smearing base;
with that layer zero, G samples the base alone (efficiency, quantiles, copula) from the same checkpoint.
`hpcgan evaluate` on the copy then shows what the adversarial part adds or costs, on the same metrics:

    python scripts/fastsim_base_only.py RUN/checkpoints/ckpt-00015360.pt RUN-base-only
    mpirun -np 2 hpcgan evaluate RUN-base-only/checkpoints/ckpt-00015360.pt --data data/lhc-fastsim-test.h5 \\
        --out RUN-base-only/evaluation

The copy goes to OUT/checkpoints under the step's name, with its checksum, written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpcgan.errors import UserError
from hpcgan.train.checkpoint import load_checkpoint, save_checkpoint

HEAD = ("head.1.", "module.head.1.")  # the correction's last linear layer (DDP's prefix included)


def zero_correction(state: dict) -> list[str]:
    """Zero the correction's output layer in G and G_ema in place; returns the names zeroed."""
    if state.get("workload") != "lhc-fastsim":
        raise UserError(f"a checkpoint of workload lhc-fastsim expected, got {state.get('workload')!r}")
    if not ((state.get("config") or {}).get("lhc") or {}).get("smear_base"):
        raise UserError("the checkpoint has no smearing base (lhc.smear_base false): zeroing its output would "
                        "leave no resolution at all")
    zeroed = []
    for net in ("G", "G_ema"):
        for name, tensor in (state.get(net) or {}).items():
            if name.startswith(HEAD):
                tensor.zero_()
                zeroed.append(f"{net}.{name}")
    if not zeroed:
        raise UserError("no correction output layer (head.1.*) in G")
    return zeroed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path, help="run directory for the copy (OUT/checkpoints/ckpt-STEP.pt)")
    a = p.parse_args(argv)
    state = load_checkpoint(a.checkpoint)
    try:
        zeroed = zero_correction(state)
    except UserError as e:
        raise UserError(f"checkpoint {a.checkpoint}: {e}") from None
    path = save_checkpoint(state, a.out / "checkpoints", int(state["global_step"]), keep=1)
    print(f"zeroed {', '.join(zeroed)}; wrote {path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"fastsim_base_only: {e}", file=sys.stderr)
        sys.exit(2)
