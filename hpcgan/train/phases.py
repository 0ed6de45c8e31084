"""The GAN step as data (stylegan2-ada's phases): which loss terms run, for which network, how often.

A phase is a name, the network whose gradients its loss feeds, the loss (one entry point per phase),
and an interval: a lazy phase (R1 every k rounds) runs on every k-th round of its network and its loss
is scaled by k, so its mean contribution stays the same. The step itself (hpcgan/train/step.py) runs the
phases in list order on each micro-batch, syncs each network's gradients once, steps the optimizers,
then runs the after-step phases (the generator EMA). Today's step is the list

    G_main  (adversarial + matching + the workload's likelihood term; D frozen)
    D_main  (on the same fakes, detached)          if loss.lambda_gan > 0
    D_reg   (R1 on real samples, lazy)             if loss.r1_gamma > 0
    G_ema   (moving average of G, after the step)  if train.ema_halflife_samples > 0

A network's rounds are counted from its optimizer steps: G has one round per step; D has train.d_steps,
the first on the step's own fakes and the others on fresh ones, so lazy R1 runs in whichever D round is
due, extra ones included.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from hpcgan.config import Config

if TYPE_CHECKING:
    from hpcgan.train.step import Training


@dataclass
class Micro:
    """One micro-batch in model space, on the device, with the generator's output for it."""

    cond: torch.Tensor
    real: torch.Tensor
    valid: torch.Tensor | None
    fake: torch.Tensor


Loss = Callable[["Training", Micro], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


@dataclass(frozen=True)
class Phase:
    name: str
    network: str  # "G" or "D": whose gradients the loss feeds and whose optimizer steps; "G_ema": no gradients
    loss: Loss | None  # None: an after-step phase
    interval: int = 1  # runs on rounds r with r % interval == 0, its loss and statistics scaled by interval
    idle_stats: tuple[str, ...] = ()  # statistics logged as 0 on rounds it skips (steady metric columns)

    def due(self, round_index: int) -> bool:
        return round_index % self.interval == 0


def g_main(tr: "Training", m: Micro) -> tuple[torch.Tensor, dict]:
    """The generator's loss with D frozen, so G's backward through D leaves D's gradients untouched."""
    with frozen(tr.D), tr.autocast():
        loss, stats = tr.loss.g_loss(tr.D, m.cond, m.real, m.fake, m.valid)
        nll = tr.workload.likelihood_loss(tr.G, m.cond, m.real)
        if nll is not None:
            loss = loss + nll
            stats.update(g_nll=nll.detach(), g_loss=loss.detach())
    return loss, stats


def d_main(tr: "Training", m: Micro) -> tuple[torch.Tensor, dict]:
    """The discriminator's loss on real samples and the (detached) fakes."""
    with tr.autocast():
        return tr.loss.d_loss(tr.D, m.cond, m.real, m.fake.detach(), m.valid)


def d_reg(tr: "Training", m: Micro) -> tuple[torch.Tensor, dict]:
    """R1 on real samples (fp32 inside, whatever the step's precision); logs E|grad_x D|^2."""
    r1, norm2 = tr.loss.r1_penalty(tr.D, m.cond, m.real)
    return r1, {"d_r1": norm2}


def build_phases(cfg: Config) -> list[Phase]:
    """The phase list a configuration asks for (the module docstring lists them)."""
    phases = [Phase("G_main", "G", g_main)]
    if cfg.loss.lambda_gan > 0:
        phases.append(Phase("D_main", "D", d_main))
        if cfg.loss.r1_gamma > 0:
            phases.append(Phase("D_reg", "D", d_reg, interval=cfg.loss.r1_interval, idle_stats=("d_r1",)))
    if cfg.train.ema_halflife_samples > 0:
        phases.append(Phase("G_ema", "G_ema", None))
    return phases


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """No parameter gradients for `module` inside the block (D during the G phase)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)
