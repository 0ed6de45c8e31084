"""Per-channel statistics of a dataset file, computed in parallel over ranks.

Each rank scans a contiguous share of the samples (large sequential reads) and
the shares are combined with allreduce in two passes: sums, counts, min and max
first; then the squared deviations around the global mean (numerically safe in
float64 even for temperatures of ~300 K with a spread of a few K). The data
layer does not import the communication backend: callers pass a Comm.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Protocol

import numpy as np

from hpcgan.errors import UserError
from hpcgan.data.format import ChannelStats, attrs_of, check_finite_block, h5py, open_read, write_stats

SLAB_BYTES = 64 * 2**20


class Comm(Protocol):
    rank: int
    size: int

    def allreduce(self, x: np.ndarray, op: str) -> np.ndarray:
        """Element-wise sum or max over ranks of a float64 array."""

    def agree(self, fn: Callable[[], Any]) -> Any:
        """Run fn; if it raises on any rank, raise on every rank (so none waits in the next collective)."""


class LocalComm:
    rank, size = 0, 1

    def allreduce(self, x: np.ndarray, op: str) -> np.ndarray:
        return x

    def agree(self, fn: Callable[[], Any]) -> Any:
        return fn()


def share(n: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous [start, stop) of n samples for `rank` (sizes differ by at most one)."""
    return n * rank // size, n * (rank + 1) // size


def _slabs(d: h5py.Dataset, start: int, stop: int):
    per = max(1, SLAB_BYTES // max(1, 4 * math.prod(d.shape[1:])))
    for a in range(start, stop, per):
        yield a, np.asarray(d[a:min(stop, a + per)], dtype=np.float64)


def _local_sums(path, name: str, start: int, stop: int) -> np.ndarray:
    """This rank's share: [sum (C), -min (C), max (C), count] in float64; checks every value is finite."""
    with open_read(path) as f:
        attrs_of(f, path)
        d = f[name]
        c = d.shape[1]
        local = np.zeros(3 * c + 1)
        local[c:3 * c] = -np.inf
        for a, x in _slabs(d, start, stop):
            check_finite_block(x, path, name, a)
            x = np.moveaxis(x, 1, 0).reshape(c, -1)
            local[:c] += x.sum(axis=1)
            local[c:2 * c] = np.maximum(local[c:2 * c], -x.min(axis=1))
            local[2 * c:3 * c] = np.maximum(local[2 * c:3 * c], x.max(axis=1))
            local[3 * c] += x.shape[1]
    return local


def _local_m2(path, name: str, start: int, stop: int, mean: np.ndarray) -> np.ndarray:
    with open_read(path) as f:
        d = f[name]
        m2 = np.zeros(d.shape[1])
        for _, x in _slabs(d, start, stop):
            x = np.moveaxis(x, 1, 0).reshape(d.shape[1], -1)
            m2 += ((x - mean[:, None]) ** 2).sum(axis=1)
    return m2


def dataset_stats(path: str | os.PathLike, name: str, comm: Comm) -> ChannelStats:
    """Global per-channel stats (over every axis but 1) of one dataset of one file.

    Local reads happen inside comm.agree, so an error on one rank (a NaN in its share)
    reaches every rank before anyone enters an allreduce."""
    def shape() -> tuple:
        with open_read(path) as f:
            attrs_of(f, path)
            return f[name].shape
    n, c = comm.agree(shape)[:2]
    start, stop = share(n, comm.rank, comm.size)
    local = comm.agree(lambda: _local_sums(path, name, start, stop))
    total = np.concatenate([comm.allreduce(local[:c], "sum"), comm.allreduce(local[c:3 * c], "max"),
                            comm.allreduce(local[3 * c:], "sum")])
    count = int(total[3 * c])
    mean = total[:c] / max(count, 1)
    m2 = comm.allreduce(comm.agree(lambda: _local_m2(path, name, start, stop, mean)), "sum")
    st = ChannelStats(c)
    st.count, st.mean, st.m2 = count, mean, m2
    st.min, st.max = -total[c:2 * c], total[2 * c:3 * c]
    return st


def file_stats(path: str | os.PathLike, comm: Comm | None = None) -> tuple[ChannelStats, ChannelStats]:
    comm = comm or LocalComm()
    return dataset_stats(path, "inputs", comm), dataset_stats(path, "targets", comm)


def store_stats(path: str | os.PathLike, inputs: ChannelStats, targets: ChannelStats) -> None:
    """Write the stats into the file's attributes (one process only, nobody else holding the file)."""
    try:
        f = h5py.File(path, "r+")
    except OSError as e:
        raise UserError(f"{path}: cannot open for writing the statistics ({str(e).splitlines()[0]})") from None
    with f:
        write_stats(f, inputs, targets)
