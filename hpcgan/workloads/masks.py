"""Pixels a target does not define (the dataset's meta/valid mask) count in no loss and no metric.

Why: the real CRF data have pixels the satellite did not see; the converter
stores them as 0 and marks them in meta/valid (hpcgan/workloads/crf/convert_npz.py).
Counted as data, those zeros would teach the generator to paint holes and would
move L1, MSE and the spectra.

A mask `valid` covers the target's spatial dimensions, (B, H, W) for (B, C, H, W)
targets, True (or nonzero) where the pixel is defined, and holds for every
channel. None means every pixel is valid (synthetic data, which have no mask):
the functions then reduce to plain means, so results there are unchanged. The
functions take numpy arrays or torch tensors alike (only broadcasting and sums).
"""
from __future__ import annotations

import torch


def valid_mean(values, valid=None, per_sample: bool = False):
    """Mean of `values` (B, C, ...) over the valid pixels of every channel: one number, or (B,) with
    per_sample=True (a sample without a valid pixel gives 0)."""
    dims = tuple(range(0 if not per_sample else 1, values.ndim))
    if valid is None:
        return values.mean(dims)
    weight = (valid[:, None] != 0) * 1.0  # (B, 1, ...): the same pixels in every channel
    if hasattr(weight, "to"):
        weight = weight.to(values.dtype)
    total = (values * weight).sum(dims)
    count = (weight.sum(dims) * values.shape[1])
    return total / (count + (count == 0))


def fill_invalid(fake: torch.Tensor, real: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """`fake` with the real target's values at invalid pixels: what the discriminator is shown, so the
    two images differ only where the target is defined (a zero-filled hole would tell it which is real)."""
    if valid is None:
        return fake
    return torch.where(valid[:, None].to(fake.device) != 0, fake, real.to(fake.dtype))
