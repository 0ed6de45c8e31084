"""The oldest torch hpcgan runs on, checked once at start-up so an old cluster module fails in one line.

The floor is set by the newest API the code needs: ``torch.amp.GradScaler(device_type, ...)``
(torch 2.3; older releases only have ``torch.cuda.amp.GradScaler``). setup.py declares the same
floor (a test keeps the two equal).
"""
from __future__ import annotations

import re

from hpcgan.errors import UserError

MIN_TORCH = (2, 3)


def parse_version(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as '2.13.0+cpu' or '2.6.0a0+git1234'."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None:
        raise ValueError(f"unrecognised torch version {version!r}")
    return int(m.group(1)), int(m.group(2))


def check_torch(version: str | None = None) -> None:
    """Raise UserError when torch is older than MIN_TORCH (what to do is in the message)."""
    if version is None:
        import torch

        version = torch.__version__
    if parse_version(version) < MIN_TORCH:
        floor = ".".join(map(str, MIN_TORCH))
        raise UserError(f"torch {version} is older than {floor}, the oldest hpcgan supports: load a newer PyTorch "
                        f"module, or `pip install 'torch>={floor}'` into the venv (P100: a CUDA 12.6 build, see README)")
