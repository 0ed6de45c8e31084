"""One GAN optimisation step, backend-agnostic: the unit both the trainer and the benchmarks time.

The step is a list of phases (hpcgan/train/phases.py: G_main, D_main, D_reg, G_ema, each with its
network, loss and interval). Per micro-batch (pix2pixHD's order): fake = G(cond) once, then each due
gradient phase in list order, its loss back-propagated into its own network (D is frozen in G's phase;
D's phases see fake.detach()). After all micro-batches the trainer checks losses and
gradients for NaN/Inf on every rank (nonfinite_flags, agreed in its control
allreduce); then each network's gradients are averaged over ranks explicitly,
once, fused into flat buffers (Backend.sync_gradient_groups), the optimizers step, and the after-step
phases (the generator EMA) run. No hook-based optimizer wrapper: in a GAN, G's
backward runs through D and would fire D's hooks (STYLE.md, Horovod #2559/#796).
Extra discriminator rounds (train.d_steps > 1) run D's phases on fresh fakes drawn without grad.
Precision (autocast dtype, fp32 parts) comes from the workload's policy: hpcgan/workloads/precision.py.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from hpcgan.config import Config
from hpcgan.errors import UserError
from hpcgan.runtime.backend import Backend
from hpcgan.train.checkpoint import unwrap
from hpcgan.train.losses import GANLoss
from hpcgan.train.optim import at_iterate, build_optimizer
from hpcgan.train.phases import Micro, Phase, build_phases
from hpcgan.train.schedule import likelihood_decay, lr_factor
from hpcgan.workloads import Workload, get_workload, noise as sample_noise, precision


def amp_dtype(choice: str, device: torch.device, workload: Workload | None = None) -> torch.dtype | None:
    """train.amp -> autocast dtype under the workload's precision policy (precision.resolve)."""
    policy = workload.precision if workload is not None else precision.Precision()
    return precision.resolve(choice, device, policy, workload.name if workload is not None else "")


# A micro-batch ready for the step: (cond, real, valid mask or None), on the device.
Prepared = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]

# Which samples a step's micro-batches hold: (epoch, the global dataset indices of each micro-batch). With it
# the generator's noise is per sample (hpcgan/workloads/noise.py): the same at any rank count.
Samples = tuple[int, Sequence[np.ndarray]]

