"""The hpcgan HDF5 dataset format: one writer, one attribute reader, one validator.

A dataset is one or many HDF5 files (a path or a glob). Each file holds
  inputs   (N, C_in, ...)   float32 or float16, chunks of whole samples, about 64 KiB (one sample if larger)
  targets  (N, C_out, ...)  same
  meta/*   (N, ...)         optional per-sample arrays (truth, masks), any dtype; meta/valid
                            (N, *target spatial shape), nonzero where the target pixel is defined,
                            is the one the reader delivers with every batch (losses and metrics skip the rest)
and file attributes (see docs/data-format.md):
  format_version, workload, n, storage_dtype, input_channels / target_channels (JSON lists),
  input_mean/std/min/max, target_mean/std/min/max (float64, one value per channel),
  stats_count (values per channel the stats were taken over), provenance (JSON).

Why chunks of whole samples of about 64 KiB: the sharded reader reads arbitrary runs of
samples, so an image of several MiB is its own chunk and no rank reads a neighbour's pixels.
Small samples (an LHC track is 20-120 bytes) are grouped: one sample per chunk there means a
million chunks per file, files 3x their data, 12-18 s to read 20 MB and 6.6 GB of HDF5 chunk
bookkeeping in every rank that caches its shard (measured 2026-11-30, 10^6 fast-simulation tracks).
A rank at a shard edge reads at most one shared 64 KiB chunk twice. Meta arrays use up to 1024 samples.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from hpcgan.errors import UserError

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
VALID_META = "valid"  # meta/valid: which target pixels are defined (module doc; convert_crf writes it)
SYNTH_BLOCK = 1024  # synthetic generators draw sample block k from np.random.default_rng([seed, k])
META_CHUNK = 1024  # samples per chunk of a meta/* dataset
SAMPLE_CHUNK_BYTES = 64 * 1024  # target bytes per chunk of inputs/targets (module doc)
MAX_CHUNK_BYTES = 1024 * 1024  # the validator refuses multi-sample chunks above this (the reader reads runs)
STAT_KEYS = ("mean", "std", "min", "max")

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # before h5py opens anything (parallel file systems)
import h5py  # noqa: E402


def synth_samples(start: int, count: int, seed: int, draw: Callable[[np.random.Generator], tuple],
                  chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """Samples [start, start+count) of a one-sample-at-a-time generator, `chunk` stacked per yield.

    Block k of SYNTH_BLOCK samples draws from default_rng([seed, k]), one sample after another, so any
    rank can draw any block and a range that ends inside a block gives the same samples as the full block.
    `draw(rng)` returns (inputs, targets, meta dict) of one sample.
    """
    if start % SYNTH_BLOCK:
        raise ValueError(f"start {start} is not a multiple of SYNTH_BLOCK={SYNTH_BLOCK}")
    buf: list[tuple] = []
    end = start + count
    for k in range(start // SYNTH_BLOCK, -(-end // SYNTH_BLOCK)):
        rng = np.random.default_rng([int(seed), k])
        for _ in range(min(SYNTH_BLOCK, end - k * SYNTH_BLOCK)):
            buf.append(draw(rng))
            if len(buf) == chunk:
                yield stack_samples(buf)
                buf = []
    if buf:
        yield stack_samples(buf)


def stack_samples(buf: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray, dict]:
    """[(inputs, targets, meta), ...] -> one block (B, ...) of each."""
    return (np.stack([b[0] for b in buf]), np.stack([b[1] for b in buf]),
            {k: np.stack([b[2][k] for b in buf]) for k in buf[0][2]})

class ChannelStats:
    """Per-channel count/mean/M2/min/max in float64, mergeable (Chan et al.) so blocks and ranks combine exactly."""

    def __init__(self, channels: int):
        self.count = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)

    def update(self, block: np.ndarray) -> None:
        """Add a block (B, C, ...): statistics over every axis but 1."""
        if block.shape[0] == 0:
            return
        x = np.moveaxis(np.asarray(block, dtype=np.float64), 1, 0).reshape(block.shape[1], -1)
        other = ChannelStats(x.shape[0])
        other.count = x.shape[1]
        other.mean = x.mean(axis=1)
        other.m2 = ((x - other.mean[:, None]) ** 2).sum(axis=1)
        other.min = x.min(axis=1)
        other.max = x.max(axis=1)
        self.merge(other)

    def merge(self, other: "ChannelStats") -> None:
        if other.count == 0:
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / n)
        self.m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / n)
        self.count = n
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max}

    @classmethod
    def from_summary(cls, count: int, mean: np.ndarray, std: np.ndarray, vmin: np.ndarray, vmax: np.ndarray) -> "ChannelStats":
        s = cls(len(mean))
        s.count, s.mean, s.m2 = int(count), np.asarray(mean, float), np.asarray(std, float) ** 2 * int(count)
        s.min, s.max = np.asarray(vmin, float), np.asarray(vmax, float)
        return s


def sample_bytes(shape: Sequence[int], dtype: Any) -> int:
    """Bytes of one sample of the given per-sample shape."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def sample_chunk_rows(shape: Sequence[int], dtype: Any) -> int:
    """Samples per chunk of inputs/targets: about SAMPLE_CHUNK_BYTES, at least one (module doc)."""
    return max(1, SAMPLE_CHUNK_BYTES // max(1, sample_bytes(shape, dtype)))


class DatasetWriter:
    """Stream samples into one HDF5 file; stats and attributes are written on close.

    The file appears under its final name only when complete (written as
    `<path>.tmp-<pid>`, then os.replace), so a crash never leaves a
    half-written file that a reader would accept. With exact=False, `n` is an
    upper bound and the datasets are shrunk to what was written (converters
    that drop bad samples use this).
    """

    def __init__(self, path: str | os.PathLike, workload: str, n: int, input_shape: Sequence[int],
                 target_shape: Sequence[int], input_channels: Sequence[str], target_channels: Sequence[str],
                 meta_spec: Mapping[str, tuple] | None = None, provenance: Mapping[str, Any] | None = None,
                 dtype: str = "float32", exact: bool = True):
        if dtype not in ("float32", "float16"):
            raise UserError(f"{path}: storage dtype {dtype!r} not supported (expected float32 or float16)")
        if len(input_channels) != input_shape[0] or len(target_channels) != target_shape[0]:
            raise UserError(f"{path}: {len(input_channels)} input / {len(target_channels)} target channel names "
                            f"for shapes {tuple(input_shape)} / {tuple(target_shape)}")
        self.path = Path(path)
        self.tmp = Path(f"{path}.tmp-{os.getpid()}")
        self.workload, self.n, self.exact, self.dtype = workload, int(n), exact, dtype
        self.input_shape, self.target_shape = tuple(int(s) for s in input_shape), tuple(int(s) for s in target_shape)
        self.input_channels, self.target_channels = list(input_channels), list(target_channels)
        self.meta_spec = {k: (tuple(shape), np.dtype(dt)) for k, (shape, dt) in (meta_spec or {}).items()}
        self.provenance = dict(provenance or {})
        self.written = 0
        self.in_stats = ChannelStats(self.input_shape[0])
        self.out_stats = ChannelStats(self.target_shape[0])
        self._f: h5py.File | None = None

    def __enter__(self) -> "DatasetWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self._f = h5py.File(self.tmp, "w")
        n = self.n
        for name, shape in (("inputs", self.input_shape), ("targets", self.target_shape)):
            f.create_dataset(name, shape=(n, *shape), maxshape=(None, *shape), dtype=self.dtype,
                             chunks=(min(sample_chunk_rows(shape, self.dtype), max(1, n)), *shape))
        for name, (shape, dt) in self.meta_spec.items():
            f.create_dataset(f"meta/{name}", shape=(n, *shape), maxshape=(None, *shape), dtype=dt,
                             chunks=(max(1, min(META_CHUNK, n)), *shape))
        return self

    def write(self, inputs: np.ndarray, targets: np.ndarray, meta: Mapping[str, np.ndarray] | None = None) -> None:
        """Append a block of samples: inputs (B, *input_shape), targets (B, *target_shape), meta {name: (B, ...)}."""
        assert self._f is not None, "use DatasetWriter as a context manager"
        b = len(inputs)
        if inputs.shape[1:] != self.input_shape or targets.shape[1:] != self.target_shape or len(targets) != b:
            raise UserError(f"{self.path}: block shapes {inputs.shape}/{targets.shape} do not match "
                            f"inputs (B, {self.input_shape}) / targets (B, {self.target_shape})")
        if self.written + b > self.n:
            raise UserError(f"{self.path}: more than the declared {self.n} samples written")
        for name, arr in (("inputs", inputs), ("targets", targets)):
            bad = ~np.isfinite(arr).reshape(b, -1).all(axis=1)
            if bad.any():
                raise UserError(f"{self.path}: dataset '{name}' sample {self.written + int(np.argmax(bad))}: "
                                "non-finite value (NaN or Inf) given to the writer")
        meta = dict(meta or {})
        if set(meta) != set(self.meta_spec):
            raise UserError(f"{self.path}: meta keys {sorted(meta)} given, expected {sorted(self.meta_spec)}")
        s = slice(self.written, self.written + b)
        self._f["inputs"][s] = inputs
        self._f["targets"][s] = targets
        for name, arr in meta.items():
            shape, _ = self.meta_spec[name]
            arr = np.asarray(arr)
            if arr.shape != (b, *shape):
                raise UserError(f"{self.path}: meta '{name}' block shape {arr.shape}, expected {(b, *shape)}")
            self._f[f"meta/{name}"][s] = arr
        # Stats from what is stored (float16 rounding included), so normalisation matches the bytes read back.
        self.in_stats.update(inputs.astype(self.dtype))
        self.out_stats.update(targets.astype(self.dtype))
        self.written += b

    def __exit__(self, exc_type, exc, tb) -> None:
        f, self._f = self._f, None
        if exc_type is not None:
            f.close()
            self.tmp.unlink(missing_ok=True)
            return
        try:
            if self.written != self.n:
                if self.exact:
                    raise UserError(f"{self.path}: {self.written} samples written, {self.n} declared")
                for name in ["inputs", "targets"] + [f"meta/{m}" for m in self.meta_spec]:
                    f[name].resize(self.written, axis=0)
            write_attrs(f, workload=self.workload, n=self.written, dtype=self.dtype,
                        input_channels=self.input_channels, target_channels=self.target_channels,
                        input_stats=self.in_stats, target_stats=self.out_stats, provenance=self.provenance)
            f.flush()
            f.close()
        except BaseException:
            f.close()
            self.tmp.unlink(missing_ok=True)
            raise
        os.replace(self.tmp, self.path)


def write_attrs(f: h5py.File, *, workload: str, n: int, dtype: str, input_channels: Sequence[str],
                target_channels: Sequence[str], input_stats: ChannelStats, target_stats: ChannelStats,
                provenance: Mapping[str, Any]) -> None:
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["workload"] = workload
    f.attrs["n"] = int(n)
    f.attrs["storage_dtype"] = dtype
    f.attrs["input_channels"] = json.dumps(list(input_channels))
    f.attrs["target_channels"] = json.dumps(list(target_channels))
    write_stats(f, input_stats, target_stats)
    f.attrs["provenance"] = json.dumps(provenance, default=str)


def write_stats(f: h5py.File, input_stats: ChannelStats, target_stats: ChannelStats) -> None:
    for prefix, st in (("input", input_stats), ("target", target_stats)):
        for k, v in st.as_dict().items():
            f.attrs[f"{prefix}_{k}"] = np.asarray(v, dtype=np.float64)
    f.attrs["stats_count"] = int(input_stats.count)
    f.attrs["target_stats_count"] = int(target_stats.count)


def _open(path: str | os.PathLike) -> h5py.File:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if p.is_dir():
        raise UserError(f"{path}: is a directory, expected an HDF5 file")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise UserError(f"{path}: cannot open as HDF5 ({str(e).splitlines()[0]})") from None


def open_read(path: str | os.PathLike) -> h5py.File:
    """Read-only handle with a UserError naming the file on failure."""
    return _open(path)


def attrs_of(f: h5py.File, path: str | os.PathLike) -> dict:
    """Parse and check the attributes of an open file (see module docstring)."""
    a = f.attrs
    if "format_version" not in a:
        raise UserError(f"{path}: attribute 'format_version' missing (not an hpcgan dataset?)")
    version = int(a["format_version"])
    if version not in SUPPORTED_VERSIONS:
        raise UserError(f"{path}: format version {version} not supported (expected one of {list(SUPPORTED_VERSIONS)})")
    for name in ("inputs", "targets"):
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise UserError(f"{path}: dataset '{name}' missing (expected datasets 'inputs' and 'targets')")
        if f[name].ndim < 2:
            raise UserError(f"{path}: dataset '{name}' has rank {f[name].ndim} (shape {f[name].shape}), "
                            "expected at least 2 (N, C, ...)")
    n_in, n_out = f["inputs"].shape[0], f["targets"].shape[0]
    if n_in != n_out:
        raise UserError(f"{path}: dataset 'targets' has {n_out} samples but dataset 'inputs' has {n_in}")
    out: dict[str, Any] = {
        "format_version": version,
        "workload": str(a.get("workload", "")),
        "n": int(n_in),
        "storage_dtype": str(a.get("storage_dtype", f["inputs"].dtype.name)),
        "input_shape": tuple(f["inputs"].shape[1:]),
        "target_shape": tuple(f["targets"].shape[1:]),
        "input_channels": _json(a, "input_channels", path, []),
        "target_channels": _json(a, "target_channels", path, []),
        "provenance": _json(a, "provenance", path, {}),
        "meta": {k: (tuple(v.shape[1:]), v.dtype.name) for k, v in f["meta"].items()} if "meta" in f else {},
        "stats_count": int(a.get("stats_count", 0)),
        "target_stats_count": int(a.get("target_stats_count", a.get("stats_count", 0))),
    }
    for name, shape in (("input", out["input_shape"]), ("target", out["target_shape"])):
        chans = out[f"{name}_channels"]
        if chans and len(chans) != shape[0]:
            raise UserError(f"{path}: attribute '{name}_channels' names {len(chans)} channels, "
                            f"dataset '{name}s' has {shape[0]}")
        stats = {}
        for k in STAT_KEYS:
            key = f"{name}_{k}"
            if key in a:
                v = np.asarray(a[key], dtype=np.float64)
                if v.shape != (shape[0],):
                    raise UserError(f"{path}: attribute '{key}' has shape {v.shape}, expected ({shape[0]},)")
                stats[k] = v
        out[f"{name}_stats"] = stats if len(stats) == len(STAT_KEYS) else {}
    for name in ("inputs", "targets"):
        if f[name].dtype.kind != "f":
            raise UserError(f"{path}: dataset '{name}' has dtype {f[name].dtype}, expected float32 or float16")
    for k, v in (f["meta"].items() if "meta" in f else []):
        if v.shape[0] != n_in:
            raise UserError(f"{path}: dataset 'meta/{k}' has {v.shape[0]} samples but dataset 'inputs' has {n_in}")
    return out


def _json(a, key: str, path, default):
    if key not in a:
        return default
    try:
        return json.loads(a[key])
    except (TypeError, ValueError):
        raise UserError(f"{path}: attribute '{key}' is not valid JSON") from None


def read_attrs(path: str | os.PathLike) -> dict:
    """Parsed, checked attributes of one dataset file (shapes, channels, stats, provenance, meta schema)."""
    with _open(path) as f:
        return attrs_of(f, path)


def find_nonfinite(f: h5py.File, path: str | os.PathLike, name: str, start: int = 0, stop: int | None = None,
                   block_bytes: int = 64 * 2**20) -> None:
    """Scan samples [start, stop) of one dataset in slabs; UserError names the first bad sample."""
    for a, block in _slabs(f[name], start, stop, block_bytes):
        check_finite_block(block, path, name, a)


def count_nonfinite(f: h5py.File, name: str, block_bytes: int = 64 * 2**20) -> tuple[int, int, int]:
    """(non-finite values, samples holding any, first such sample or -1) over one whole dataset."""
    values, samples, first = 0, 0, -1
    for a, block in _slabs(f[name], 0, None, block_bytes):
        bad = ~np.isfinite(block).reshape(len(block), -1)
        per_sample = bad.sum(axis=1)
        if per_sample.any():
            values += int(per_sample.sum())
            samples += int(np.count_nonzero(per_sample))
            first = a + int(np.argmax(per_sample > 0)) if first < 0 else first
    return values, samples, first


def _slabs(d: h5py.Dataset, start: int, stop: int | None, block_bytes: int):
    """(first index, samples) for [start, stop) of a dataset, in slabs of about block_bytes."""
    stop = d.shape[0] if stop is None else stop
    per = max(1, block_bytes // max(1, d.dtype.itemsize * math.prod(d.shape[1:])))
    for a in range(start, stop, per):
        yield a, d[a:min(stop, a + per)]


def check_finite_block(block: np.ndarray, path, name: str, first_index: int) -> None:
    ok = np.isfinite(block).reshape(len(block), -1).all(axis=1)
    if not ok.all():
        i = int(np.argmin(ok))
        raise UserError(f"{path}: dataset '{name}' sample {first_index + i}: non-finite value (NaN or Inf)")


def validate(path: str | os.PathLike, check_finite: bool = True) -> dict:
    """Full check of one file: attributes, shapes, chunking, stats, and (optionally) every value finite."""
    with _open(path) as f:
        attrs = attrs_of(f, path)
        for name in ("inputs", "targets"):
            d = f[name]
            if d.shape[0] > 0 and d.chunks is not None:
                sample = ", ".join(map(str, d.shape[1:]))
                if tuple(d.chunks[1:]) != tuple(d.shape[1:]):
                    raise UserError(f"{path}: dataset '{name}' chunks {d.chunks}, expected whole samples per chunk "
                                    f"(K, {sample})")
                if d.chunks[0] > 1 and d.chunks[0] * sample_bytes(d.shape[1:], d.dtype) > MAX_CHUNK_BYTES:
                    raise UserError(f"{path}: dataset '{name}' chunks {d.chunks} hold "
                                    f"{d.chunks[0] * sample_bytes(d.shape[1:], d.dtype)} bytes, expected at most "
                                    f"{MAX_CHUNK_BYTES} (or one sample per chunk, (1, {sample}))")
        if attrs["n"] > 0 and not (attrs["input_stats"] and attrs["target_stats"]):
            raise UserError(f"{path}: per-channel statistics missing (run 'hpcgan data stats {path}')")
        if check_finite:
            for name in ("inputs", "targets"):
                find_nonfinite(f, path, name)
    return attrs
