"""Sharded, shuffled, prefetching reader of hpcgan HDF5 datasets.

Each epoch has one global order of sample indices from (seed, epoch): the dataset is cut into blocks of
`shuffle_block` consecutive samples and the blocks are permuted. The order is cut to whole global batches
of size x batch_size samples (remainder dropped, or padded by wrapping around: the same on every rank),
shuffled inside windows of about SHUFFLE_BUFFER_BLOCKS blocks rounded up to whole global batches (a
bounded shuffle buffer), and cut into global batches. Which samples form global batch k therefore depends
on size x batch_size only, not on how it is split over ranks. Rank r takes its slice of every global batch
(rank_slices: the members ranking r*b..(r+1)*b-1 by place in the block order, so its reads are
block-aligned runs); at one rank the slice is the batch and the order is that of every earlier release.
A rank computes only its own slices when a window is one global batch (rank_plan); shard_steps gives the
batches per rank, for the dry run's plan too. An epoch begun under another split is finished with
continued_plan. The reader reads groups of batches at once: their indices sort into runs of consecutive
samples, read as HDF5 slabs (runs closer than READ_MERGE_BYTES as one) and reordered in memory.

A background thread (opening its own h5py handles, never sharing one across
threads or a fork) reads groups of batches into a bounded queue. Exceptions
in the thread are re-raised in the consumer.

Batches are (inputs, targets, valid). `valid` is the per-pixel mask meta/valid
((B, *target spatial shape) bool, True where the target is defined, e.g. where
the satellite saw the scene) when any file of the dataset has one, a file
without it counting as all valid; None when none has it (synthetic data):
losses and metrics then count every pixel.

With cache=True a rank keeps a fixed shard in memory (its slices of the epoch-0
order) and shuffles inside it each epoch, as MLPerf HPC runs staged a local
shard per node: every sample is still read exactly once per epoch across ranks,
but the dropped/padded remainder is the same every epoch.

Evaluation (eval_batches) reads every evaluated sample exactly once at any rank
count: rank r takes a contiguous run of them (eval_share) whose length differs
from the others' by at most one, so no sample is dropped or counted twice.
"""
from __future__ import annotations

import glob as globlib
import hashlib
import logging
import math
import os
import queue
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from hpcgan.data.format import VALID_META, ChannelStats, attrs_of, check_finite_block, find_nonfinite, open_read
from hpcgan.errors import UserError

log = logging.getLogger(__name__)

SHUFFLE_BUFFER_BLOCKS = 8  # shuffle window, in blocks of shuffle_block samples
READ_GROUP_BYTES = 64 * 2**20  # bytes read per group of batches (bounds the reader's memory)
READ_MERGE_BYTES = 2**20  # runs of samples this close in a file are read as one slab (gap read and dropped)
SMALL_DATASET_BYTES = 256 * 2**20  # check_finite="auto": scan on open below this size, per batch above
STD_FLOOR = 1e-12  # constant channels (latitude of a fixed grid) normalise by 1, not by 0


def resolve_paths(path_or_glob: str | os.PathLike | Sequence[str]) -> list[str]:
    """A path, a glob, a comma-separated list or a sequence of these -> sorted unique existing files."""
    items = [str(path_or_glob)] if isinstance(path_or_glob, (str, os.PathLike)) else [str(p) for p in path_or_glob]
    items = [s for item in items for s in item.split(",") if s]
    if not items:
        raise UserError("data path is empty (expected an HDF5 file or a glob such as data/crf-*.h5)")
    out: list[str] = []
    for item in items:
        if globlib.has_magic(item):
            matches = sorted(globlib.glob(item))
            if not matches:
                raise UserError(f"{item}: no file matches this glob")
            out.extend(matches)
        else:
            if not Path(item).exists():
                raise UserError(f"{item}: no such file")
            out.append(item)
    return list(dict.fromkeys(out))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True, shuffle_block: int = 32) -> np.ndarray:
    """The global order of sample indices for (seed, epoch): blocks of consecutive samples, permuted."""
    if not shuffle or n == 0:
        return np.arange(n, dtype=np.int64)
    starts, pos = _block_table(n, seed, epoch, shuffle_block)
    lens = np.diff(np.append(pos, n))
    return np.repeat(starts, lens) + (np.arange(n) - np.repeat(pos, lens))


