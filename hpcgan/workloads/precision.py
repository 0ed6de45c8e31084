"""Mixed precision in one place: which autocast dtype a run uses, and which parts of a model stay fp32.

Each workload declares a `Precision` (registry.Workload.precision): the reduced dtypes its networks
tolerate under autocast and the names of the parts that must run in fp32 whatever train.amp says.
Those parts are functions decorated with `full_precision(name)`: autocast is switched off inside and
their floating tensor inputs are cast to fp32, so a bf16/fp16 activation never reaches them. The
trainer (train/step.py) and inference (train/inference.py) both choose their dtype with `resolve`
and enter `autocast`, so training and generation run the same arithmetic.

Why parts stay fp32 (LHC): the linear helix seed weights the layers by (r / sigma)^2, up to ~1.6e9,
which is infinite in fp16, and its inputs carry signal at 1e-4 relative (10 um on a 32 mm layer),
below bf16's 8-bit mantissa. Loss reductions are done in fp32 by train/losses.py for every workload.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch

from hpcgan.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_SECTIONS: dict[str, Callable] = {}  # every full_precision function, by name (tests check the declarations)


@dataclass(frozen=True)
class Precision:
    """A workload's precision policy: what may run in reduced precision and what stays fp32."""

    reduced: tuple[str, ...] = ("bf16", "fp16")  # autocast dtypes the networks train in
    fp32: tuple[str, ...] = ()  # full_precision sections of the models (run with autocast off)
    why: str = ""  # one line for the start-up log


def resolve(choice: str, device: torch.device, policy: Precision, workload: str = "") -> torch.dtype | None:
    """train.amp -> the autocast dtype (None: fp32). auto: bf16 on Ampere+, fp16 on Pascal/Volta, fp32 on CPU."""
    if choice == "off":
        return None
    if choice == "auto":
        if device.type != "cuda":
            return None
        major, _ = torch.cuda.get_device_capability(device)
        choice = "bf16" if major >= 8 else "fp16"
        if choice not in policy.reduced:
            return None
    if choice not in policy.reduced:
        raise UserError(f"config key train.amp: workload {workload!r} does not train in {choice} "
                        f"(its precision policy allows {', '.join(policy.reduced) or 'only fp32'}; use off)")
    return DTYPES[choice]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to dtype on device's type, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def describe(dtype: torch.dtype | None, policy: Precision) -> str:
    if dtype is None:
        return "precision: fp32"
    text = f"precision: {NAMES[dtype]} autocast"
    if policy.fp32:
        text += f"; fp32: {', '.join(policy.fp32)}" + (f" ({policy.why})" if policy.why else "")
    return text + ("; fp16 gradient scaler on" if dtype == torch.float16 else "")


def _fp32(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float64 else x
    if isinstance(x, dict):
        return {k: _fp32(v) for k, v in x.items()}
    return x


def _device_type(args: tuple, kwargs: dict) -> str:
    for x in (*args, *kwargs.values()):
        if isinstance(x, torch.Tensor):
            return x.device.type
        if isinstance(x, dict):
            for v in x.values():
                if isinstance(v, torch.Tensor):
                    return v.device.type
    return "cpu"


def full_precision(name: str) -> Callable[[Callable], Callable]:
    """Decorator: run the function with autocast off and its floating tensor inputs (also inside dicts) in fp32.

    Modules' own tensors (buffers, parameters) are fp32 already; only activations need casting."""
    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with torch.autocast(_device_type(args, kwargs), enabled=False):
                return fn(*(_fp32(a) for a in args), **{k: _fp32(v) for k, v in kwargs.items()})
        wrapper.full_precision = name  # type: ignore[attr-defined]
        _SECTIONS[name] = wrapper
        return wrapper
    return deco


def sections() -> dict[str, Callable]:
    """Name -> function of every full_precision section imported so far."""
    return dict(_SECTIONS)
