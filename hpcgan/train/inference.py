"""A trained generator applied to a dataset, sharded contiguously over ranks (generate, evaluate)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from hpcgan.config import Config, config_from_mapping
from hpcgan.data.reader import ShardedReader
from hpcgan.runtime.backend import Backend
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.step import amp_dtype
from hpcgan.workloads import Workload, get_workload, precision
from hpcgan.workloads.evaluation import EvalStats, merge, merge_examples


def rank_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous, balanced [start, stop) of n items for rank (the first n % size ranks get one more)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def load_generator(checkpoint: str, backend: Backend, overrides: Sequence[str] = (), which: str = "best",
                   weights: str = "ema") -> tuple[Config, Workload, nn.Module, Path, str]:
    """Config from the checkpoint (plus overrides), the workload, G in eval mode on this rank's device, the
    checkpoint's path and which weights G holds ("ema" or "raw"). For a run directory `which` picks best.pt
    (when the run kept one) or the newest checkpoint ("last"); `weights` the EMA copy (when kept) or raw."""
    path = ckpt.resolve_checkpoint(checkpoint, which)
    state = ckpt.load_checkpoint(path)
    cfg = config_from_mapping(state["config"], overrides)  # nothing is written next to the checkpoint
    workload = get_workload(cfg)
    G = workload.build_generator()
    weights_dict, used = ckpt.generator_state(state, weights)
    G.load_state_dict(weights_dict)
    G.to(backend.device).eval()
    return cfg, workload, G, path, used


def open_for_inference(cfg: Config, path: str, backend: Backend) -> ShardedReader:
    """The whole data set, unshuffled. Collective: under data.check_finite=open each rank scans its share
    (agreement.scan_shares), so the held-out set is read once for the check, not once per rank."""
    from hpcgan.train.agreement import scan_shares

    reader = ShardedReader(path, 0, 1, 1, cfg.seed, shuffle=False, normalize=cfg.data.normalize,
                           check_finite=cfg.data.check_finite, defer_scan=True)
    scan_shares(backend, [reader])
    return reader


class Generated(NamedTuple):
    """One generated batch: its first index, the generated targets, seconds in the model, and the batch's
    inputs and targets as read (file units)."""

    first: int
    fake: np.ndarray
    seconds: float
    inputs: np.ndarray
    targets: np.ndarray


def generate_range(cfg: Config, workload: Workload, G: nn.Module, reader: ShardedReader, start: int, stop: int,
                   batch_size: int, device: torch.device) -> Iterator[Generated]:
    """Generate samples [start, stop) batch by batch, in file units.

    Runs in the precision training used (train.amp under the workload's policy, its fp32 parts kept)."""
    dtype = amp_dtype(cfg.train.amp, device, workload)
    for b in range(start, stop, batch_size):
        idx = np.arange(b, min(b + batch_size, stop))
        x, y = reader.read_samples(idx, normalize=False)
        cond, _ = workload.prepare(torch.from_numpy(reader.normalize_inputs(x.copy())), torch.from_numpy(y), device)
        t0 = _sync_time(device)
        with torch.no_grad(), precision.autocast(device, dtype):
            fake = workload.to_data_units(G(cond).float())
        out = fake.cpu().numpy()
        yield Generated(b, out, _sync_time(device) - t0, x, y)


def _sync_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def combine_evaluation(backend: Backend, local: EvalStats, examples: dict | None) -> tuple[EvalStats, dict, dict]:
    """Every rank's evaluation stats, as one pass over the set would give them: the sums in one allreduce
    (its size is fixed by the workload, not by the samples or the ranks), the rows and the figures' examples
    gathered in rank order (= index order). Returns (stats, examples, bytes sent per rank by kind)."""
    template = backend.broadcast_object({k: np.shape(v) for k, v in local.sums.items()}, root=0)
    sums = {}
    if template:
        flat = torch.from_numpy(np.concatenate([
            np.asarray(local.sums[k], np.float64).ravel() if k in local.sums else np.zeros(int(np.prod(shape)))
            for k, shape in template.items()]))
        backend.allreduce_(flat, op="sum", name="evaluate.sums")
        offset = 0
        for k, shape in template.items():
            size = int(np.prod(shape))
            sums[k] = flat[offset:offset + size].numpy().reshape(shape)
            offset += size
    # Rank 0 holds the first samples itself unless its share is shorter than the examples: only then do
    # other ranks' examples travel (and rank 0's never do).
    gathered = backend.allgather_object((local.rows, None if backend.is_root else examples))
    rows = merge([EvalStats(rows=r) for r, _ in gathered]).rows
    shown = [examples if backend.is_root else None] + [e for _, e in gathered[1:]]
    sent = {"sums_reduced": int(8 * sum(int(np.prod(s)) for s in template.values())),
            "rows_gathered": EvalStats(rows=rows).nbytes()}
    return EvalStats(rows, sums), merge_examples(shown), sent
