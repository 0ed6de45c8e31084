"""One GAN optimisation step, backend-agnostic: the unit both the trainer and the benchmarks time.

Order per micro-batch (pix2pixHD's): fake = G(cond) once; G phase with D
frozen (adversarial + matching loss, backward into G only); D phase on
fake.detach(). After all micro-batches each phase's gradients are averaged
over ranks explicitly, once, fused into flat buffers (Backend.sync_gradients),
then both optimizers step. No hook-based optimizer wrapper: in a GAN, G's
backward runs through D and would fire D's hooks (STYLE.md, Horovod #2559/#796).
Extra discriminator steps (train.d_steps > 1) use fresh fakes drawn without grad.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from hpcgan.config import Config
from hpcgan.runtime.backend import Backend
from hpcgan.train.losses import GANLoss
from hpcgan.train.schedule import lr_factor
from hpcgan.workloads import Workload, get_workload


def amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it (Ampere+), fp16 on Pascal/Volta, none on CPU unless asked."""
    if choice == "off":
        return None
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def frozen(module: nn.Module):
    """No parameter gradients for `module` inside the block (D during the G phase)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


@dataclass
class Training:
    """Models, optimizers and precision for one run; `step` does one optimizer step of both networks."""

    cfg: Config
    backend: Backend
    workload: Workload
    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    loss: GANLoss
    device: torch.device
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    channels_last: bool = False
    step_count: int = 0  # optimizer steps taken (drives the LR schedule)
    data: dict = field(default_factory=dict)  # the training data's fingerprint (files, samples), checked on resume
    timings: dict = field(default_factory=lambda: {"sync_s": 0.0})

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def set_lr(self) -> float:
        f = lr_factor(self.cfg, self.backend.size, self.step_count)
        for opt, base in ((self.opt_g, self.cfg.train.lr_g), (self.opt_d, self.cfg.train.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * f
        return f

    def to_device(self, cond: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last and cond.dim() == 4:
            cond = cond.contiguous(memory_format=torch.channels_last)
            real = real.contiguous(memory_format=torch.channels_last)
        return cond, real

    def backward(self, loss: torch.Tensor, scale: float) -> None:
        self.scaler.scale(loss * scale).backward()

    def forward_backward(self, micro: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Accumulate G and D gradients over micro-batches (already prepared, on device)."""
        self.G.train()
        self.D.train()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        scale = 1.0 / len(micro)
        sums: dict[str, torch.Tensor] = {}
        for cond, real in micro:
            cond, real = self.to_device(cond, real)
            with self.autocast():
                fake = self.G(cond)
            # G phase: D frozen, so G's backward through D leaves D's gradients untouched.
            with frozen(self.D), self.autocast():
                g_loss, g_stats = self.loss.g_loss(self.D, cond, real, fake)
            self.backward(g_loss, scale)
            # D phase on the same fakes, detached.
            if self.loss.adversarial:
                with self.autocast():
                    d_loss, d_stats = self.loss.d_loss(self.D, cond, real, fake.detach())
                self.backward(d_loss, scale)
                g_stats.update(d_stats)
            for k, v in g_stats.items():
                sums[k] = sums.get(k, 0.0) + v.float() * scale
        return sums

    def sync_and_step(self, skip: bool = False) -> None:
        """Average each phase's gradients over ranks (once), then step; `skip` drops the update."""
        t0 = _now(self.device)
        self.backend.sync_gradients(self.G.parameters(), group="G")
        if self.loss.adversarial:
            self.backend.sync_gradients(self.D.parameters(), group="D")
        self.timings["sync_s"] += _now(self.device) - t0
        if skip:
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            return
        self.set_lr()
        self.scaler.step(self.opt_g)
        if self.loss.adversarial:
            self.scaler.step(self.opt_d)
        self.scaler.update()
        self.step_count += 1

    def extra_d_steps(self, micro: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """train.d_steps - 1 further discriminator updates on fresh fakes."""
        if not self.loss.adversarial:
            return
        for _ in range(self.cfg.train.d_steps - 1):
            self.opt_d.zero_grad(set_to_none=True)
            for cond, real in micro:
                cond, real = self.to_device(cond, real)
                with torch.no_grad(), self.autocast():
                    fake = self.G(cond)
                with self.autocast():
                    d_loss, _ = self.loss.d_loss(self.D, cond, real, fake)
                self.backward(d_loss, 1.0 / len(micro))
            self.backend.sync_gradients(self.D.parameters(), group="D")
            self.scaler.step(self.opt_d)
            self.scaler.update()

    def step(self, cond: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """One full step on one prepared batch (what benchmarks call)."""
        stats = self.forward_backward([(cond, real)])
        self.sync_and_step()
        self.extra_d_steps([(cond, real)])
        return stats

    @torch.no_grad()
    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        self.G.eval()
        with self.autocast():
            return self.G(self.to_device(cond, cond)[0]).float()


def _now(device: torch.device) -> float:
    import time

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def build_training(cfg: Config, backend: Backend, log=print) -> Training:
    """Models on the device, optimizers, precision; parameters broadcast from rank 0."""
    device = backend.device
    workload = get_workload(cfg)
    torch.manual_seed(cfg.seed)  # identical initialisation on every rank (then broadcast to be sure)
    G = workload.build_generator()
    D = workload.build_discriminator()
    if cfg.train.sync_batchnorm and backend.size > 1:
        G = backend.convert_sync_batchnorm(G)
        D = backend.convert_sync_batchnorm(D)
    channels_last = cfg.train.channels_last and workload.convnet and device.type == "cuda"
    G.to(device)
    D.to(device)
    if channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    backend.broadcast_module(G)
    backend.broadcast_module(D)
    log(f"parameters: G {count_parameters(G):,}  D {count_parameters(D):,}")
    betas = tuple(cfg.train.betas)
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.train.lr_g, betas=betas, fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.train.lr_d, betas=betas, fused=fused)
    dtype = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
    if cfg.train.compile:
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 7:
            log("notice: torch.compile needs compute capability >= 7.0 for GPU kernels; running eager")
        else:
            G = torch.compile(G)
            D = torch.compile(D)
    # Different noise/dropout per rank from here on, reproducible per (seed, rank).
    torch.manual_seed(cfg.seed + 7919 * (backend.rank + 1))
    return Training(cfg=cfg, backend=backend, workload=workload, G=G, D=D, opt_g=opt_g, opt_d=opt_d,
                    loss=GANLoss(cfg.loss), device=device, dtype=dtype, scaler=scaler, channels_last=channels_last)
