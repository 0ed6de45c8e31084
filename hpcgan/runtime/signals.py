"""Preemption and wall-time signals: remember them, act at the next step boundary.

Which signals: SIGUSR2 (what the job scripts ask SLURM for, `--signal=USR2@120`)
and SIGTERM (what SLURM sends on preemption and at the time limit, KillWait
seconds before SIGKILL). Not SIGUSR1 by default: NCCL 2.12 caught USR1 in its
proxy thread and hid it from the application (NVIDIA/nccl#704, why submitit
moved to USR2). HPCGAN_PREEMPT_SIGNALS (comma list, e.g. "USR1,TERM") changes
the set; the job's `--signal` must then name one of them.

The handlers only set a flag: a signal can arrive inside a collective, and
acting there would leave ranks disagreeing. The trainer, at each step boundary:

    if backend.any(signals.requested() is not None):
        rank 0 writes the checkpoint, appends to run_dir/interruptions.jsonl
            and writes run_dir/REQUEUE_MARKER
        backend.barrier()          # nobody exits while rank 0 still writes
        return signals.EXIT_REQUEUE   # on every rank

The job script (not Python) then runs `scontrol requeue` while
SLURM_RESTART_COUNT < HPCGAN_MAX_REQUEUES, and the requeued job resumes from
the checkpoint in the same run directory. The script trusts the marker file,
not only srun's exit code: under `srun --kill-on-bad-exit` the first rank to
exit 75 gets the others killed, and srun then reports the signal, not 75.
"""
from __future__ import annotations

import os
import signal
import time
from types import FrameType

# EX_TEMPFAIL from sysexits.h: "temporary failure, the user is invited to retry".
# Distinct from errors (1), UserError (2) and signal deaths (128+n).
EXIT_REQUEUE = 75

# Written into the run directory by rank 0 after the preemption checkpoint; read
# (and removed) by jobs/env.sh. Keep the two names in step.
REQUEUE_MARKER = "requeue-requested"

DEFAULT_SIGNALS = "USR2,TERM"

_requested: str | None = None
_received_at: float | None = None
_installed: list[tuple[int, object]] = []


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested, _received_at
    if _requested is None:  # the first signal is the one worth reporting
        _requested = signal.Signals(signum).name
        _received_at = time.time()


def parse_signals(spec: str) -> list[signal.Signals]:
    """'USR2,TERM' -> [SIGUSR2, SIGTERM]; unknown names raise ValueError naming the variable."""
    out = []
    for name in filter(None, (s.strip().upper() for s in spec.split(","))):
        full = name if name.startswith("SIG") else "SIG" + name
        try:
            out.append(signal.Signals[full])
        except KeyError:
            raise ValueError(f"HPCGAN_PREEMPT_SIGNALS: unknown signal {name!r} in {spec!r} "
                             "(expected names like USR2,TERM)") from None
    return out


def install(spec: str | None = None) -> None:
    """Install flag-setting handlers (main thread only; idempotent).

    spec defaults to $HPCGAN_PREEMPT_SIGNALS, else USR2,TERM.
    """
    if _installed:
        return
    for sig in parse_signals(spec or os.environ.get("HPCGAN_PREEMPT_SIGNALS") or DEFAULT_SIGNALS):
        _installed.append((sig, signal.signal(sig, _handler)))


def uninstall() -> None:
    """Restore the previous handlers (tests, or a process that trains twice)."""
    while _installed:
        sig, old = _installed.pop()
        signal.signal(sig, old)


def requested() -> str | None:
    """Name of the first preemption signal received ('SIGUSR2'), or None."""
    return _requested


def received_at() -> float | None:
    """Unix time of that signal (for the interruption log)."""
    return _received_at


def reset() -> None:
    """Forget a received signal (tests)."""
    global _requested, _received_at
    _requested = None
    _received_at = None
