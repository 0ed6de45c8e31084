"""`hpcgan` entry point: one argparse tree, one error policy.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``. A UserError anywhere becomes one line on stderr and exit
code 2. When every rank knows of the error (raised before the backend started,
or agreed on with Backend.agree) rank 0 alone reports it and every rank ends
cleanly; otherwise the rank that saw it reports it, and if other ranks may be
waiting in a collective the job is aborted so nothing hangs.
"""
from __future__ import annotations

import argparse
import faulthandler
import importlib
import sys
import traceback
from typing import Callable, Sequence

from hpcgan.errors import AgreedError, UserError

# Subcommand modules, in --help order.
COMMANDS = ["train", "generate", "evaluate", "export", "sweep", "data", "bench", "info"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcgan", description="Distributed training of conditional GANs for science.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"hpcgan.cli.cmd_{name}")
        except ModuleNotFoundError as e:
            if e.name == f"hpcgan.cli.cmd_{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def _rank_prefix() -> str:
    from hpcgan.runtime.env import detect_process

    info = detect_process()
    return f"[rank {info.rank}] " if info.size > 1 else ""


def _is_root(backend) -> bool:
    from hpcgan.runtime.env import detect_process

    return backend.is_root if backend is not None else detect_process().rank == 0


def main(argv: Sequence[str] | None = None) -> int:
    _whole_lines()
    _crash_tracebacks()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        _preemption_signals_from_start()
    parser = build_parser()
    # Overrides (key=value) may stand anywhere among the options; argparse alone only takes one run of them.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return run_guarded(lambda: _checked_torch() or args.func(args))


def _preemption_signals_from_start() -> None:
    """A preemption (SLURM's TERM, the job's USR2) during start-up (imports, data staging, the resume read)
    is remembered, not fatal: the trainer checkpoints and exits for requeue at its first step boundary.
    Installed before anything slow is imported. A bad HPCGAN_PREEMPT_SIGNALS is reported by the trainer."""
    from hpcgan.runtime import signals

    try:
        signals.install()
    except ValueError:
        pass


def _crash_tracebacks() -> None:
    """A crash in native code (MPI, HDF5, a CUDA library) still prints the Python stack, to the process's
    own stderr (file descriptor 2) even when sys.stderr was replaced (tests capture it in a StringIO)."""
    stream = sys.__stderr__
    try:
        if stream is not None:
            faulthandler.enable(file=stream)
    except (OSError, ValueError, RuntimeError):  # no usable descriptor 2: nowhere to write a crash to
        pass


def _checked_torch() -> None:
    from hpcgan.runtime.versions import check_torch

    check_torch()


def _whole_lines() -> None:
    """One write per line on stdout/stderr, still flushed at every newline.

    Under `python -u` (or PYTHONUNBUFFERED, common in job scripts) print() writes
    its text and its newline separately, so many ranks sharing one srun or
    mpirun output interleave mid-line. A line-buffered text layer keeps each
    line whole; tqdm flushes its own \r updates.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True, write_through=False)


def run_guarded(command: Callable[[], int | None]) -> int:
    """Run one subcommand under the error policy; returns its exit code.

    UserError: one line on stderr, exit code 2. Known to every rank (an AgreedError, or
    raised before the backend started: every rank runs the same command line, and
    nobody waits in a collective yet): rank 0 reports, all ranks stop the backend
    and return. Otherwise the rank reports it and the job is aborted when the error
    may hit this rank only (see session.rank_local_errors). Any other exception
    in a multi-rank job aborts the whole job after printing the traceback: the
    other ranks may be waiting in a collective, and a plain exit can itself hang
    (non-daemon threads, atexit hooks), so only an abort bounds the time.
    """
    try:
        code = command()
    except UserError as e:
        session = sys.modules.get("hpcgan.runtime.session")  # not imported: no backend (and no torch import)
        backend = session.current_backend() if session is not None else None
        if isinstance(e, AgreedError) or backend is None:
            if _is_root(backend):
                for line in getattr(e, "lines", [str(e)]):
                    print(f"hpcgan: error: {line}", file=sys.stderr, flush=True)
            if backend is not None:
                session.stop()
            return e.exit_code
        print(f"{_rank_prefix()}hpcgan: error: {e}", file=sys.stderr, flush=True)
        _abort_if_others_may_wait(e.exit_code, e)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from hpcgan.runtime import session

        backend = session.current_backend()
        if backend is not None and backend.size > 1:
            traceback.print_exc()
            backend.abort(1, f"{type(e).__name__}: {e}")
        raise
    return int(code or 0)


def _abort_if_others_may_wait(code: int, error: BaseException) -> None:
    """After a collective has started, a local error must end every rank (no hang)."""
    from hpcgan.runtime import session

    backend = session.current_backend()
    if backend is not None and backend.size > 1 and not session.errors_are_collective(error):
        backend.abort(code, "error on this rank")


if __name__ == "__main__":
    sys.exit(main())
