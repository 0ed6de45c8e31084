"""What a run does at N ranks, computed from (config, world size, dataset sizes) alone.

The trainer runs by this plan and `hpcgan train --dry-run --world-size N`
prints it, so the dry run cannot drift from the real run. Every decision that
depends on the rank count is made here or in the functions it calls (the
reader's shard_steps and eval_share, the schedule's lr_scale and
warmup_steps): steps per epoch, the remainder, learning rates after scaling,
warm-up, validation shares. `errors` are what a real N-rank job would stop
with; `notices` say where a setting does less than it seems to.
"""
from __future__ import annotations

from dataclasses import dataclass

from hpcgan.config import Config
from hpcgan.data.reader import shard_steps
from hpcgan.errors import AgreedError
from hpcgan.train import schedule


@dataclass(frozen=True)
class Plan:
    world_size: int
    train_samples: int  # samples in data.path
    val_samples: int  # samples in data.val_path (0: no validation)
    batches_per_rank: int  # batches each rank reads per epoch (micro-batches under accumulation)
    steps_per_epoch: int  # optimizer steps per epoch
    total_steps: int  # optimizer steps of the whole run (train.max_steps included)
    global_batch: int  # samples per optimizer step over all ranks
    lr_scale: float  # factor on lr_g and lr_d after warm-up
    lr_g: float  # scaled generator learning rate
    lr_d: float  # scaled discriminator learning rate
    warmup_steps: int
    val_evaluated: int  # validation samples evaluated per epoch, over all ranks
    errors: tuple[str, ...]
    notices: tuple[str, ...]

    @property
    def samples_per_epoch(self) -> int:
        """Training samples that enter optimizer steps per epoch (repeats included under remainder=pad)."""
        return self.steps_per_epoch * self.global_batch

    @property
    def warmup_fraction(self) -> float:
        return min(1.0, self.warmup_steps / self.total_steps) if self.total_steps else 0.0

    def check(self) -> None:
        """Raise the first error. Every rank computes the same plan from agreed sizes, so every rank raises."""
        if self.errors:
            raise AgreedError([self.errors[0]])

    def lines(self, cfg: Config) -> list[str]:
        """The plan as aligned lines for a person (the dry run prints them, the trainer logs them)."""
        t, n = cfg.train, self.world_size
        out = [f"plan at {n} rank(s), workload {cfg.workload}:",
               f"  training data    {self.train_samples} samples ({cfg.data.path})",
               f"  global batch     {self.global_batch} = {n} rank(s) x batch {t.batch_size} x accumulation "
               f"{t.accumulation}"]
        if self.steps_per_epoch:
            unused = self.train_samples - self.samples_per_epoch
            out += [f"  per-rank shard   {self.batches_per_rank} batches of {t.batch_size} = "
                    f"{self.batches_per_rank * t.batch_size} samples per epoch; "
                    + (f"{unused} of {self.train_samples} samples unused per epoch" if unused >= 0 else
                       f"{-unused} samples per epoch are repeats (data.remainder=pad)"),
                    f"  steps            {self.steps_per_epoch} per epoch x {t.epochs} epoch(s) = {self.total_steps}"
                    + (f" (train.max_steps={t.max_steps})" if t.max_steps and t.max_steps < self.steps_per_epoch
                       * t.epochs else "")]
        out.append(f"  learning rates   lr_g {t.lr_g:.3g}, lr_d {t.lr_d:.3g} (one batch) x {self.lr_scale:.4g} "
                   f"(lr_scaling {t.lr_scaling} of {n} rank(s) x accumulation {t.accumulation}) = "
                   f"lr_g {self.lr_g:.3g}, lr_d {self.lr_d:.3g}")
        if t.lr_likelihood:
            out.append(f"  likelihood group lr {t.lr_likelihood:.3g} x {self.lr_scale:.4g} = "
                       f"{t.lr_likelihood * self.lr_scale:.3g}, {t.likelihood_schedule} over "
                       f"{self.steps_per_epoch * t.epochs} steps (train.lr_likelihood: the parameters fitted by "
                       "likelihood alone)")
        if self.warmup_steps:
            out.append(f"  warm-up          {self.warmup_steps} steps = {self.warmup_steps * self.global_batch} "
                       f"samples = {100 * self.warmup_fraction:.1f}% of the run")
        else:
            out.append("  warm-up          none")
        if self.val_samples:
            lo, hi = self.val_evaluated // n, -(-self.val_evaluated // n)  # eval_share's smallest and largest
            idle = max(0, n - self.val_evaluated)
            out.append(f"  validation       {self.val_evaluated} of {self.val_samples} samples per epoch "
                       f"({cfg.data.val_path}); {lo if lo == hi else f'{lo} to {hi}'} per rank in at most "
                       f"{-(-hi // t.batch_size)} batch(es)"
                       + (f"; {idle} rank(s) have none" if idle else ""))
        else:
            out.append("  validation       none (data.val_path is empty)")
        return out + [f"notice: {m}" for m in self.notices] + [f"error: {m}" for m in self.errors]


