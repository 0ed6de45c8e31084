"""Checks that every rank, and every restart, runs the same job: one dataset on every rank, BatchNorm
statistics equal on every rank, and a resume that does not silently change what an epoch reads.

Each check is collective or works on broadcast values, so every rank reaches the same verdict and an
error is an AgreedError: rank 0 prints one line, every rank exits 2, nobody is left waiting in a collective.
"""
from __future__ import annotations

import os

from hpcgan.config import Config
from hpcgan.data.reader import ShardedReader, mark_scanned
from hpcgan.errors import AgreedError
from hpcgan.runtime.backend import Backend
from hpcgan.train import checkpoint as ckpt
from hpcgan.train.step import Training


def agree_on_data(backend: Backend, readers: dict[str, ShardedReader]) -> dict[str, dict]:
    """Check that every rank resolved the same files with the same sizes (one allgather of digests).

    A glob resolved while files are still being written, or a stale copy on one node, would give ranks
    different step counts and a hang at the end of the first epoch; instead every rank stops (exit 2, one line
    from rank 0). Returns the fingerprints (kept in checkpoints, compared on resume)."""
    prints = {key: r.fingerprint() for key, r in readers.items()}
    digests = backend.allgather_object({key: p["digest"] for key, p in prints.items()})
    for key in prints:
        ranks = [r for r, d in enumerate(digests) if d[key] != digests[0][key]]
        if not ranks:
            continue
        # Every rank sees the same digests, so every rank takes this branch and these two broadcasts.
        first = backend.broadcast_object(prints[key], root=0)
        other = backend.broadcast_object(prints[key], root=ranks[0])
        raise AgreedError([f"{key}: rank {ranks[0]} sees {_describe_files(other)}, rank 0 sees "
                           f"{_describe_files(first)} ({len(ranks)} of {backend.size} ranks differ from rank 0): every "
                           "rank must read the same files (still being written? a node-local copy?)"])
    return prints


def _describe_files(fp: dict) -> str:
    return f"{len(fp['files'])} file(s) ({_names(fp)}), {fp['samples']} samples, {sum(f[1] for f in fp['files'])} bytes"


def agree_on_buffers(tr: Training) -> None:
    """Average BatchNorm running statistics over ranks (each rank gathered its own from its shard), so
    every rank validates the model the checkpoint holds. Collective; a no-op at one rank."""
    tr.backend.average_buffers(ckpt.unwrap(tr.G), group="G.buffers")
    tr.backend.average_buffers(ckpt.unwrap(tr.D), group="D.buffers")


# Keys that decide which samples the steps of an epoch read; the ranks count too (hpcgan/train/resume.py).
EPOCH_ORDER_KEYS = ("train.batch_size", "train.accumulation", "seed", "data.shuffle", "data.shuffle_block",
                    "data.remainder", "data.cache")


def epoch_order_changes(old: dict, cfg: Config) -> list[str]:
    """'key old -> new' for each EPOCH_ORDER_KEYS entry that differs from the checkpoint's config."""
    new = cfg.to_dict()
    out = []
    for key in EPOCH_ORDER_KEYS:
        section, _, name = key.rpartition(".")
        a = (old.get(section) or {}).get(name) if section else old.get(name)
        b = new[section][name] if section else new[name]
        if a is not None and a != b:
            out.append(f"{key} {a!r} -> {b!r}")
    return out


def check_same_training_data(path: str, old: dict | None, new: dict, key_value: str) -> None:
    """The checkpoint's training data (file names and sample counts) must be today's: otherwise the epoch
    plan, and what 'epoch 3, step 40' means, changed. Moving the files to another directory is fine."""
    if not old or not new:
        return  # a checkpoint from before data fingerprints were kept
    def summary(fp: dict) -> list:
        return [(os.path.basename(p), n) for p, _, n in fp["files"]]
    if summary(old) != summary(new):
        raise AgreedError([f"data.path {key_value}: checkpoint {path} was trained on {len(old['files'])} file(s) with "
                           f"{old['samples']} samples ({_names(old)}), data.path now gives {len(new['files'])} file(s) "
                           f"with {new['samples']} samples ({_names(new)}): resume needs the same training data "
                           "(restore it, or start over with --resume never or a new run_dir)"])


def _names(fp: dict, most: int = 3) -> str:
    names = [os.path.basename(p) for p, _, _ in fp["files"]]
    return ", ".join(names[:most]) + (f", ... ({len(names) - most} more)" if len(names) > most else "")


def scan_shares(backend: Backend, readers: list[ShardedReader]) -> None:
    """data.check_finite=open: each rank scans its share of each data set not yet scanned in this process, the
    outcome agreed (one allgather; an error is one line from rank 0, exit 2): the data set is read once in
    all, not once per rank. Collective; skipped by every rank alike when nothing is left to scan."""
    todo = [r for r in readers if r.needs_scan()]
    if not todo:
        return
    backend.agree(lambda: [r.scan_finite(backend.rank, backend.size) for r in todo])
    for r in todo:
        mark_scanned(r)
