"""The training loop: one readable function, helpers for everything around it.

Per step: read a batch (prefetched), G and D forward/backward (step.py), one
small control allreduce at the step boundary (non-finite loss or gradients
anywhere? a preemption signal anywhere?) so ranks never disagree and no
optimizer steps on a NaN, gradient sync + optimizer steps, then logging,
checkpoints and validation on their intervals. Reading that control vector is
the step's one host synchronisation: statistics stay on the device until the
logging interval.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hpcgan.config import Config
from hpcgan.data.reader import ShardedReader
from hpcgan.errors import AgreedError
from hpcgan.runtime import faults, signals
from hpcgan.runtime.backend import Backend
from hpcgan.train import checkpoint as ckpt
from hpcgan.train import schedule
from hpcgan.train.agreement import agree_on_buffers, agree_on_data, check_same_training_data, scan_shares
from hpcgan.train.ledger import LedgerWriter, next_segment
from hpcgan.train.plan import Plan, make_plan, validation_samples
from hpcgan.train.resume import Continuation, consumed_at, resume_point
from hpcgan.train.run_dir import RunDir, environment_record
from hpcgan.train.staging import staged_data
from hpcgan.train.step import Training, build_training

EXIT_NONFINITE = 4


@dataclass
class Position:
    """Where training stands: the next (epoch, step in epoch) to run, and optimizer steps done; how the current
    epoch's order is read when it was begun under another split (continuation); and the samples trained
    before this run's optimizer step `steps_base` (the schedule counts samples across rank counts)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    continuation: Continuation | None = None
    samples_base: int = 0
    steps_base: int = 0

    def samples_seen(self, tr: Training) -> int:
        """Samples in the optimizer steps taken so far, over every rank count the run had."""
        return self.samples_base + (tr.step_count - self.steps_base) * tr.cfg.global_batch(tr.backend.size)


@dataclass
class Meter:
    """Local sums over one logging interval, kept as device tensors (no host sync per step);
    read and reduced across ranks only when logged."""

    stats: dict = field(default_factory=dict)
    steps: int = 0
    samples: int = 0
    data_s: float = 0.0
    overflows: int = 0  # fp16 steps skipped for a gradient overflow (the scaler backed off)
    start: float = field(default_factory=time.perf_counter)

    def add(self, stats: dict, samples: int, data_s: float) -> None:
        for k, v in stats.items():
            self.stats[k] = self.stats[k] + v if k in self.stats else v.detach().clone()
        self.steps += 1
        self.samples += samples
        self.data_s += data_s

    def means(self) -> dict[str, float]:
        """Per-step means of the statistics: one device-to-host copy for all of them."""
        keys = list(self.stats)
        values = torch.stack([self.stats[k].float() for k in keys]).tolist() if keys else []
        return {k: v / max(self.steps, 1) for k, v in zip(keys, values)}


class CheckpointFailed(RuntimeError):
    """The checkpoint write failed on rank 0 (every rank raises it together)."""


class NonFiniteModel(RuntimeError):
    """The weights about to be checkpointed are not finite (never written)."""


def make_reader(cfg: Config, rank: int, size: int, path: str, train: bool, pin_memory: bool = False,
                copies: dict[str, str] | None = None) -> ShardedReader:
    """Rank `rank` of `size`'s reader (integers, so the dry run can open one for any world size).
    Validation reads eval_batches: every sample once, uneven shares, no shuffle, no cache.
    `copies`: node-local copies to read instead of the files (data.stage). The finite-value scan is left to
    the caller (agreement.scan_shares: each rank its share, once per data set)."""
    return ShardedReader(
        path, rank, size, cfg.train.batch_size, cfg.seed,
        shuffle=cfg.data.shuffle and train, shuffle_block=cfg.data.shuffle_block, prefetch=cfg.data.prefetch,
        cache=cfg.data.cache and train, normalize=cfg.data.normalize, check_finite=cfg.data.check_finite,
        remainder=cfg.data.remainder, pin_memory=pin_memory, copies=copies, defer_scan=True)