def _block_table(n: int, seed: int, epoch: int, shuffle_block: int) -> tuple[np.ndarray, np.ndarray]:
    """(first sample, first position) of each block of the epoch order, in order: the order in O(n / block)
    memory, so a rank can look up the positions it reads without building the whole order."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)])
    sb = max(1, int(shuffle_block))
    starts = rng.permutation(-(-n // sb)).astype(np.int64) * sb
    lens = np.minimum(starts + sb, n) - starts
    return starts, np.cumsum(lens) - lens


def _samples_at(positions: np.ndarray, n: int, table: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Sample index at each position of the epoch order (positions past n wrap around: remainder=pad)."""
    q = np.asarray(positions, dtype=np.int64) % max(n, 1)
    if table is None:  # unshuffled
        return q
    starts, pos = table
    i = np.searchsorted(pos, q, side="right") - 1
    return starts[i] + (q - pos[i])


def _keys(seed: int, epoch: int, start: int, count: int) -> np.ndarray:
    """Doubles start..start+count of the epoch's shuffle-key stream (one 64-bit draw each, so a rank can jump
    to its own positions with PCG64.advance instead of drawing every key before them)."""
    bits = np.random.PCG64([int(seed) & 0xFFFFFFFF, int(epoch), 1])
    if start:
        bits.advance(int(start))
    return np.random.Generator(bits).random(int(count))


