"""Where a resumed run continues, at any rank count: computed from the checkpoint's numbers and this job's
(config, world size, dataset size) alone, so every rank, and the dry run, reach the same answer.

The epoch order is cut into global batches (hpcgan/data/reader.py), so what a checkpoint has consumed of
its epoch is a prefix of that order: `consumed` positions of the order made for global batches of `unit`
samples. A run with the same unit continues at global batch consumed / unit, whatever the rank count (2 x b
resumed at 1 x 2b continues exactly); with another unit (other ranks x batch, or another accumulation) the
rest of that order is cut into the new global batches (continued_plan): every sample not yet consumed is
read once, and a tail shorter than one new global batch is left out of that epoch (said in the line).
A checkpoint at an epoch's last step has nothing left: the next epoch starts.

What cannot be continued restarts the interrupted epoch, as before: another seed, shuffle, shuffle block,
remainder, data.cache with another split, or a checkpoint written before the order was global-batch first
at more than one rank (its ranks read contiguous parts of the order).
"""
from __future__ import annotations

from dataclasses import dataclass

from hpcgan.config import Config
from hpcgan.data.reader import shard_steps
from hpcgan.train.agreement import epoch_order_changes

# Keys whose change makes the checkpoint's order unknowable to this run (batch and accumulation are not
# among them: they only change how the rest of the order is cut).
RESTART_KEYS = ("seed", "data.shuffle", "data.shuffle_block", "data.remainder", "data.cache")


@dataclass(frozen=True)
class Continuation:
    """Epoch `epoch` was begun under another split: its order is cut into global batches of `unit` samples and
    this run's step `first_step` starts at position `consumed` of it."""

    epoch: int
    unit: int
    consumed: int
    first_step: int


@dataclass(frozen=True)
class ResumePoint:
    step_in_epoch: int  # the loop's first step in the epoch (steps_per_epoch - steps left when continued)
    continuation: Continuation | None  # None: this run's own order, from step_in_epoch on
    line: str  # one line for the log: how the epoch continues ("" when nothing changed)


def epoch_position(meta: dict) -> tuple[int, int]:
    """(unit, consumed) of the checkpoint's epoch; older checkpoints: from their split and step."""
    order = meta.get("epoch_order")
    if order:
        return int(order["unit"]), int(order["consumed"])
    t = (meta.get("config") or {}).get("train") or {}
    unit = int(meta["world_size"]) * int(t.get("batch_size", 1))
    return unit, int(meta["step_in_epoch"]) * unit * int(t.get("accumulation", 1))


def resume_point(meta: dict, cfg: Config, world_size: int, train_samples: int, steps_per_epoch: int) -> ResumePoint:
    """How the checkpoint's epoch continues here (module doc)."""
    t, d = cfg.train, cfg.data
    old_cfg = meta.get("config") or {}
    old_ws = int(meta["world_size"])
    step = int(meta["step_in_epoch"])
    unit, consumed = epoch_position(meta)
    new_unit = world_size * t.batch_size
    new_global = new_unit * t.accumulation
    split = ([f"ranks {old_ws} -> {world_size}"] if old_ws != world_size else []) + [
        c for c in epoch_order_changes(old_cfg, cfg) if c.split(" ")[0] in ("train.batch_size", "train.accumulation")]
    restart = [c for c in epoch_order_changes(old_cfg, cfg) if c.split(" ")[0] in RESTART_KEYS]
    if step == 0 and consumed == 0:
        changed = split + restart
        return ResumePoint(0, None, f"changed since the checkpoint: {'; '.join(changed)} (at an epoch boundary: the "
                                    "next epoch uses the new values)" if changed else "")
    legacy = not meta.get("epoch_order") and old_ws > 1
    if restart or legacy or (split and d.cache):
        why = "; ".join(restart) if restart else ("data.cache keeps a shard per rank" if not legacy else
                                                   f"a checkpoint from before global-batch ordering at {old_ws} ranks")
        return ResumePoint(0, None, f"changed since the checkpoint: {'; '.join(split + restart) or why}. The samples "
                                    f"epoch {meta['epoch'] + 1} consumed cannot be known here ({why}), so it "
                                    "restarts from its first step")
    length = shard_steps(train_samples, 1, unit, d.remainder) * unit
    rest = length - consumed
    if unit == new_unit and consumed % new_global == 0:
        first = min(consumed // new_global, steps_per_epoch)
        cont = None
    else:
        micro = -(-rest // new_unit) if d.remainder == "pad" else rest // new_unit
        left = min(micro // t.accumulation, steps_per_epoch)
        first = steps_per_epoch - left
        cont = Continuation(int(meta["epoch"]), unit, consumed, first)
    left = steps_per_epoch - first
    if not split:
        return ResumePoint(first, cont, "")
    e = meta["epoch"] + 1
    if rest <= 0 or left == 0:
        tail = f" ({rest} samples, less than one global batch of {new_global}, left out)" if rest > 0 else ""
        return ResumePoint(first, cont, f"{'; '.join(split)}: epoch {e} was complete at the checkpoint{tail}; "
                                        f"epoch {e + 1} starts")
    dropped = max(0, rest - left * new_global)
    return ResumePoint(first, cont, (
        f"{'; '.join(split)}: epoch {e} continues with the {rest} samples not yet consumed ({consumed} of {length} "
        f"trained, {consumed / (unit * int((old_cfg.get('train') or {}).get('accumulation', 1))):g} global batches "
        f"of {old_ws} rank(s)) in {left} steps of {new_global}"
        + (f"; {dropped} left out (no whole global batch)" if dropped else "")))


def consumed_at(pos_epoch: int, step_in_epoch: int, continuation: Continuation | None, cfg: Config,
                world_size: int) -> tuple[int, int]:
    """(unit, consumed) after `step_in_epoch` steps of epoch `pos_epoch`: what a checkpoint records."""
    new_unit = world_size * cfg.train.batch_size
    new_global = new_unit * cfg.train.accumulation
    c = continuation
    if c is not None and c.epoch == pos_epoch:
        return c.unit, c.consumed + (step_in_epoch - c.first_step) * new_global
    return new_unit, step_in_epoch * new_global