def train(cfg: Config, backend: Backend, resume: str = "auto") -> int:
    """Train cfg on this backend; returns the process exit code (0, EXIT_REQUEUE, EXIT_NONFINITE).
    With data.stage the data files are first copied to node-local storage, and removed on any exit."""
    log = _logger(backend)
    log(f"hpcgan train: workload {cfg.workload}, {backend.size} rank(s), backend {backend.describe()}, "
        f"device {backend.device}, global batch {cfg.global_batch(backend.size)}, run dir {cfg.run_dir}")
    with staged_data(cfg, backend, log) as copies:
        return _train(cfg, backend, resume, copies, log)


def _train(cfg: Config, backend: Backend, resume: str, copies: dict[str, str], log) -> int:
    run = RunDir(cfg.run_dir, active=backend.is_root)

    # Section: data, the plan at this world size (the dry run prints the same), models.
    pin = backend.device.type == "cuda"
    reader = make_reader(cfg, backend.rank, backend.size, cfg.data.path, train=True, pin_memory=pin, copies=copies)
    val_reader = (make_reader(cfg, backend.rank, backend.size, cfg.data.val_path, train=False, pin_memory=pin,
                              copies=copies) if cfg.data.val_path else None)
    data = agree_on_data(backend, {"data.path": reader, **({"data.val_path": val_reader} if val_reader else {})})
    scan_shares(backend, [reader] + ([val_reader] if val_reader else []))
    plan = make_plan(cfg, backend.size, reader.num_samples, val_reader.num_samples if val_reader else 0)
    for line in plan.lines(cfg):
        log(line)
    plan.check()
    tr = build_training(cfg, backend, log)
    tr.workload.check_dataset(reader.attrs, cfg.data.path)
    tr.data = data["data.path"]
    steps_per_epoch = plan.steps_per_epoch
    tr.total_steps = steps_per_epoch * cfg.train.epochs  # train.max_steps stops a run early, the schedule stays

    # Section: resume.
    pos = resume_training(tr, run, resume, log, plan)
    ledger = open_ledger(cfg, backend, run, pos)
    run.write_config(cfg)
    i = backend.info
    placement = backend.allgather_object({"rank": i.rank, "host": i.hostname, "node": i.node_rank,
                                          "local_rank": i.local_rank, "device": str(backend.device)})
    run.write_json("environment.json", environment_record(backend, placement))

    # Section: the loop.
    signals.install()
    fault = faults.resolve(cfg.train.fault)
    total = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    bar = tqdm(total=total, initial=min(pos.global_step, total), disable=not backend.is_root, unit="step",
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    meter = Meter()
    steps_run = 0  # finite optimizer steps in this process (tells a diverging LR from a bad start)
    try:
        for epoch in range(pos.epoch, cfg.train.epochs):
            start = pos.step_in_epoch
            batches = epoch_batches(reader, epoch, pos, cfg.train.accumulation, ledger)
            for step_in_epoch in range(start, steps_per_epoch):
                t0 = time.perf_counter()
                micro = [next(batches) for _ in range(cfg.train.accumulation)]
                t_data = time.perf_counter() - t0
                prepared = [tr.prepare(batch) for batch in micro]
                first = (step_in_epoch - start) * cfg.train.accumulation
                samples = (epoch, batches.batches[first:first + cfg.train.accumulation])  # for per-sample noise
                stats = tr.forward_backward(prepared, samples)
                if fault is not None and faults.poisons_gradients(fault, backend.rank, pos.global_step + 1):
                    faults.poison(tr.gradients())

                # Step boundary: every rank learns the same three facts in one tiny collective.
                bad_loss, bad_grad, stop = step_boundary(tr, stats)
                if bad_grad and not bad_loss and tr.scaler.is_enabled():  # fp16 loss scale too high: skip, back off
                    tr.skip_overflow()
                    meter.overflows += 1
                elif bad_loss or bad_grad:
                    _nonfinite(tr, prepared, stats, bad_loss, epoch, step_in_epoch, pos, steps_run, log)
                    if cfg.train.nonfinite == "stop":
                        return EXIT_NONFINITE
                    tr.sync_and_step(skip=True)
                else:
                    tr.sync_and_step()
                    steps_run += 1
                tr.extra_d_steps(prepared, samples)
                pos.global_step += 1
                pos.epoch, pos.step_in_epoch = epoch, step_in_epoch + 1
                if not bad_loss:
                    meter.add(stats, sum(len(batch[0]) for batch in micro), t_data)
                bar.update(1)
                if fault is not None:
                    faults.maybe_inject(fault, backend.rank, pos.global_step)

                if pos.global_step % cfg.train.log_every == 0:
                    meter = log_interval(tr, run, meter, pos, bar)
                if stop:
                    return preempted(tr, run, pos, log)
                if cfg.train.max_steps and pos.global_step >= cfg.train.max_steps:
                    save(tr, run, pos)
                    log(f"reached train.max_steps={cfg.train.max_steps}; checkpoint written")
                    return 0
                if cfg.train.checkpoint_every and pos.global_step % cfg.train.checkpoint_every == 0:
                    save(tr, run, pos)

            # Section: end of epoch.
            pos.epoch, pos.step_in_epoch = epoch + 1, 0
            best = False
            if val_reader is not None:
                best = is_new_best(tr, validate(tr, run, val_reader, epoch, pos.global_step, log), pos)
            save(tr, run, pos, best=best)
            if best:
                run.log_metrics({"kind": "best", "step": pos.global_step, "epoch": epoch + 1, **tr.best,
                                 "checkpoint": f"checkpoints/{ckpt.BEST_NAME}"}, pos.global_step)
                log(f"best so far: {tr.best['metric']} {tr.best['value']:.4g} at epoch {epoch + 1} "
                    f"-> checkpoints/{ckpt.BEST_NAME}")
        log(f"done: {cfg.train.epochs} epoch(s), {pos.global_step} steps; outputs in {cfg.run_dir}")
        return 0
    except NonFiniteModel as e:
        log(f"error: {e}")
        return EXIT_NONFINITE
    except CheckpointFailed as e:
        return checkpoint_failed(run, pos, str(e), log)
    finally:
        bar.close()
        run.close()
        reader.close()
        if ledger is not None:
            ledger.close()
        if val_reader is not None:
            val_reader.close()


def _logger(backend: Backend):
    def log(msg: str) -> None:
        if backend.is_root:
            tqdm.write(msg, file=sys.stderr)
    return log


def step_boundary(tr: Training, stats: dict) -> tuple[bool, bool, bool]:
    """(non-finite loss, non-finite gradients, preemption signal) on any rank: one collective, and reading
    its result is the step's one host synchronisation."""
    bad_loss, bad_grad = tr.nonfinite_flags(stats)
    signal = torch.full((), float(signals.requested() is not None), device=tr.device)
    flags = tr.backend.allreduce(torch.stack([bad_loss.float(), bad_grad.float(), signal]), op="max", name="control")
    bad_loss, bad_grad, stop = (v > 0 for v in flags.tolist())
    return bad_loss, bad_grad, stop


def _nonfinite(tr: Training, prepared: list, stats: dict, bad_loss: bool, epoch: int, step: int, pos: Position,
               steps_run: int, log) -> None:
    """Collective (every rank calls it on the same step): log the warning, or the stop message naming the cause."""
    what = "loss" if bad_loss else "gradients (losses finite)"
    where = f"global step {pos.global_step + 1} (epoch {epoch} step {step})"
    if tr.cfg.train.nonfinite == "skip":
        log(f"warning: non-finite {what} at {where}; step skipped on every rank (train.nonfinite=skip)")
        return
    bad_data = any(not bool(torch.isfinite(t).all()) for cond, real, _ in prepared for t in (cond, real))
    bad_data = tr.backend.allreduce(torch.tensor([float(bad_data)]), op="max", name="nonfinite_data")[0] > 0
    values = ", ".join(f"{k}={float(v):.4g}" for k, v in stats.items())
    if bad_data:
        cause = ("the batch itself holds NaN/Inf on some rank: check the dataset (hpcgan data inspect) "
                 "and set data.check_finite=batch")
    elif tr.dtype == torch.float16:
        cause = ("likely an fp16 overflow (values above 65504) in a part the precision policy runs in fp16: "
                 "train.amp=bf16 where the GPU supports it, or train.amp=off")
    elif steps_run > 0:
        cause = (f"training diverged after {steps_run} finite step(s) in this run: likely the learning rate; "
                 "lower train.lr_g/train.lr_d or add train.warmup_steps")
    else:
        cause = ("non-finite from the first step with finite data: check the loss weights (loss.*) and the model "
                 "config, or the checkpoint it resumed from")
    log(f"error: non-finite {what} at {where} on some rank: {values} (this rank). Cause: {cause}. "
        "Stopping; nothing was stepped or saved, the last checkpoint is intact (train.nonfinite=skip skips such steps)")


def log_interval(tr: Training, run: RunDir, meter: Meter, pos: Position, bar) -> Meter:
    """Reduce the interval's statistics across ranks (one collective) and write them on rank 0."""
    backend = tr.backend
    local = meter.means()  # waits for the device: the clock below then counts the work it queued
    elapsed = time.perf_counter() - meter.start
    steps = max(meter.steps, 1)
    local["data_wait_frac"] = meter.data_s / elapsed
    local["sync_frac"] = tr.sync_timer.take() / elapsed
    local["step_time_s"] = elapsed / steps
    local["overflow_steps"] = float(meter.overflows)
    reduced = backend.allreduce_scalars(local, op="mean")
    rates = backend.allgather_object(meter.samples / elapsed)
    record = {"kind": "train", "step": pos.global_step, "epoch": pos.epoch, **reduced,
              "samples_per_s": sum(rates), "samples_per_s_rank_min": min(rates),
              "samples_per_s_rank_max": max(rates),
              "lr_g": tr.opt_g.param_groups[0]["lr"], "lr_d": tr.opt_d.param_groups[0]["lr"],
              **{f"lr_{g['name']}": g["lr"] for g in tr.opt_g.param_groups[1:]}}
    run.log_metrics(record, pos.global_step)
    bar.set_postfix({"samples/s": f"{sum(rates):.1f}", "g": f"{reduced.get('g_loss', 0):.3f}",
                     "d": f"{reduced.get('d_loss', 0):.3f}"}, refresh=False)
    return Meter()


@torch.no_grad()
def validate(tr: Training, run: RunDir, reader: ShardedReader, epoch: int, step: int, log) -> dict:
    """Held-out metrics of the same samples at any rank count: each rank evaluates its share (uneven, maybe
    empty; reader.eval_batches), the workload's per-sample sums are added over ranks in one gather, and the
    metrics come from the totals. Figures from rank 0's first batch, drawn after the gather while the others
    wait in short polls (run_on_root): drawing before it kept them in the gather, a timed collective."""
    agree_on_buffers(tr)
    sums: dict[str, np.ndarray] = {}
    count = 0
    shown = None  # rank 0's first batch, for the figures
    for i, batch in enumerate(reader.eval_batches(validation_samples(tr.cfg, reader.num_samples))):
        cond, real, valid = tr.prepare(batch)
        fake = tr.generate(cond)
        masked = {} if valid is None else {"valid": valid}  # only image workloads' data carry a mask
        for k, v in tr.workload.validation_sums(cond, real, fake, **masked).items():
            sums[k] = sums.get(k, 0.0) + v
        count += len(real)
        if i == 0 and tr.backend.is_root and tr.cfg.train.figures:
            shown = (cond.cpu(), real.cpu(), fake.cpu())
    # Objects, not a tensor allreduce: a rank without samples has no metric names to contribute.
    totals: dict[str, np.ndarray] = {}
    total_count = 0
    for rank_sums, rank_count in tr.backend.allgather_object((sums, count)):
        total_count += rank_count
        for k, v in rank_sums.items():
            totals[k] = totals.get(k, 0.0) + v
    if total_count == 0:
        log("notice: data.val_path has no samples to evaluate; validation skipped")
        return {}
    metrics = tr.workload.validation_finish(totals, total_count)
    run.log_metrics({"kind": "val", "step": step, "epoch": epoch + 1, **metrics}, step)
    log(f"epoch {epoch + 1} validation: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    if tr.cfg.train.figures:
        tr.backend.run_on_root((lambda: tr.workload.write_figures(
            run.figures, f"epoch{epoch + 1:03d}", *shown, tb_writer=run.tensorboard(), step=step))
            if shown is not None else None)
    return metrics


def checkpoint_state(tr: Training, pos: Position) -> dict:
    """Everything needed to continue exactly, at this or another rank count; no collective (each rank's RNG
    state goes to its own file beside the checkpoint: save). epoch_order: what the epoch has consumed of its
    order (hpcgan/train/resume.py); samples_seen: what the schedule has trained on."""
    unit, consumed = consumed_at(pos.epoch, pos.step_in_epoch, pos.continuation, tr.cfg, tr.backend.size)
    return {
        "G": ckpt.unwrap(tr.G).state_dict(), "D": ckpt.unwrap(tr.D).state_dict(),
        "opt_g": tr.opt_g.state_dict(), "opt_d": tr.opt_d.state_dict(), "scaler": tr.scaler.state_dict(),
        "epoch": pos.epoch, "step_in_epoch": pos.step_in_epoch, "global_step": pos.global_step,
        "epoch_order": {"unit": unit, "consumed": consumed}, "samples_seen": pos.samples_seen(tr),
        "step_count": tr.step_count, "world_size": tr.backend.size, "workload": tr.cfg.workload,
        "config": tr.cfg.to_dict(), "data": tr.data,
        **({"G_ema": tr.G_ema.state_dict()} if tr.G_ema is not None else {}),
        **({"best": tr.best} if tr.best else {}),
    }


def is_new_best(tr: Training, metrics: dict, pos: Position) -> bool:
    """Whether this validation beats the best so far on the workload's selection metric (tr.best updated)."""
    if tr.workload.selection is None:
        return False
    name, mode = tr.workload.selection
    value = metrics.get(name)
    if value is None or not np.isfinite(value):
        return False
    old = tr.best.get("value") if tr.best.get("metric") == name else None
    if old is not None and not (value < old if mode == "min" else value > old):
        return False
    tr.best = {"metric": name, "mode": mode, "value": float(value), "global_step": pos.global_step}
    return True


def save(tr: Training, run: RunDir, pos: Position, best: bool = False) -> None:
    """All ranks call; rank 0 writes while the others wait in short polls (no long barrier to time out);
    nobody races ahead of, or exits before, the write.

    Non-finite weights are never written (every rank holds the same weights, so all raise together)."""
    agree_on_buffers(tr)
    if not _finite_weights(tr):
        raise NonFiniteModel(f"the weights at global step {pos.global_step} are not finite: checkpoint not written, "
                             "the last one is intact (lower train.lr_g/train.lr_d)")
    state = checkpoint_state(tr, pos)
    # Every rank's own RNG state first, beside the checkpoint; rank 0 writes the checkpoint only once all are.
    rng_failed = ckpt.save_rank_rng(run.checkpoints, pos.global_step, tr.backend.rank)
    if tr.backend.any(rng_failed is not None):
        raise CheckpointFailed(rng_failed or "writing a rank's RNG state beside the checkpoint failed on another "
                               "rank; the previous checkpoints are intact")
    failed: list[str] = []

    def write() -> None:
        try:
            path = ckpt.save_checkpoint(state, run.checkpoints, pos.global_step, tr.cfg.train.keep_checkpoints)
            if best:
                ckpt.keep_best(path)
        except OSError as e:
            failed.append(e.strerror if isinstance(e, ckpt.CheckpointWriteError) else
                          f"checkpoint {run.checkpoints / ckpt.BEST_NAME}: write failed ({e.strerror or e})")

    tr.backend.run_on_root(write if tr.backend.is_root else None)
    if tr.backend.any(bool(failed)):  # every rank learns it, so all end together
        raise CheckpointFailed(failed[0] if failed else "the checkpoint write failed on rank 0")


def _finite_weights(tr: Training) -> bool:
    """Parameters and floating-point buffers (BatchNorm's running statistics: a skipped non-finite step has
    already updated them in its forward pass). Called after agree_on_buffers, so every rank holds the same
    values and all ranks decide alike."""
    tensors = [t for m in (tr.G, tr.D) for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def preempted(tr: Training, run: RunDir, pos: Position, log) -> int:
    save(tr, run, pos)
    sig = signals.requested() or "a signal on another rank"
    run.append_jsonl("interruptions.jsonl", {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "signal": sig, "received_at": signals.received_at(),
        "epoch": pos.epoch, "step_in_epoch": pos.step_in_epoch, "global_step": pos.global_step,
        "slurm_job_id": _env("SLURM_JOB_ID"), "slurm_restart_count": _env("SLURM_RESTART_COUNT")})
    run.write_json(signals.REQUEUE_MARKER, {"global_step": pos.global_step, "signal": sig})
    log(f"preempted ({sig}): checkpoint at step {pos.global_step} written; exiting {signals.EXIT_REQUEUE} for requeue")
    tr.backend.barrier()
    return signals.EXIT_REQUEUE


def checkpoint_failed(run: RunDir, pos: Position, message: str, log) -> int:
    """A full disk, a quota, EIO: nothing is lost (the partial file is gone, the last checkpoint is intact),
    so the job ends with the requeue code and resumes from that checkpoint once space is back."""
    try:
        run.write_json(signals.REQUEUE_MARKER, {"global_step": pos.global_step, "checkpoint_failed": message})
    except OSError:
        pass  # the same full disk: the exit code alone asks for the requeue
    log(f"error: {message}; exiting {signals.EXIT_REQUEUE} so the job is requeued and resumes from it")
    return signals.EXIT_REQUEUE


def _env(name: str) -> str | None:
    import os

    return os.environ.get(name)


def resume_training(tr: Training, run: RunDir, resume: str, log, plan: Plan | None = None) -> Position:
    """Load a checkpoint on rank 0 and broadcast it; `resume` is auto, never, or a path. At another rank count
    (or batch, or accumulation) the interrupted epoch continues with the samples it has not consumed
    (hpcgan/train/resume.py), the schedule continues from the samples trained, and each rank restores its own
    RNG state where the rank count is the same."""
    backend = tr.backend
    found: dict = {"path": None, "state": None}

    def find_and_load() -> None:  # rank 0 only: verifying candidates reads and hashes whole checkpoints
        path = (ckpt.find_resume_checkpoint(run.checkpoints, log) if resume == "auto"
                else ckpt.resolve_checkpoint(resume))
        if path is not None:
            found.update(path=path, state=ckpt.load_checkpoint(Path(path)))

    backend.run_on_root(find_and_load if backend.is_root and resume != "never" else None)
    path = backend.broadcast_object(str(found["path"]) if found["path"] else None)
    if path is None:
        return Position()
    state = found["state"]
    meta = backend.broadcast_object(None if state is None else {
        **{k: state.get(k) for k in ("epoch", "step_in_epoch", "global_step", "step_count", "world_size",
                                     "scaler", "workload", "config", "data", "best", "epoch_order",
                                     "samples_seen")},
        # Checkpoints of before kept every rank's RNG state inside; only those broadcast them.
        "rng": state.get("rng") if state.get("world_size") == backend.size else None,
        "has_ema": state.get("G_ema") is not None,
        "g_groups": [g.get("name", "G") for g in state["opt_g"]["param_groups"]]})
    if meta["workload"] != tr.cfg.workload:
        raise AgreedError([f"checkpoint {path}: trained workload {meta['workload']!r}, "
                           f"config says {tr.cfg.workload!r}"])
    groups = [g.get("name", "G") for g in tr.opt_g.param_groups]
    if meta["g_groups"] != groups:
        raise AgreedError([f"checkpoint {path}: the generator's optimizer groups are {meta['g_groups']}, this config's "
                           f"{groups} (train.lr_likelihood changed): resume with the checkpoint's "
                           "train.lr_likelihood, or start a new run_dir"])
    check_same_training_data(path, meta["data"], tr.data, tr.cfg.data.path)
    if backend.is_root:
        ckpt.unwrap(tr.G).load_state_dict(state["G"])
        ckpt.unwrap(tr.D).load_state_dict(state["D"])
        tr.opt_g.load_state_dict(state["opt_g"])
        tr.opt_d.load_state_dict(state["opt_d"])
        if tr.G_ema is not None:
            tr.G_ema.load_state_dict(state.get("G_ema") or ckpt.unwrap(tr.G).state_dict())
    backend.broadcast_module(ckpt.unwrap(tr.G))
    backend.broadcast_module(ckpt.unwrap(tr.D))
    if tr.G_ema is not None:
        backend.broadcast_module(tr.G_ema)
        if not meta["has_ema"]:
            log(f"notice: checkpoint {path} has no generator EMA; it starts from the resumed weights")
    backend.broadcast_optimizer(tr.opt_g)
    backend.broadcast_optimizer(tr.opt_d)
    tr.load_scaler_state(meta["scaler"], log)
    tr.best = meta.get("best") or {}

    # The schedule: samples trained, as steps of this rank count (the same steps when the count is the same).
    old_cfg = meta.get("config") or {}
    old_train = old_cfg.get("train") or {}
    old_global = (meta["world_size"] * int(old_train.get("batch_size", tr.cfg.train.batch_size))
                  * int(old_train.get("accumulation", tr.cfg.train.accumulation)))
    samples = meta.get("samples_seen")
    samples = meta["step_count"] * old_global if samples is None else int(samples)
    same_split = old_global == tr.cfg.global_batch(backend.size)
    tr.step_count = meta["step_count"] if same_split else schedule.equivalent_steps(tr.cfg, backend.size, samples)
    tr.set_lr()

    # RNG: each rank its own state at the same rank count; reseeded otherwise (said once).
    if meta["world_size"] == backend.size:
        own = meta["rng"][backend.rank] if meta.get("rng") else ckpt.load_rank_rng(Path(path), backend.rank)
        if own is not None:
            ckpt.set_rng_state(own)
        else:
            torch.manual_seed(tr.cfg.seed + 7919 * (backend.rank + 1) + meta["global_step"])
        if backend.any(own is None):
            log(f"notice: checkpoint {path} has no RNG state beside it for some rank ({ckpt.rng_dir(Path(path))}); "
                "those ranks' RNG streams are reseeded")
    else:
        torch.manual_seed(tr.cfg.seed + 7919 * (backend.rank + 1) + meta["global_step"])

    pos = Position(meta["epoch"], meta["step_in_epoch"], meta["global_step"], samples_base=samples,
                   steps_base=tr.step_count)
    if plan is not None:
        point = resume_point(meta, tr.cfg, backend.size, plan.train_samples, plan.steps_per_epoch)
        pos.step_in_epoch, pos.continuation = point.step_in_epoch, point.continuation
        if point.line:
            log(f"notice: resuming {path}: {point.line}")
    log(f"resumed from {path}: epoch {pos.epoch}, step {pos.step_in_epoch} of the epoch, global step {pos.global_step}")
    return pos


def epoch_batches(reader: ShardedReader, epoch: int, pos: Position, accumulation: int,
                  ledger: "LedgerWriter | None"):
    """This rank's micro-batches of `epoch` from pos.step_in_epoch on: its own order, or the rest of an epoch
    begun under another split (pos.continuation); recorded in the sample ledger as they are drawn."""
    c = pos.continuation
    if c is not None and c.epoch == epoch:
        batches = reader.epoch_from(epoch, c.unit, c.consumed)
    else:
        batches = reader.epoch(epoch, start_step=pos.step_in_epoch * accumulation)
    return batches if ledger is None else _Ledgered(batches, ledger, epoch, pos.global_step, accumulation)


class _Ledgered:
    """An epoch's batches, each recorded in the ledger (epoch, the global step it trains in, its indices)."""

    def __init__(self, inner, ledger: LedgerWriter, epoch: int, global_step: int, accumulation: int):
        self.inner, self.ledger, self.epoch = inner, ledger, epoch
        self.global_step, self.accumulation, self.drawn = global_step, accumulation, 0

    @property
    def batches(self):
        """The index array of the wrapped epoch (as EpochIterator.batches)."""
        return self.inner.batches

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.inner)
        self.ledger.record(self.epoch, self.global_step + 1 + self.drawn // self.accumulation,
                           self.inner.batches[self.drawn][:self.inner.counts[self.drawn]])
        self.drawn += 1
        return batch

    def __len__(self) -> int:
        return len(self.inner)


def open_ledger(cfg: Config, backend: Backend, run: RunDir, pos: Position) -> LedgerWriter | None:
    """train.sample_ledger: this rank's ledger file of this run's segment (rank 0 numbers the segment)."""
    if not cfg.train.sample_ledger:
        return None
    segment = backend.broadcast_object(next_segment(run.path) if backend.is_root else None)
    return LedgerWriter(run.path, segment, pos.global_step, backend.rank)
