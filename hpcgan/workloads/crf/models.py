"""CRF networks: a U-Net generator and a conditional multi-scale PatchGAN discriminator.

Shapes follow Schmidt et al. 2020 (reference code krisrs1128/clouds_dist): the
generator maps 44 meteorological channels to 3 reflectance channels at the same
resolution; the discriminator judges (inputs, image) pairs at 1, 1/2 and 1/4
scale, pix2pixHD style, and returns one logit map per scale. Nothing here knows
about ranks, devices or the comm backend.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hpcgan.workloads import noise as sample_noise

NORMS = ("batch", "instance", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm mixes samples of a batch (paper); instance/none keep samples independent,
    which data-parallel equivalence tests need (a 2x2 batch then equals a 1x4 batch)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm {kind!r}: expected one of {', '.join(NORMS)}")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by norm, LeakyReLU(0.2) and dropout."""

    def __init__(self, c_in: int, c_out: int, norm: str, dropout: float):
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=norm == "none"), _norm(norm, c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
            if dropout > 0:
                layers.append(sample_noise.Dropout2d(dropout))
        super().__init__(*layers)


class UNetGenerator(nn.Module):
    """U-Net: len(widths) levels, 2x2 max pooling down, nearest upsampling up, skips concatenated.

    ``noise_channels`` Gaussian planes are drawn inside ``forward`` from torch's RNG (so the
    trainer's seeding and checkpointed RNG state cover them) and concatenated to the input.

    ``residual`` (tanh output, as many channels out as in): the head is zero-initialised and adds to the
    input before the output squashing, tanh(atanh(cond) + head), so the untrained G returns its input and
    the network learns only the correction (residual learning, as in image restoration since VDSR; the
    galaxy workload's degraded stamp is already 36 dB from the truth, a random U-Net's first output 26 dB).
    """

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int], *, norm: str = "batch",
                 dropout: float = 0.25, output: str = "tanh", noise_channels: int = 0, residual: bool = False):
        super().__init__()
        if len(widths) < 1:
            raise ValueError("widths: expected at least one level")
        if output not in ("tanh", "sigmoid"):
            raise ValueError(f"output {output!r}: expected tanh or sigmoid")
        if residual and (output != "tanh" or in_channels != out_channels):
            raise ValueError("residual: needs a tanh output and as many output channels as input channels")
        self.residual = bool(residual)
        self.noise_channels = int(noise_channels)
        self.output = output
        self.levels = len(widths)
        c_first = in_channels + self.noise_channels
        self.down = nn.ModuleList(
            ConvBlock(c_first if i == 0 else widths[i - 1], w, norm, dropout) for i, w in enumerate(widths))
        # up[j] merges level j+1 (upsampled) with the skip of level j.
        self.up = nn.ModuleList(
            ConvBlock(widths[j + 1] + widths[j], widths[j], norm, dropout) for j in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        if self.residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if cond.shape[-1] % factor or cond.shape[-2] % factor:
            raise ValueError(f"U-Net with {self.levels} levels needs H and W divisible by {factor}, "
                             f"got {tuple(cond.shape[-2:])}")
        x = cond
        if self.noise_channels:
            noise = sample_noise.randn(cond.shape[0], (self.noise_channels, *cond.shape[2:]), like=cond)
            x = torch.cat([cond, noise], dim=1)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for j in reversed(range(self.levels - 1)):
            x = self.up[j](torch.cat([F.interpolate(x, scale_factor=2, mode="nearest"), skips[j]], dim=1))
        x = self.head(x)
        if self.residual:  # the input's pre-image under tanh; |cond| <= 1 - 1e-6 keeps it finite
            x = x + torch.atanh(cond.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        return torch.tanh(x) if self.output == "tanh" else torch.sigmoid(x)


class PatchDiscriminator(nn.Module):
    """pix2pix 70x70-style PatchGAN: 4x4 convs, stride 2 except the last two; no norm on the first."""

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str = "instance"):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            stride = 2 if i < len(widths) - 1 else 1
            normed = i > 0 and norm != "none"
            # A bias right before a normalisation is removed by it: a parameter with zero gradient that Adam
            # would still move by noise (and that breaks the exact data-parallel comparison).
            layers.append(nn.Conv2d(c, w, 4, stride=stride, padding=2, bias=not normed))
            if normed:
                layers.append(nn.InstanceNorm2d(w) if norm == "instance" else nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c = w
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=2))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """N PatchGANs on the (cond, image) pair average-pooled by 1, 2, 4, ...: coarse scales judge
    layout, the full scale judges texture. Returns one logit map per scale, finest first.

    ``conditional=False`` ignores cond (the call signature stays D(cond, x)): with 44 dense input
    channels beside 3 image channels a conditional D needs many steps before it separates texture
    from blur, more than a CPU-sized run affords."""

    def __init__(self, cond_channels: int, image_channels: int, widths: Sequence[int], scales: int = 3,
                 norm: str = "instance", conditional: bool = True):
        super().__init__()
        if scales < 1:
            raise ValueError("scales: expected at least one")
        self.conditional = conditional
        c_in = image_channels + (cond_channels if conditional else 0)
        self.nets = nn.ModuleList(PatchDiscriminator(c_in, widths, norm) for _ in range(scales))

    def forward(self, cond: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        h = torch.cat([cond, x.to(cond.dtype)], dim=1) if self.conditional else x.to(cond.dtype)
        out = []
        for i, net in enumerate(self.nets):
            if i > 0:
                h = F.avg_pool2d(h, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(h))
        return out


def parameter_count(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, for the trainer's start-up summary."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
