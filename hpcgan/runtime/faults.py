"""Fault injection for tests: make one rank raise, exit, die or hang at one step.

Spec "RANK:STEP:ACTION" from config key train.fault or env HPCGAN_FAULT
(the environment wins, so a job script can inject into any preset):
  raise  RuntimeError on that rank (the CLI aborts the job: no hang)
  exit   os._exit(EXIT_FAULT) with no clean-up, like a crash
  kill   SIGKILL to itself, like the OOM killer
  hang   sleep forever (the other ranks wait in the next collective)
  nangrad  a NaN in that rank's gradients of that step (before the step-boundary check)
  slow   from that step on, that rank sleeps SLOW_STEP_S after every step (a straggler; the other ranks
         wait for it, so the whole job slows down without changing a single weight)
The trainer calls maybe_inject only `if fault is not None`, so an unset fault
costs one comparison per step.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass

from hpcgan.errors import UserError

ACTIONS = ("raise", "exit", "kill", "hang", "nangrad", "slow")
EXIT_FAULT = 3
SLOW_STEP_S = 0.25


@dataclass(frozen=True)
class Fault:
    rank: int
    step: int
    action: str

    def __str__(self) -> str:
        return f"{self.rank}:{self.step}:{self.action}"


class InjectedFault(RuntimeError):
    """What the 'raise' action raises."""


def parse(spec: str | None, source: str = "train.fault") -> Fault | None:
    """'1:20:exit' -> Fault(1, 20, 'exit'); '' or None -> None; anything else a UserError naming source."""
    if spec is None or not spec.strip():
        return None
    parts = spec.strip().split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        rank, step, action = int(parts[0]), int(parts[1]), parts[2].strip().lower()
        if rank < 0 or step < 0 or action not in ACTIONS:
            raise ValueError
    except ValueError:
        raise UserError(f"{source}={spec!r}: expected RANK:STEP:ACTION with RANK, STEP >= 0 and ACTION one of "
                        f"{'|'.join(ACTIONS)}") from None
    return Fault(rank, step, action)


def resolve(config_value: str | None) -> Fault | None:
    """The fault in force: $HPCGAN_FAULT when set, else the config value."""
    env = os.environ.get("HPCGAN_FAULT", "")
    if env.strip():
        return parse(env, "HPCGAN_FAULT")
    return parse(config_value, "train.fault")


def poisons_gradients(fault: Fault, rank: int, step: int) -> bool:
    """True when this rank's gradients of global step `step` (1-based) are to hold a NaN."""
    return fault.action == "nangrad" and rank == fault.rank and step == fault.step


def poison(grads: list) -> None:
    """Write a NaN into the first element of the first gradient (what an overflow or bad batch would do)."""
    print(f"injected fault: NaN gradient", file=sys.stderr, flush=True)
    grads[0].view(-1)[0] = float("nan")


def maybe_inject(fault: Fault, rank: int, step: int) -> None:
    """Act when (rank, step) is the fault's; otherwise return at once."""
    if fault.action == "slow" and rank == fault.rank and step >= fault.step:
        time.sleep(SLOW_STEP_S)
        return
    if rank != fault.rank or step != fault.step or fault.action in ("nangrad", "slow"):
        return
    # The time lets tests measure how long the other ranks take to end after this one dies.
    print(f"[rank {rank}] injected fault: {fault.action} at step {step} (time {time.time():.3f})",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    if fault.action == "raise":
        raise InjectedFault(f"injected fault on rank {rank} at step {step} ({fault})")
    if fault.action == "exit":
        os._exit(EXIT_FAULT)
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # hang
        time.sleep(3600)
