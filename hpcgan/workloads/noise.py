"""Per-sample random numbers for generators: a sample gets the same noise wherever it is processed.

Training at 1 rank x 4b and at 4 ranks x b must draw the same generator noise for the same sample, or
the two runs differ for a reason that has nothing to do with the arithmetic. So while the trainer holds
`keyed(keys)`, every draw a model makes through `randn`, `rand` or `Dropout2d` is a counter-based
function of (the sample's key, the draw's number within the forward pass, the element): a splitmix64
hash of integers, turned into uniforms (24 bits) and normals (Box-Muller). The key comes from
(seed, epoch, sample index, purpose) (`sample_keys`). Outside `keyed` (inference, evaluation,
benchmarks), the draws come from torch's global generator as before.
"""
from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 torch stores it."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GAMMA, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps modulo 2^64)."""
    x = x + _GAMMA
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    return x ^ _srl(x, 31)


def _mix_int(x: int) -> int:
    """The same finaliser on Python integers (keys are built on the host)."""
    x = (x + (_GAMMA & _MASK64)) & _MASK64
    x = ((x ^ (x >> 30)) * (_M1 & _MASK64)) & _MASK64
    x = ((x ^ (x >> 27)) * (_M2 & _MASK64)) & _MASK64
    return x ^ (x >> 31)


def sample_keys(seed: int, epoch: int, indices: np.ndarray | torch.Tensor, purpose: int = 0) -> torch.Tensor:
    """int64 keys of the samples `indices` (global dataset indices) in `epoch` for `purpose` (0: the step's
    fakes; j: the fresh fakes of extra D round j): the same for a sample at any rank count."""
    base = _mix_int((_mix_int((_mix_int(seed & _MASK64) ^ epoch) & _MASK64) ^ purpose) & _MASK64)
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    return _mix(idx ^ _signed(base))


class _Source:
    def __init__(self, keys: torch.Tensor):
        self.keys = keys
        self.draws = 0  # draws made so far in this forward pass: each one its own stream

    def bits(self, n_per_sample: int, device: torch.device) -> torch.Tensor:
        keys = _mix(self.keys.to(device) ^ _mix(torch.tensor(self.draws, dtype=torch.int64, device=device)))
        self.draws += 1
        counter = torch.arange(n_per_sample, dtype=torch.int64, device=device)
        return _mix(keys[:, None] ^ _mix(counter)[None, :])  # (batch, n_per_sample) int64


_source: ContextVar[_Source | None] = ContextVar("hpcgan_noise_source", default=None)


@contextlib.contextmanager
def keyed(keys: torch.Tensor | None):
    """Inside the block, model draws for a batch come from the samples' keys (None: torch's generator)."""
    token = _source.set(None if keys is None else _Source(keys))
    try:
        yield
    finally:
        _source.reset(token)


def active() -> bool:
    return _source.get() is not None


def _uniform(bits: torch.Tensor) -> torch.Tensor:
    """int64 hash -> float32 in (0, 1): the top 24 bits, centred in their interval."""
    return (_srl(bits, 40).float() + 0.5) * (1.0 / (1 << 24))


def _keyed_uniforms(batch: int, per_sample: int, like: torch.Tensor) -> torch.Tensor | None:
    """(batch, per_sample) keyed uniforms inside `keyed`, None outside it."""
    src = _source.get()
    if src is None:
        return None
    if len(src.keys) != batch:
        raise RuntimeError(f"per-sample noise: {len(src.keys)} keys for a batch of {batch}")
    return _uniform(src.bits(per_sample, like.device))


def rand(batch: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Uniform (0, 1) of shape (batch, *shape), dtype and device of `like`."""
    u = _keyed_uniforms(batch, math.prod(shape), like)
    if u is None:
        return torch.rand(batch, *shape, device=like.device, dtype=like.dtype)
    return u.reshape(batch, *shape).to(like.dtype)


def randn(batch: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Standard normal of shape (batch, *shape), dtype and device of `like` (Box-Muller on two uniforms)."""
    n = math.prod(shape)
    u = _keyed_uniforms(batch, 2 * n, like)
    if u is None:
        return torch.randn(batch, *shape, device=like.device, dtype=like.dtype)
    z = torch.sqrt(-2.0 * torch.log(u[:, :n])) * torch.cos(2.0 * math.pi * u[:, n:])
    return z.reshape(batch, *shape).to(like.dtype)


class Dropout2d(nn.Module):
    """nn.Dropout2d whose channel masks are per-sample draws inside `keyed` (torch's generator outside it,
    exactly as nn.Dropout2d)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or not active():
            return F.dropout2d(x, self.p, self.training)
        keep = (rand(x.shape[0], (x.shape[1], 1, 1), x) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
