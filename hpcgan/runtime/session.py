"""The one runtime a process has: backend + device, started once per command."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

import torch

from hpcgan.runtime.backend import Backend, init_backend
from hpcgan.runtime.device import select_device
from hpcgan.runtime.env import detect_process

_backend: Backend | None = None
_collective_errors = True
_RANK_LOCAL = "hpcgan_rank_local"  # attribute set on exceptions raised inside rank_local_errors


def start(backend: str = "auto", device: str = "auto") -> Backend:
    """Detect rank/size, choose the device, start the backend (idempotent)."""
    global _backend
    if _backend is None:
        os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
        info = detect_process()
        _backend = init_backend(backend, info, select_device(info, device))
        if _backend.size > 1:
            _abort_on_uncaught_exception()
    return _backend


def _abort_on_uncaught_exception() -> None:
    """An exception escaping a multi-rank script (not only the CLI) ends the whole job.

    Without this the failing rank may never exit (non-daemon threads, atexit hooks
    waiting on peers) while the others wait in a collective for ever.
    """
    previous = sys.excepthook
    if getattr(previous, "_hpcgan_aborts", False):
        return

    def hook(exc_type, exc, tb):  # type: ignore[no-untyped-def]
        previous(exc_type, exc, tb)
        if _backend is not None and _backend.size > 1:
            _backend.abort(1, f"uncaught {exc_type.__name__}")

    hook._hpcgan_aborts = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def current_backend() -> Backend | None:
    return _backend


def errors_are_collective(error: BaseException | None = None) -> bool:
    """False inside rank_local_errors, or for an error raised there (seen after the block was left)."""
    return _collective_errors and not getattr(error, _RANK_LOCAL, False)


@contextlib.contextmanager
def rank_local_errors() -> Iterator[None]:
    """Within this block an error may hit one rank only: the CLI then aborts the whole job.

    The mark travels on the exception: by the time the CLI's handler catches it this
    block has been left and the flag restored.
    """
    global _collective_errors
    old, _collective_errors = _collective_errors, False
    try:
        yield
    except Exception as e:
        setattr(e, _RANK_LOCAL, True)
        raise
    finally:
        _collective_errors = old


def stop() -> None:
    global _backend
    if _backend is not None:
        _backend.shutdown()
        _backend = None
