"""Colour-aware wrappers around the CRF networks (config keys crf.colour, crf.chroma_pool, crf.d_chroma).

Why: the reference generator's 1x1 head maps features to R, G and B
independently, and a discriminator that sees plain RGB takes longer than a
short run to notice that the resulting fine texture is coloured speckle
rather than the grey texture of real clouds (colour.py measures this).

- LumaChromaGenerator: the U-Net's three outputs are read as luminance and two
  chroma coordinates; the chroma is average-pooled by ``pool`` and upsampled
  back, so all fine texture is grey by construction and colour varies only on
  scales of ``pool`` pixels and more.
- ChromaInputDiscriminator: the discriminator also sees each pixel's chroma
  (band minus luminance), amplified, as extra channels.

Nothing here knows about ranks or devices.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R 601, as spectrum.grayscale
# Chroma coefficients are the U-Net's tanh/sigmoid outputs around their centre, times this: +-0.125 in
# reflectance either way, several times the synthetic and observed clouds' colour spread.
CHROMA_AMPLITUDE = 0.25
CHROMA_GAIN = 4.0  # chroma is a few percent of reflectance; amplified so the discriminator's first layer sees it


def chroma_basis() -> np.ndarray:
    """(3, 2): two orthonormal RGB directions with zero luminance (w . u = 0), so chroma leaves grey alone."""
    w = np.asarray(LUMA_WEIGHTS, np.float64)
    q, _ = np.linalg.qr(np.stack([w, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], axis=1))
    return q[:, 1:3]


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) with LUMA_WEIGHTS."""
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


class LumaChromaGenerator(nn.Module):
    """RGB = luminance (full resolution) + low-resolution chroma, from a 3-output generator ``net``
    whose outputs lie in [-1, 1] (output "tanh") or [0, 1] ("sigmoid"); the result is clamped to that range."""

    def __init__(self, net: nn.Module, output: str, pool: int):
        super().__init__()
        if pool < 1:
            raise ValueError(f"chroma pool {pool}: expected >= 1")
        self.net = net
        self.pool = int(pool)
        self.low, self.high = (-1.0, 1.0) if output == "tanh" else (0.0, 1.0)
        self.register_buffer("basis", torch.tensor(chroma_basis(), dtype=torch.float32), persistent=False)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        y = self.net(cond)
        luma = y[:, :1]
        chroma = (y[:, 1:3] - 0.5 * (self.low + self.high)) * CHROMA_AMPLITUDE
        if self.pool > 1:
            chroma = F.interpolate(F.avg_pool2d(chroma, self.pool), size=y.shape[-2:], mode="bilinear",
                                   align_corners=False)
        # Elementwise rather than a matmul: each sample's result then does not depend on the batch size.
        u = self.basis.to(y.dtype).view(1, 3, 2, 1, 1)
        rgb = luma + u[:, :, 0] * chroma[:, None, 0] + u[:, :, 1] * chroma[:, None, 1]
        return rgb.clamp(self.low, self.high)


class ChromaInputDiscriminator(nn.Module):
    """D(cond, x) = net(cond, [x, CHROMA_GAIN * (x - luminance(x))]): ``net`` takes 6 image channels."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, cond: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(cond, torch.cat([x, CHROMA_GAIN * (x - luminance(x))], dim=1))