GRAD_COMPRESSION = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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
    sync_timer: "DeviceTimer" = None  # type: ignore[assignment]  # time in gradient sync, read per log interval
    G_ema: nn.Module | None = None  # the generator's moving average (train.ema_halflife_samples), or None
    best: dict = field(default_factory=dict)  # {"metric", "mode", "value", "global_step"} of checkpoints/best.pt
    phases: list[Phase] = field(default_factory=list)  # the step as data (phases.build_phases)
    total_steps: int = 0  # optimizer steps of the whole run at this rank count (the likelihood decay; 0: none)

    def __post_init__(self) -> None:
        if self.sync_timer is None:
            self.sync_timer = DeviceTimer(self.device)
        if not self.phases:
            self.phases = build_phases(self.cfg)

    @property
    def networks(self) -> list[str]:
        """The networks some gradient phase trains, in sync and step order ("G", then "D" if adversarial)."""
        return [n for n in ("G", "D") if any(p.network == n and p.loss is not None for p in self.phases)]

    def module(self, network: str) -> nn.Module:
        return self.G if network == "G" else self.D

    def optimizer(self, network: str) -> torch.optim.Optimizer:
        return self.opt_g if network == "G" else self.opt_d

    @property
    def grad_compression(self) -> torch.dtype | None:
        """dtype of the gradient allreduce (train.grad_compression), None for the gradients' own."""
        return GRAD_COMPRESSION[self.cfg.train.grad_compression]

    def autocast(self):
        return precision.autocast(self.device, self.dtype)

    def set_lr(self) -> float:
        """Every group's rate for this step: the configured one-batch rate x the rank-count factor (warm-up
        included); the likelihood group's (train.lr_likelihood) also x its own decay over the run."""
        c = self.cfg.train
        f = lr_factor(self.cfg, self.backend.size, self.step_count)
        for opt, base in ((self.opt_g, c.lr_g), (self.opt_d, c.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * f
        for group in self.opt_g.param_groups:
            if group.get("name") == LIKELIHOOD_GROUP:
                group["lr"] = c.lr_likelihood * f * likelihood_decay(self.cfg, self.step_count, self.total_steps)
        return f

    def to_device(self, cond: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last and cond.dim() == 4:
            cond = cond.contiguous(memory_format=torch.channels_last)
            real = real.contiguous(memory_format=torch.channels_last)
        return cond, real

    def backward(self, loss: torch.Tensor, scale: float) -> None:
        self.scaler.scale(loss * scale).backward()

    def forward_backward(self, micro: Sequence[Prepared], samples: Samples | None = None) -> dict[str, torch.Tensor]:
        """Accumulate every due phase's gradients over the micro-batches (cond, real, valid), prepared and on
        the device; returns the phases' statistics, averaged over the micro-batches. `samples`: which samples
        they are, for per-sample noise (None: torch's generator, as benchmarks and inference use)."""
        self.G.train()
        self.D.train()
        for network in self.networks:
            self.optimizer(network).zero_grad(set_to_none=True)
        # BatchNorm's running statistics change in the forward pass: kept, so a skipped step can undo them.
        self._buffers_before = [(b, b.detach().clone()) for m in (self.G, self.D) for b in m.buffers()]
        rounds = {"G": self.step_count, "D": self.step_count * self.cfg.train.d_steps}
        self._d_round = rounds["D"]  # the extra D rounds of this step follow it
        scale = 1.0 / len(micro)
        sums: dict[str, torch.Tensor] = {}
        for a, (cond, real, valid) in enumerate(micro):
            cond, real = self.to_device(cond, real)
            with sample_noise.keyed(self.noise_keys(samples, a, purpose=0)), self.autocast():
                fake = self.G(cond)
            stats = self.run_phases(Micro(cond, real, valid, fake), rounds, scale, self.networks)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v.float() * scale
        return sums

    def noise_keys(self, samples: Samples | None, micro_index: int, purpose: int) -> torch.Tensor | None:
        """The per-sample noise keys of one micro-batch for one use of G (0: the step's fakes, j: extra D
        round j's), or None without `samples`."""
        if samples is None:
            return None
        epoch, indices = samples
        return sample_noise.sample_keys(self.cfg.seed, epoch, indices[micro_index], purpose)

    def run_phases(self, m: Micro, rounds: dict[str, int], scale: float,
                   networks: Sequence[str]) -> dict[str, torch.Tensor]:
        """The gradient phases of `networks` on one micro-batch, in list order: each due phase's loss,
        times its interval, back-propagated with weight `scale`. Returns their statistics."""
        stats: dict[str, torch.Tensor] = {}
        for phase in self.phases:
            if phase.loss is None or phase.network not in networks:
                continue
            if not phase.due(rounds[phase.network]):
                stats.update({k: torch.zeros((), device=self.device) for k in phase.idle_stats})
                continue
            loss, phase_stats = phase.loss(self, m)
            if phase.interval > 1:  # lazy: the loss of the due rounds, scaled up to its per-round mean
                loss = loss * phase.interval
                phase_stats = {k: v * phase.interval for k, v in phase_stats.items()}
            self.backward(loss, scale)
            stats.update(phase_stats)
        return stats

    def gradients(self) -> list[torch.Tensor]:
        return [p.grad for n in self.networks for p in self.module(n).parameters() if p.grad is not None]

    def nonfinite_flags(self, stats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(any loss non-finite, any gradient non-finite) on this rank, as device tensors: no host sync."""
        return _any_nonfinite(list(stats.values()), self.device), _any_nonfinite(self.gradients(), self.device)

    def sync_and_step(self, skip: bool = False) -> None:
        """Average each network's gradients over ranks (once, all networks' buckets issued together), step
        the optimizers, then run the after-step phases; `skip` drops the update."""
        if skip:
            for network in self.networks:
                self.optimizer(network).zero_grad(set_to_none=True)
            with torch.no_grad():  # the skipped step leaves no trace, its (possibly NaN) statistics included
                for buf, before in getattr(self, "_buffers_before", []):
                    buf.copy_(before)
            return
        with self.sync_timer.measure():  # G's and D's buckets issued together, then waited for
            self.backend.sync_gradient_groups({n: self.module(n).parameters() for n in self.networks},
                                              self.grad_compression)
        self.set_lr()
        for network in self.networks:
            self.scaler.step(self.optimizer(network))
        self.scaler.update()
        self.step_count += 1
        if any(p.network == "G_ema" for p in self.phases):
            self.update_ema()

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- beta G_ema + (1 - beta) G after an optimizer step, beta = 0.5 ** (global batch / half-life):
        the half-life is in samples, so it means the same at every rank count and batch size. As in
        stylegan2-ada the half-life ramps up (at most ema_rampup x the samples seen), so the average does not
        drag the random initialisation along. Every rank holds the same synchronised G, so every rank's
        G_ema is the same without communication. Buffers (BatchNorm's running statistics) are copied from
        G, not averaged: the statistics of the current weights, which the averaged weights are close to."""
        if self.G_ema is None or not at_iterate(self.opt_g):
            return  # between ExtraAdam's halves G is a look-ahead point, not an iterate
        c = self.cfg.train
        batch = self.cfg.global_batch(self.backend.size)
        if c.optimizer == "extra_adam":
            batch *= 2  # one average per full extragradient step: the samples of both halves
        halflife = float(c.ema_halflife_samples)
        if c.ema_rampup > 0:
            halflife = min(halflife, self.step_count * batch * c.ema_rampup)
        beta = 0.5 ** (batch / max(halflife, 1e-8))
        G = unwrap(self.G)
        for p_ema, p in zip(self.G_ema.parameters(), G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)

    def skip_overflow(self) -> None:
        """An fp16 gradient overflow on some rank (all ranks agree): drop the update and lower the loss scale.

        What GradScaler does itself after a step with inf gradients, done here without a step so every
        rank backs off identically whatever its own gradients held (the scale must stay equal across ranks)."""
        self.sync_and_step(skip=True)
        state = self.scaler.state_dict()
        state["scale"] *= state["backoff_factor"]
        state["_growth_tracker"] = 0
        self.scaler.load_state_dict(state)

    def load_scaler_state(self, state: dict, log=print) -> None:
        """A checkpoint's scaler state; moving between precisions (off/bf16 <-> fp16) is allowed.

        A disabled scaler saves {}: an fp16 run resumed from it starts with a fresh scale."""
        if not self.scaler.is_enabled():
            return
        if not state:
            log("notice: the checkpoint was trained without fp16 loss scaling; starting a fresh gradient scaler")
            return
        self.scaler.load_state_dict(state)

    def extra_d_steps(self, micro: Sequence[Prepared], samples: Samples | None = None) -> None:
        """train.d_steps - 1 further discriminator rounds on fresh fakes: D's phases (lazy R1 where due), each
        round synced and stepped on its own, and skipped if any rank's gradients are non-finite (one extra
        flag collective per extra round)."""
        if "D" not in self.networks:
            return
        for j in range(1, self.cfg.train.d_steps):
            rounds = {"D": self._d_round + j}
            self.opt_d.zero_grad(set_to_none=True)
            for a, (cond, real, valid) in enumerate(micro):
                cond, real = self.to_device(cond, real)
                with torch.no_grad(), sample_noise.keyed(self.noise_keys(samples, a, purpose=j)), self.autocast():
                    fake = self.G(cond)
                self.run_phases(Micro(cond, real, valid, fake), rounds, 1.0 / len(micro), ["D"])
            bad = _any_nonfinite([p.grad for p in self.D.parameters() if p.grad is not None], self.device)
            if self.backend.allreduce(bad.float().reshape(1), op="max", name="d_flag").item() > 0:
                self.opt_d.zero_grad(set_to_none=True)
                continue
            with self.sync_timer.measure():
                self.backend.sync_gradients(self.D.parameters(), group="D", compression=self.grad_compression)
            self.scaler.step(self.opt_d)
            self.scaler.update()

    def step(self, cond: torch.Tensor, real: torch.Tensor,
             valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One full step on one prepared batch (what benchmarks call)."""
        stats = self.forward_backward([(cond, real, valid)])
        self.sync_and_step()
        self.extra_d_steps([(cond, real, valid)])
        return stats

    def prepare(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> Prepared:
        """A reader batch (inputs, targets, valid) -> (cond, real) in model space and the mask, on the device."""
        inputs, targets, valid = batch
        cond, real = self.workload.prepare(inputs, targets, self.device)
        return cond, real, None if valid is None else valid.to(self.device, non_blocking=True)

    @torch.no_grad()
    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        """Validation's generator: the EMA copy when the run keeps one, else G."""
        G = self.G_ema if self.G_ema is not None else self.G
        G.eval()
        with self.autocast():
            return G(self.to_device(cond, cond)[0]).float()


def _any_nonfinite(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A 0-d bool on the device: some element is NaN or Inf (max |x| per tensor, fused; no host sync)."""
    if not tensors:
        return torch.zeros((), dtype=torch.bool, device=device)
    norms = torch._foreach_norm([t.detach() for t in tensors], float("inf"))
    return ~torch.isfinite(torch.stack([n.float() for n in norms])).all()


class DeviceTimer:
    """Seconds spent in a block, summed over a logging interval, without stalling the host each step:
    CUDA events on a GPU (read once, at `take`), the wall clock on CPU (where collectives block anyway)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list = []
        self.seconds = 0.0

    @contextlib.contextmanager
    def measure(self):
        if not self.cuda:
            t0 = time.perf_counter()
            yield
            self.seconds += time.perf_counter() - t0
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self.events.append((start, end))

    def take(self) -> float:
        """Seconds since the last take (waits for the recorded events: call on logging steps only)."""
        total = self.seconds
        for start, end in self.events:
            end.synchronize()
            total += start.elapsed_time(end) / 1e3
        self.events, self.seconds = [], 0.0
        return total


def spectral_normed(D: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv and linear weight of D, through torch's own
    parametrisation: the state dict holds the raw weight and the power iteration's vectors, so checkpoints,
    resume and broadcast carry them. One power iteration per training forward, the same on every rank."""
    from torch.nn.utils.parametrizations import spectral_norm

    for module in list(D.modules()):
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)):
            spectral_norm(module)
    return D


LIKELIHOOD_GROUP = "likelihood"  # the name of G's optimizer group of train.lr_likelihood


def generator_groups(cfg: Config, workload: Workload, G: nn.Module) -> list[dict]:
    """G's optimizer groups: one, or with train.lr_likelihood two, the parameters only the workload's
    likelihood trains (Workload.likelihood_parameters) apart, at their own rate."""
    c = cfg.train
    if c.lr_likelihood == 0:
        return [{"params": list(G.parameters()), "name": "G"}]
    fitted = workload.likelihood_parameters(unwrap(G))
    if not fitted:
        raise UserError(f"config key train.lr_likelihood: workload {cfg.workload} fits no parameters by likelihood "
                        f"alone in this configuration, expected 0 (got {c.lr_likelihood:g})")
    ids = {id(p) for p in fitted}
    group = {"params": fitted, "name": LIKELIHOOD_GROUP, "lr": c.lr_likelihood}
    return [{"params": [p for p in G.parameters() if id(p) not in ids], "name": "G"}, group]


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
    if cfg.train.d_spectral_norm:
        D = spectral_normed(D)
    channels_last = cfg.train.channels_last and workload.convnet and device.type == "cuda"
    G.to(device)
    D.to(device)
    if channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    backend.broadcast_module(G)
    backend.broadcast_module(D)
    log(f"parameters: G {count_parameters(G):,}  D {count_parameters(D):,}")
    opt_g = build_optimizer(generator_groups(cfg, workload, G), cfg.train.lr_g, cfg.train, device)
    opt_d = build_optimizer(D.parameters(), cfg.train.lr_d, cfg.train, device)
    dtype = amp_dtype(cfg.train.amp, device, workload)
    log(precision.describe(dtype, workload.precision))
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
    if workload.convnet and device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest conv algorithms once
    if cfg.train.compile:
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 7:
            log("notice: torch.compile needs compute capability >= 7.0 for GPU kernels; running eager")
        else:
            G = torch.compile(G)
            D = torch.compile(D)
    G_ema = None
    if cfg.train.ema_halflife_samples > 0:  # starts as G's copy (already broadcast: the same on every rank)
        G_ema = copy.deepcopy(unwrap(G)).eval().requires_grad_(False)
        log(f"generator EMA: half-life {cfg.train.ema_halflife_samples:,} samples "
            f"(ramp-up {cfg.train.ema_rampup:g} of the samples seen); validation, evaluate, generate and export "
            "use it")
    # Draws outside per-sample noise (benchmarks, direct tr.step calls): per rank, reproducible per (seed, rank).
    torch.manual_seed(cfg.seed + 7919 * (backend.rank + 1))
    return Training(cfg=cfg, backend=backend, workload=workload, G=G, D=D, opt_g=opt_g, opt_d=opt_d,
                    loss=GANLoss(cfg.loss), device=device, dtype=dtype, scaler=scaler, channels_last=channels_last,
                    G_ema=G_ema)
