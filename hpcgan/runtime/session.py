"""The one runtime a process has: backend + device, started once per command."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from hpcgan.runtime.backend import Backend, init_backend
from hpcgan.runtime.device import select_device
from hpcgan.runtime.env import detect_process

_backend: Backend | None = None
_collective_errors = True


def start(backend: str = "auto", device: str = "auto") -> Backend:
    """Detect rank/size, choose the device, start the backend (idempotent)."""
    global _backend
    if _backend is None:
        os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
        info = detect_process()
        _backend = init_backend(backend, info, select_device(info, device))
    return _backend


def current_backend() -> Backend | None:
    return _backend


def errors_are_collective() -> bool:
    return _collective_errors


@contextlib.contextmanager
def rank_local_errors() -> Iterator[None]:
    """Within this block an error may hit one rank only: the CLI then aborts the whole job."""
    global _collective_errors
    old, _collective_errors = _collective_errors, False
    try:
        yield
    finally:
        _collective_errors = old


def stop() -> None:
    global _backend
    if _backend is not None:
        _backend.shutdown()
        _backend = None
