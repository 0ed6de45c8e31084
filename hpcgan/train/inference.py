"""A trained generator applied to a dataset, sharded contiguously over ranks (generate, evaluate)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from hpcgan.config import Config, config_from_mapping
from hpcgan.data.reader import ShardedReader
from hpcgan.runtime.backend import Backend
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.step import amp_dtype
from hpcgan.workloads import Workload, get_workload, precision


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


def generate_range(cfg: Config, workload: Workload, G: nn.Module, reader: ShardedReader, start: int, stop: int,
                   batch_size: int, device: torch.device) -> Iterator[tuple[int, np.ndarray, float]]:
    """Yield (first index, generated targets in file units, seconds spent in the model) per batch.

    Runs in the precision training used (train.amp under the workload's policy, its fp32 parts kept)."""
    dtype = amp_dtype(cfg.train.amp, device, workload)
    for b in range(start, stop, batch_size):
        idx = np.arange(b, min(b + batch_size, stop))
        x, y = reader.read_samples(idx, normalize=True)
        cond, _ = workload.prepare(torch.from_numpy(x), torch.from_numpy(y), device)
        t0 = _sync_time(device)
        with torch.no_grad(), precision.autocast(device, dtype):
            fake = workload.to_data_units(G(cond).float())
        out = fake.cpu().numpy()
        yield b, out, _sync_time(device) - t0


def _sync_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
