"""The optimizers of both networks (train.optimizer): Adam, or Adam with extrapolation (ExtraAdam).

ExtraAdam is Gidel et al. 2019 ("A Variational Inequality Perspective on Generative Adversarial
Networks", ICLR), Algorithm 4, the optimizer of the reference CRF code (clouds_dist). No maintained
package provides it, so it is written here, against the paper and the authors' public code: both halves
of the extragradient step update Adam's moments, as there.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from hpcgan.config import TrainConfig


class ExtraAdam(torch.optim.Optimizer):
    """Adam with an extrapolation step. From the iterate w, the extrapolation goes to the look-ahead point
    w' = w + adam(g(w)); the update then steps from w, not w', with the gradient taken at w':
    w <- w + adam(g(w')). In a GAN this damps the rotation that makes simultaneous gradient steps cycle
    around an equilibrium.

    Each `step` call does one half, alternately (extrapolation first). So one trainer step is one
    gradient evaluation, one gradient sync across ranks and one optimizer call, exactly as with Adam.
    Accumulation is unchanged: it forms the gradient that each half uses. A full extragradient step takes
    two trainer steps, each on its own batch, as in the paper's stochastic setting. Between the halves the
    model holds w' and the optimizer state holds w ("iterate"), so a checkpoint taken between them resumes
    exactly. `at_iterate` tells whether the weights are an iterate; the generator EMA averages iterates
    only."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, extrapolated=False))

    @property
    def at_iterate(self) -> bool:
        """False between an extrapolation and its update (the weights are the look-ahead point)."""
        return not self.param_groups[0]["extrapolated"]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            extrapolate = not group["extrapolated"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
                update = exp_avg / denom * (-group["lr"] / (1 - beta1 ** t))
                if extrapolate:
                    state["iterate"] = p.detach().clone()
                    p.add_(update)
                else:
                    start = state.pop("iterate", None)  # None: this parameter had no gradient at extrapolation
                    p.copy_(update.add_(p if start is None else start))
            group["extrapolated"] = extrapolate
        return loss


def at_iterate(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's weights are an iterate (always, except between ExtraAdam's two halves)."""
    return getattr(optimizer, "at_iterate", True)


def build_optimizer(params: Iterable[torch.nn.Parameter], lr: float, cfg: TrainConfig,
                    device: torch.device) -> torch.optim.Optimizer:
    """train.optimizer for one network, with train.betas (Adam fused on a GPU)."""
    betas = tuple(cfg.betas)
    if cfg.optimizer == "extra_adam":
        return ExtraAdam(params, lr=lr, betas=betas)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=device.type == "cuda")