def window_samples(shuffle_block: int, batch_size: int) -> int:
    """Shuffle-buffer size: SHUFFLE_BUFFER_BLOCKS blocks, rounded up to whole batches (so reads align)."""
    return -(-shuffle_block * SHUFFLE_BUFFER_BLOCKS // batch_size) * batch_size


def shard_steps(n: int, size: int, batch_size: int, remainder: str) -> int:
    """Batches each rank reads per epoch: n over size x batch_size, rounded down (drop) or up (pad)."""
    unit = size * batch_size
    return n // unit if remainder == "drop" else -(-n // unit)


def eval_share(n: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank's share when each of n samples is evaluated exactly once.

    Shares differ by at most one sample, the larger ones first, so rank 0 has a
    sample whenever n >= 1; when n < size the last ranks have none."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shuffled_positions(n: int, unit: int, seed: int, epoch: int, shuffle: bool, shuffle_block: int,
                       remainder: str) -> np.ndarray:
    """(global batches, unit) positions of the epoch order, row k = global batch k: the order cut to whole
    global batches (drop) or wrapped around (pad), then shuffled inside windows of window_samples(unit)
    positions (whole global batches, so which samples form batch k depends on the global batch only)."""
    steps = shard_steps(n, 1, unit, remainder)
    length = steps * unit
    pos = np.arange(length, dtype=np.int64)
    if shuffle and length:
        keys = _keys(seed, epoch, 0, length)
        window = window_samples(shuffle_block, unit)
        full = length // window * window
        head = np.argsort(keys[:full].reshape(-1, window), axis=1, kind="stable")
        head += np.arange(0, full, window, dtype=np.int64)[:, None]
        tail = np.argsort(keys[full:], kind="stable") + full
        pos = np.concatenate([head.ravel(), tail])
    return pos.reshape(steps, unit)


def rank_slices(batches: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Rank's slice of each global batch (rows of positions in the order they are trained): the members
    whose position (in the unshuffled block order) ranks rank*b..(rank+1)*b-1 within the batch, in the
    batch's own order. Slicing by position, not by place in the shuffled batch, keeps each rank's reads
    long runs of consecutive samples (block-aligned slabs) at any rank count; at one rank it is the batch."""
    b = batches.shape[1] // size
    if size == 1 or not batches.size:
        return batches[:, :b]
    place = np.argsort(np.argsort(batches, axis=1, kind="stable"), axis=1, kind="stable")
    return batches[(place >= rank * b) & (place < (rank + 1) * b)].reshape(len(batches), b)


def rank_plan(n: int, rank: int, size: int, batch_size: int, seed: int, epoch: int, shuffle: bool,
              shuffle_block: int, remainder: str) -> np.ndarray:
    """(steps, batch_size) global sample indices rank `rank` reads in `epoch`: its slice of each global batch
    of size x batch_size samples (shuffled_positions, rank_slices).

    Only this rank's part is computed where the shuffle allows it: when a shuffle window is one global batch
    (size x batch >= SHUFFLE_BUFFER_BLOCKS x shuffle_block, every large job), a rank's slice is a run of
    consecutive positions, and it draws only its own shuffle keys (PCG64.advance) and looks positions up in
    the block table: O(its share + blocks) instead of sorting the whole epoch on every rank."""
    unit = size * batch_size
    steps = shard_steps(n, size, batch_size, remainder)
    table = _block_table(n, seed, epoch, shuffle_block) if shuffle and n else None
    if steps == 0:
        return np.zeros((0, batch_size), dtype=np.int64)
    if not shuffle or (size > 1 and window_samples(shuffle_block, unit) == unit):
        first = np.arange(steps, dtype=np.int64)[:, None] * unit + rank * batch_size
        pos = first + np.arange(batch_size, dtype=np.int64)
        if shuffle:  # each slice in the order of its keys (what the whole window's sort gives it)
            bits = np.random.PCG64([int(seed) & 0xFFFFFFFF, int(epoch), 1])
            draw = np.random.Generator(bits)
            keys = np.empty(pos.shape)
            bits.advance(rank * batch_size)
            for k in range(steps):
                keys[k] = draw.random(batch_size)
                bits.advance(unit - batch_size)
            pos = np.take_along_axis(pos, np.argsort(keys, axis=1, kind="stable"), axis=1)
    else:
        pos = rank_slices(shuffled_positions(n, unit, seed, epoch, shuffle, shuffle_block, remainder), rank, size)
    return _samples_at(pos, n, table)


def plan_epoch(n: int, size: int, batch_size: int, seed: int, epoch: int, shuffle: bool, shuffle_block: int,
               remainder: str) -> np.ndarray:
    """(size, steps, batch_size) global indices: rank r reads plan[r] (rank_plan of every rank; tests and
    tools, the trainer computes only its own)."""
    return np.stack([rank_plan(n, r, size, batch_size, seed, epoch, shuffle, shuffle_block, remainder)
                     for r in range(size)])


def continued_plan(n: int, rank: int, size: int, batch_size: int, seed: int, epoch: int, shuffle: bool,
                   shuffle_block: int, remainder: str, unit: int, consumed: int) -> np.ndarray:
    """(batches, batch_size) indices rank `rank` of `size` reads to finish an epoch whose order was made for
    global batches of `unit` samples (another rank count or batch) and whose first `consumed` positions were
    trained: the rest of that order, cut into global batches of size x batch_size, each sliced over the ranks
    (rank_slices). A last part shorter than a global batch is not read (drop) or completed from the start of
    the order (pad). Every rank builds the old order once (O(epoch)), only when resuming such a checkpoint."""
    old = shuffled_positions(n, unit, seed, epoch, shuffle, shuffle_block, remainder).ravel()[consumed:]
    new_unit = size * batch_size
    if remainder == "pad" and len(old) % new_unit:
        full = shuffled_positions(n, unit, seed, epoch, shuffle, shuffle_block, remainder).ravel()
        old = np.concatenate([old, np.resize(full, new_unit - len(old) % new_unit)])
    rows = old[:len(old) // new_unit * new_unit].reshape(-1, new_unit)
    table = _block_table(n, seed, epoch, shuffle_block) if shuffle and n else None
    return _samples_at(rank_slices(rows, rank, size), n, table)


_SCANNED: set[str] = set()  # digests of data sets whose finite-value scan passed in this process


def mark_scanned(reader: "ShardedReader") -> None:
    """Remember that every share of this data set's scan passed (the caller agreed on it across ranks)."""
    _SCANNED.add(reader.scan_key())


class ShardedReader:
    """Rank `rank` of `size`: its share of each epoch as (inputs, targets, valid) CPU tensor batches
    (float32, float32, bool or None: module doc)."""

    def __init__(self, path_or_glob: str | os.PathLike | Sequence[str], rank: int, size: int, batch_size: int,
                 seed: int, *, shuffle: bool = True, shuffle_block: int = 32, prefetch: int = 4, cache: bool = False,
                 normalize: bool = True, check_finite: str = "auto", remainder: str = "drop",
                 pin_memory: bool = False, copies: Mapping[str, str] | None = None, defer_scan: bool = False):
        if not 0 <= rank < size:
            raise UserError(f"reader: rank {rank} outside 0..{size - 1}")
        if batch_size < 1 or shuffle_block < 1 or prefetch < 1:
            raise UserError(f"reader: batch_size, shuffle_block and prefetch must be positive "
                            f"(got {batch_size}, {shuffle_block}, {prefetch})")
        if remainder not in ("drop", "pad"):
            raise UserError(f"reader: remainder {remainder!r}, expected drop or pad")
        if check_finite not in ("auto", "open", "batch", "off"):
            raise UserError(f"reader: check_finite {check_finite!r}, expected auto, open, batch or off")
        # The files as named (what identifies the dataset), and what is opened: a node-local copy where
        # data.stage made one (`copies`: source -> copy), else the file itself.
        self.sources = resolve_paths(path_or_glob)
        self.paths = [copies.get(p, p) for p in self.sources] if copies else list(self.sources)
        self.name = str(path_or_glob) if isinstance(path_or_glob, (str, os.PathLike)) else ",".join(self.paths)
        self.rank, self.size, self.batch_size, self.seed = rank, size, batch_size, seed
        self.shuffle, self.shuffle_block, self.prefetch = shuffle, shuffle_block, prefetch
        self.cache, self.normalize, self.remainder = cache, normalize, remainder
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self._cached: tuple | None = None  # (shard indices, inputs, targets, valid or None)

        self.file_attrs = self._check_files()
        first = self.file_attrs[0]
        counts = np.array([a["n"] for a in self.file_attrs], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.num_samples = int(self.offsets[-1])
        self.input_shape: tuple = first["input_shape"]
        self.target_shape: tuple = first["target_shape"]
        self.attrs = self._combined_attrs()
        self.valid_shape = self._valid_shape()
        if normalize and not self.attrs["input_stats"]:
            raise UserError(f"{self.paths[0]}: per-channel statistics missing, needed to normalise "
                            f"(run 'hpcgan data stats {self.paths[0]}' or set data.normalize=false)")
        if normalize:
            shape = (-1,) + (1,) * (len(self.input_shape) - 1)
            st = self.attrs["input_stats"]
            self._mean = st["mean"].astype(np.float32).reshape(shape)
            self._inv_std = (1.0 / np.maximum(st["std"], STD_FLOOR)).astype(np.float32).reshape(shape)
            self._inv_std[st["std"].reshape(shape) < STD_FLOOR] = 1.0

        self.steps_per_epoch, self.remainder_note = self._remainder()
        if self.remainder_note and rank == 0:
            log.info(self.remainder_note)

        self._sample_bytes = 4 * (math.prod(self.input_shape) + math.prod(self.target_shape))
        self._disk_sample_bytes = self._sample_bytes // (2 if first["storage_dtype"] == "float16" else 1)
        total_bytes = sum(a["n"] * (math.prod(a["input_shape"]) + math.prod(a["target_shape"]))
                          * (2 if a["storage_dtype"] == "float16" else 4) for a in self.file_attrs)
        if check_finite == "auto":
            check_finite = "open" if total_bytes < SMALL_DATASET_BYTES else "batch"
        self.check_finite = check_finite
        if check_finite == "open" and not defer_scan:
            self.scan_finite(0, 1)

    # --- the finite-value scan (data.check_finite=open) -------------------------
    def needs_scan(self) -> bool:
        """Whether the open-time scan is still to do: check_finite is open and this process has not yet
        scanned this data set (by fingerprint: the same files, sizes and attributes)."""
        return self.check_finite == "open" and self.scan_key() not in _SCANNED

    def scan_key(self) -> str:
        """The fingerprint's digest and each file's modification time (a file rewritten in place is scanned
        again)."""
        return self.fingerprint()["digest"] + repr([os.stat(p).st_mtime_ns for p in self.paths])

    def scan_finite(self, rank: int, size: int) -> None:
        """Scan share `rank` of `size` of the samples for NaN/Inf (UserError naming the first bad one).

        Under a collective agreement (every rank scans its share, errors agreed: preflight, the trainer) the
        data set is read once in all instead of once per rank and command; the pass is remembered in this
        process by fingerprint and modification times, so the next reader of the same data skips it."""
        if not self.needs_scan():
            return
        start, stop = eval_share(self.num_samples, rank, size)
        for i, p in enumerate(self.paths):
            lo, hi = max(start, int(self.offsets[i])), min(stop, int(self.offsets[i + 1]))
            if lo >= hi:
                continue
            with open_read(p) as f:
                for name in ("inputs", "targets"):
                    find_nonfinite(f, p, name, lo - int(self.offsets[i]), hi - int(self.offsets[i]))
        if size == 1:
            mark_scanned(self)

    def _check_files(self) -> list[dict]:
        """Attributes of every file, checked to form one dataset (shapes, channels, workload)."""
        attrs = [self._open_attrs(p) for p in self.paths]
        first = attrs[0]
        for p, a in zip(self.paths[1:], attrs[1:]):
            for key, what in (("input_shape", "inputs"), ("target_shape", "targets")):
                if a[key] != first[key]:
                    raise UserError(f"{p}: dataset '{what}' sample shape {a[key]} differs from "
                                    f"{first[key]} in {self.paths[0]}")
            for key in ("workload", "input_channels", "target_channels"):
                if a[key] != first[key]:
                    raise UserError(f"{p}: attribute '{key}' {a[key]!r} differs from {first[key]!r} in {self.paths[0]}")
        return attrs

    def _remainder(self) -> tuple[int, str]:
        """Steps per epoch and what happens to the samples beyond a multiple of size x batch."""
        n, size, batch = self.num_samples, self.size, self.batch_size
        unit = size * batch
        steps = shard_steps(n, size, batch, self.remainder)
        if steps == 0:  # an error only when an epoch is read: evaluation (eval_batches) still works
            return 0, ""
        used = steps * unit
        if used < n:
            return steps, (f"{self.name}: dropping {n - used} of {n} samples per epoch "
                           f"(not a multiple of {size} ranks x batch {batch})")
        if used > n:
            return steps, (f"{self.name}: padding {used - n} samples per epoch by repeating samples "
                           f"({n} is not a multiple of {size} ranks x batch {batch})")
        return steps, ""

    def _valid_shape(self) -> tuple | None:
        """Per-sample shape of meta/valid (the targets' spatial shape) if any file has it, else None."""
        want = tuple(self.target_shape[1:])
        found = None
        for p, a in zip(self.paths, self.file_attrs):
            if VALID_META in a["meta"]:
                shape = tuple(a["meta"][VALID_META][0])
                if shape != want:
                    raise UserError(f"{p}: dataset 'meta/{VALID_META}' sample shape {shape}, expected the targets' "
                                    f"spatial shape {want}")
                found = want
        return found

    # --- metadata ------------------------------------------------------------
    @staticmethod
    def _open_attrs(path: str) -> dict:
        with open_read(path) as f:
            return attrs_of(f, path)

    def _combined_attrs(self) -> dict:
        """One attribute dict for the whole dataset; stats merged over files weighted by their counts."""
        first = self.file_attrs[0]
        out = {k: first[k] for k in ("format_version", "workload", "input_channels", "target_channels", "meta",
                                     "storage_dtype", "input_shape", "target_shape")}
        out["n"] = self.num_samples
        out["files"] = list(self.sources)
        out["provenance"] = first["provenance"] if len(self.paths) == 1 else [a["provenance"] for a in self.file_attrs]
        for kind, count_key in (("input", "stats_count"), ("target", "target_stats_count")):
            if all(a[f"{kind}_stats"] for a in self.file_attrs):
                total = ChannelStats(len(first[f"{kind}_stats"]["mean"]))
                for a in self.file_attrs:
                    s = a[f"{kind}_stats"]
                    total.merge(ChannelStats.from_summary(max(a[count_key], 1), s["mean"], s["std"], s["min"], s["max"]))
                out[f"{kind}_stats"] = total.as_dict()
            else:
                out[f"{kind}_stats"] = {}
        return out

    # --- the epoch plan ---------------------------------------------------------
    def batch_indices(self, epoch: int, start_step: int = 0) -> np.ndarray:
        """(steps_per_epoch - start_step, batch_size) global sample indices this rank reads in `epoch`."""
        self._check_epoch()
        if not 0 <= start_step <= self.steps_per_epoch:
            raise UserError(f"reader: start_step {start_step} outside 0..{self.steps_per_epoch}")
        if self.cache:
            shard = np.sort(self._plan(0).ravel())
            if self.shuffle:
                rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, int(epoch), self.rank, 1])
                shard = shard[rng.permutation(len(shard))]
            return shard.reshape(self.steps_per_epoch, self.batch_size)[start_step:]
        return self._plan(epoch)[start_step:]

    def _check_epoch(self) -> None:
        if self.steps_per_epoch == 0:
            raise UserError(f"{self.name}: {self.num_samples} samples cannot fill one batch of {self.batch_size} "
                            f"on each of {self.size} ranks (use a smaller batch or data.remainder=pad)")

    def _plan(self, epoch: int) -> np.ndarray:
        return rank_plan(self.num_samples, self.rank, self.size, self.batch_size, self.seed, epoch, self.shuffle,
                         self.shuffle_block, self.remainder)

    @property
    def unit(self) -> int:
        """Samples of one global batch (one batch on every rank): the epoch order is cut into these."""
        return self.size * self.batch_size

    def continued_indices(self, epoch: int, unit: int, consumed: int) -> np.ndarray:
        """This rank's batches for the rest of `epoch` when its order was cut into global batches of `unit`
        samples and the first `consumed` positions were trained (a checkpoint at another rank count or batch):
        continued_plan. The same unit at a global batch boundary is simply batch_indices from that step."""
        self._check_epoch()
        steps = shard_steps(self.num_samples, 1, unit, self.remainder)
        if not 0 <= consumed <= steps * unit:
            raise UserError(f"reader: {consumed} samples consumed, outside 0..{steps * unit} of the epoch's order")
        if unit == self.unit and consumed % unit == 0:
            return self.batch_indices(epoch, consumed // unit)
        if self.cache:
            raise UserError("reader: data.cache keeps a shard per rank and cannot continue an epoch at another "
                            "rank count or batch")
        return continued_plan(self.num_samples, self.rank, self.size, self.batch_size, self.seed, epoch,
                              self.shuffle, self.shuffle_block, self.remainder, unit, consumed)

    def epoch(self, epoch: int, start_step: int = 0) -> "EpochIterator":
        """Iterator over this rank's batches of `epoch`, from `start_step` on (skipped batches are not read)."""
        return EpochIterator(self, self.batch_indices(epoch, start_step))

    def epoch_from(self, epoch: int, unit: int, consumed: int) -> "EpochIterator":
        """Iterator over continued_indices (batches not read before are not read)."""
        return EpochIterator(self, self.continued_indices(epoch, unit, consumed))

    def eval_batches(self, limit: int = 0) -> "EpochIterator":
        """This rank's share of `limit` evenly spaced samples (0: all), in file order, each read once across
        ranks at any rank count (eval_share): the samples a 1-rank evaluation sees. Evenly spaced, not the
        first `limit`, so a file sorted by time or by run is not judged on its start. The last batch may be
        short and a rank may have none; the padding that keeps the index array rectangular is never returned."""
        total = self.num_samples
        n = min(limit, total) if limit > 0 else total
        start, stop = eval_share(n, self.rank, self.size)
        steps = -(-(stop - start) // self.batch_size)
        idx = np.arange(start, stop, dtype=np.int64) * total // max(n, 1)
        padded = np.pad(idx, (0, steps * self.batch_size - len(idx)), mode="edge") if len(idx) else idx
        counts = np.minimum(self.batch_size, len(idx) - self.batch_size * np.arange(steps))
        return EpochIterator(self, padded.reshape(steps, self.batch_size), counts=counts, use_cache=False)

    def fingerprint(self) -> dict:
        """What identifies this dataset without reading samples: its files with their byte sizes and sample
        counts, and a digest of those and of every file's attributes (shapes, channels, statistics,
        provenance). Ranks compare digests before training, so a glob resolved while files appear (or a
        stale copy on one node) stops the job instead of hanging it at the end of an epoch. Files are named
        as given, not by their staged copies' paths, which differ per node."""
        files = [(s, os.path.getsize(p), int(a["n"])) for s, p, a in zip(self.sources, self.paths, self.file_attrs)]
        h = hashlib.sha1(repr(files).encode())
        for a in self.file_attrs:
            for k in sorted(a):
                v = a[k]
                if isinstance(v, dict) and v and all(isinstance(x, np.ndarray) for x in v.values()):
                    v = {sk: v[sk].tolist() for sk in sorted(v)}
                h.update(repr((k, v)).encode())
        return {"files": files, "samples": self.num_samples, "digest": h.hexdigest()}

    def __len__(self) -> int:
        return self.steps_per_epoch

    # --- reading ----------------------------------------------------------------
    def _locate(self, idx: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, idx, side="right") - 1

    def read_sorted(self, uniq: np.ndarray, files: dict,
                    check: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Samples at sorted unique global indices, read as contiguous slabs: (inputs, targets, valid or None).
        `files`: this thread's open files."""
        xin = np.empty((len(uniq), *self.input_shape), dtype=np.float32)
        xout = np.empty((len(uniq), *self.target_shape), dtype=np.float32)
        valid = None if self.valid_shape is None else np.ones((len(uniq), *self.valid_shape), dtype=bool)
        if len(uniq) == 0:
            return xin, xout, valid
        fidx = self._locate(uniq)
        for a, b in self._slabs(uniq, fidx):
            fi = int(fidx[a])
            path = self.paths[fi]
            if fi not in files:  # handle, datasets, sizes and dtypes looked up once per thread and file
                f = open_read(path)
                key = f"meta/{VALID_META}"
                files[fi] = (f, [(name, f[name], f[name].shape[0], f[name].dtype == np.float32)
                                 for name in ("inputs", "targets")], f[key] if key in f else None)
            lo = int(uniq[a] - self.offsets[fi])
            hi = int(uniq[b - 1] - self.offsets[fi]) + 1
            rows = None if hi - lo == b - a else uniq[a:b] - self.offsets[fi] - lo  # the slab's wanted rows
            for (name, d, n, direct), out in zip(files[fi][1], (xin, xout)):
                if hi > n:
                    raise UserError(f"{path}: dataset '{name}' sample {hi - 1}: beyond its {n} samples "
                                    "(file changed while reading?)")
                if rows is not None:
                    slab = d[lo:hi]
                    if check:
                        check_finite_block(slab, path, name, lo)
                    out[a:b] = slab[rows]
                    continue
                if direct:
                    d.read_direct(out, np.s_[lo:hi], np.s_[a:b])
                else:
                    out[a:b] = d[lo:hi]
                if check:
                    check_finite_block(out[a:b], path, name, lo)
            if files[fi][2] is not None:
                mask = files[fi][2][lo:hi] != 0
                valid[a:b] = mask if rows is None else mask[rows]
        return xin, xout, valid

    def _slabs(self, uniq: np.ndarray, fidx: np.ndarray) -> list[tuple[int, int]]:
        """[a, b) ranges of `uniq` (sorted unique indices) read as one slab each: runs of consecutive samples in
        one file, runs separated by at most READ_MERGE_BYTES merged (the gap is read and dropped: a rank's
        slices of the global batches of one shuffle window interleave with its neighbours' near their edges)."""
        breaks = np.flatnonzero((np.diff(uniq) != 1) | (np.diff(fidx) != 0)) + 1
        if len(breaks):
            gap = READ_MERGE_BYTES // max(1, self._disk_sample_bytes)
            breaks = breaks[(fidx[breaks] != fidx[breaks - 1]) | (uniq[breaks] - uniq[breaks - 1] - 1 > gap)]
        edges = [0, *breaks.tolist(), len(uniq)]
        return list(zip(edges[:-1], edges[1:]))

    def read_samples(self, indices: Sequence[int] | np.ndarray, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Samples at arbitrary global indices (evaluation), in the order given, as float32 numpy arrays
        (inputs, targets); evaluation reads meta/valid with the other meta (read_meta)."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_samples):
            raise UserError(f"{self.name}: sample index out of range 0..{self.num_samples - 1}")
        uniq, inv = np.unique(idx, return_inverse=True)
        files: dict = {}
        try:
            xin, xout, _ = self.read_sorted(uniq, files, check=self.check_finite == "batch")
        finally:
            for f, *_ in files.values():
                f.close()
        xin, xout = xin[inv], xout[inv]
        return (self.normalize_inputs(xin) if normalize else xin), xout

    def normalize_inputs(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / std per input channel, with the dataset's stored statistics."""
        if not self.normalize:
            return x
        x -= self._mean
        x *= self._inv_std
        return x

    def read_meta(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """meta/<name> of samples [start, stop) (default: every sample), in global index order; only the
        files that hold the range are opened, and only the range is read (evaluation reads it per batch)."""
        stop = self.num_samples if stop is None else min(int(stop), self.num_samples)
        parts = []
        for i, p in enumerate(self.paths):
            lo, hi = max(start, int(self.offsets[i])), min(stop, int(self.offsets[i + 1]))
            if lo >= hi and parts:
                continue
            with open_read(p) as f:
                key = f"meta/{name}"
                if key not in f:
                    have = sorted(f["meta"].keys()) if "meta" in f else []
                    raise UserError(f"{p}: dataset '{key}' missing (available meta: {', '.join(have) or 'none'})")
                base = int(self.offsets[i])
                parts.append(f[key][max(lo - base, 0):max(hi - base, 0)])
        return np.concatenate(parts)

    def close(self) -> None:
        self._cached = None

    def __enter__(self) -> "ShardedReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


_END = object()


class EpochIterator:
    """Batches of one epoch, produced by a background thread into a bounded queue."""

    def __init__(self, reader: ShardedReader, batches: np.ndarray, counts: np.ndarray | None = None,
                 use_cache: bool = True):
        self.reader = reader
        self.batches = batches
        # Samples of each batch to return (the rest is padding); whole batches unless given.
        self.counts = np.full(len(batches), reader.batch_size) if counts is None else np.asarray(counts)
        self.use_cache = use_cache and reader.cache
        self._remaining = len(batches)
        self._queue: queue.Queue = queue.Queue(maxsize=reader.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="hpcgan-reader", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        return self

    def __len__(self) -> int:
        return self._remaining

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._remaining == 0:
            self.close()
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("reader thread ended without a result") from None
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        if item is _END:
            raise RuntimeError("reader thread ended early")
        self._remaining -= 1
        return item

    def close(self) -> None:
        """Stop the thread (also when the consumer breaks out of the loop early)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def __del__(self) -> None:
        self._stop.set()

    def group_batches(self) -> int:
        """Batches read together: whole shuffle windows (long contiguous runs) within READ_GROUP_BYTES."""
        r = self.reader
        # A shuffle window holds whole global batches; this rank reads its slice of each.
        window = window_samples(r.shuffle_block, r.unit) // r.size
        windows = READ_GROUP_BYTES // max(1, window * r._sample_bytes)
        if windows >= 1:
            return int(min(windows, 16)) * window // r.batch_size
        return max(1, READ_GROUP_BYTES // max(1, r.batch_size * r._sample_bytes))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        r = self.reader
        files: dict = {}
        try:
            if self.use_cache:
                self._produce_cached(files)
            else:
                per_group = self.group_batches()
                for g in range(0, len(self.batches), per_group):
                    group = self.batches[g:g + per_group]
                    uniq, inv = np.unique(group.ravel(), return_inverse=True)
                    xin, xout, valid = r.read_sorted(uniq, files, check=r.check_finite == "batch")
                    for j in range(len(group)):
                        sel = inv[j * r.batch_size:(j * r.batch_size + self.counts[g + j])]
                        if not self._put(self._tensors(xin[sel], xout[sel], None if valid is None else valid[sel])):
                            return
            self._put(_END)
        except BaseException as e:  # re-raised in the consumer: never a silent hang
            self._put(_Failure(e))
        finally:
            for f, *_ in files.values():
                f.close()

    def _produce_cached(self, files: dict) -> None:
        r = self.reader
        if r._cached is None:
            shard = np.sort(r._plan(0).ravel())
            uniq, inv = np.unique(shard, return_inverse=True)
            r._cached = (uniq, *r.read_sorted(uniq, files, check=r.check_finite == "batch"))
        uniq, xin, xout, valid = r._cached
        for batch, count in zip(self.batches, self.counts):
            pos = np.searchsorted(uniq, batch[:count])
            if not self._put(self._tensors(xin[pos], xout[pos], None if valid is None else valid[pos])):
                return

    def _tensors(self, xin: np.ndarray, xout: np.ndarray,
                 valid: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        r = self.reader
        x = torch.from_numpy(r.normalize_inputs(np.ascontiguousarray(xin)))
        y = torch.from_numpy(np.ascontiguousarray(xout))
        v = None if valid is None else torch.from_numpy(np.ascontiguousarray(valid))
        if r.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
            v = None if v is None else v.pin_memory()
        return x, y, v
