"""The learning-rate schedule, defined so that it means the same at 1 and at 1024 ranks.

The configured learning rates (train.lr_g, train.lr_d) are the rates for one
batch of train.batch_size samples. A step at N ranks with accumulation A sees
k = N x A such batches, so the rate is multiplied by f(k) (train.lr_scaling):
- sqrt (default): f = sqrt(k), the square-root scaling rule that Malladi, Lyu,
  Panigrahi and Arora derive for Adam and RMSprop from their SDE approximation
  ("On the SDEs and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS
  2022, arXiv:2205.10287). The rule also rescales Adam's betas; we keep the
  betas, which the paper finds matters less than the rate at moderate k.
- linear: f = k, Goyal et al.'s rule for SGD ("Accurate, Large Minibatch SGD",
  arXiv:1706.02677); with Adam (beta1 0.5) it overshoots at tens of ranks.
- none: f = 1.
Warm-up climbs linearly from the one-batch rate to the scaled rate over a
number of training *samples* (train.warmup_samples), so it covers the same
part of the data at every rank count. train.warmup_steps (optimizer steps) is
kept for old configs: its share of the run shrinks as ranks grow.

The parameters a workload fits by likelihood alone can have their own rate (train.lr_likelihood, scaled
by the same factor) and a cosine decay to 0 over the run (train.likelihood_schedule): a quantile fitted
at a constant rate keeps wandering with the batch noise: the fast simulation's smearing base, fitted at
lr_g, had 19 % of d0 residuals below its 16 % quantile at |eta| 0.5-1 (README, fast-simulation ablation).

Progress through the warm-up is counted in samples trained (lr_factor_at), so a
job resumed at another rank count continues the warm-up where it stood instead
of jumping; at a fixed rank count the values are those of step counting exactly.
"""
from __future__ import annotations

import math

from hpcgan.config import Config


def lr_scale(cfg: Config, world_size: int) -> float:
    """f(world_size x accumulation): the factor on the one-batch learning rates after warm-up."""
    k = world_size * cfg.train.accumulation
    return {"linear": float(k), "sqrt": math.sqrt(k), "none": 1.0}[cfg.train.lr_scaling]


def warmup_steps(cfg: Config, world_size: int) -> int:
    """Optimizer steps of warm-up at this world size (warmup_samples rounded up to whole global batches)."""
    if cfg.train.warmup_samples > 0:
        return -(-cfg.train.warmup_samples // cfg.global_batch(world_size))
    return cfg.train.warmup_steps


def lr_factor_at(cfg: Config, world_size: int, samples: int) -> float:
    """LR multiplier after `samples` training samples: linear from 1 to lr_scale over the warm-up (whole global
    batches of this rank count), then lr_scale. Progress is samples / global batch, so at a fixed rank count
    this is exactly the value of counting optimizer steps."""
    scaled = lr_scale(cfg, world_size)
    warm = warmup_steps(cfg, world_size)
    done = samples / cfg.global_batch(world_size)
    if warm > 0 and done < warm:
        return 1.0 + (scaled - 1.0) * done / warm
    return scaled


def lr_factor(cfg: Config, world_size: int, step: int) -> float:
    """LR multiplier after `step` optimizer steps at this rank count (lr_factor_at of their samples)."""
    return lr_factor_at(cfg, world_size, step * cfg.global_batch(world_size))


def equivalent_steps(cfg: Config, world_size: int, samples: int) -> int:
    """Optimizer steps at this rank count that train on `samples` samples (rounded): a resume at another rank
    count sets the step counter to this, so the warm-up and the EMA ramp-up (both read it) continue from the
    samples already trained instead of jumping."""
    return int(round(samples / cfg.global_batch(world_size)))


def likelihood_decay(cfg: Config, step: int, total_steps: int) -> float:
    """The factor on train.lr_likelihood after `step` of `total_steps` optimizer steps: 1, or with
    likelihood_schedule cosine (1 + cos(pi x step / total_steps)) / 2, 0 at the end (1 when total_steps is 0:
    outside a run). Steps of this rank count, so a resume at another count continues where it stood."""
    if cfg.train.likelihood_schedule != "cosine" or total_steps <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step / total_steps, 1.0)))