def validation_samples(cfg: Config, val_samples: int) -> int:
    """Held-out samples evaluated each epoch: val_batches x batch_size (0: all), the same at any rank count."""
    if cfg.train.val_batches:
        return min(val_samples, cfg.train.val_batches * cfg.train.batch_size)
    return val_samples


def make_plan(cfg: Config, world_size: int, train_samples: int, val_samples: int = 0) -> Plan:
    """The plan for `world_size` ranks over datasets of these sizes (val_samples 0: no validation)."""
    t, d = cfg.train, cfg.data
    errors: list[str] = []
    notices: list[str] = []
    global_batch = cfg.global_batch(world_size)
    batches = shard_steps(train_samples, world_size, t.batch_size, d.remainder)
    steps = batches // t.accumulation
    if batches == 0:
        errors.append(f"data.path {d.path}: {train_samples} samples cannot fill one batch of {t.batch_size} on "
                      f"each of {world_size} ranks ({world_size * t.batch_size} per step): use fewer ranks, a "
                      "smaller train.batch_size, more data, or data.remainder=pad")
    elif steps == 0:
        errors.append(f"train.accumulation {t.accumulation}: each of {world_size} ranks reads {batches} batch(es) "
                      f"per epoch, fewer than one optimizer step of {t.accumulation} ({train_samples} samples, "
                      f"global batch {global_batch}): lower train.accumulation or train.batch_size")
    total = steps * t.epochs
    if t.max_steps:
        total = min(total, t.max_steps)
    unused = train_samples - steps * global_batch
    if steps and unused > 0:
        notices.append(f"data.path: {unused} of {train_samples} training samples ({100 * unused / train_samples:.1f}%)"
                       f" are not read each epoch (not a multiple of the global batch {global_batch})")
    elif steps and unused < 0:
        notices.append(f"data.path: {-unused} samples per epoch are repeats (data.remainder=pad: {train_samples} "
                       f"is not a multiple of the global batch {global_batch})")

    scale = schedule.lr_scale(cfg, world_size)
    warm = schedule.warmup_steps(cfg, world_size)
    k = world_size * t.accumulation
    if warm and scale == 1.0:
        why = "lr_scaling is none" if t.lr_scaling == "none" else "one rank without accumulation"
        notices.append(f"the warm-up does nothing: {why}, so the scaled LR equals the one-batch LR")
    elif warm and total and warm >= total:
        notices.append(f"the warm-up ({warm} steps) is as long as the run ({total} steps): the LR never reaches "
                       f"its scaled value")
    if t.warmup_steps and world_size > 1:
        notices.append(f"train.warmup_steps counts optimizer steps, which get fewer as ranks grow "
                       f"({warm} steps = {warm * global_batch} samples here); train.warmup_samples means the "
                       "same at any rank count")
    if t.lr_scaling == "linear" and k > 1:
        notices.append(f"lr_scaling linear multiplies Adam's rates by {k}; the square-root rule (sqrt) suits Adam")

    evaluated = validation_samples(cfg, val_samples)
    if val_samples and evaluated < world_size:
        notices.append(f"validation: {evaluated} samples for {world_size} ranks, so {world_size - evaluated} "
                       "rank(s) evaluate none (they only join the reduction)")
    return Plan(world_size=world_size, train_samples=train_samples, val_samples=val_samples,
                batches_per_rank=batches, steps_per_epoch=steps, total_steps=total, global_batch=global_batch,
                lr_scale=scale, lr_g=t.lr_g * scale, lr_d=t.lr_d * scale, warmup_steps=warm,
                val_evaluated=evaluated, errors=tuple(errors), notices=tuple(notices))
