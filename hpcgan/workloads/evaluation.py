"""Streamed science evaluation: what one batch of held-out samples contributes, and how the parts merge.

Why: a held-out set can be far larger than one process's memory (the paper-size CRF set is 36 GB of inputs),
so `hpcgan evaluate` never gathers the samples. Each rank turns every batch it generated into an EvalStats
(Workload.evaluation_batch): `rows`, a few numbers per sample (an LHC track's parameters, a galaxy's PSNR
per band), and `sums`, statistics that add over samples (a CRF power spectrum, a chroma histogram). Rank 0
merges every rank's parts in index order and finishes the metrics (Workload.evaluation_finish); the only
full-size samples it receives are the first few, for the figures (`examples`). Splitting a set into any
batches and ranks gives the numbers of one pass over it (tests/train/test_streamed_evaluation.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EvalStats:
    """rows: per-sample arrays (first axis = sample), concatenated in index order when merged;
    sums: arrays added element-wise when merged."""

    rows: dict[str, np.ndarray] = field(default_factory=dict)
    sums: dict[str, np.ndarray] = field(default_factory=dict)

    def nbytes(self) -> int:
        return int(sum(np.asarray(v).nbytes for v in (*self.rows.values(), *self.sums.values())))


def merge(parts: list[EvalStats]) -> EvalStats:
    """Concatenate the rows and add the sums of parts given in sample-index order (empty parts are skipped:
    a rank may have had no samples)."""
    parts = [p for p in parts if p.rows or p.sums]
    if not parts:
        return EvalStats()
    rows = {k: np.concatenate([np.asarray(p.rows[k]) for p in parts]) for k in parts[0].rows}
    sums = {k: np.sum([np.asarray(p.sums[k], np.float64) for p in parts], axis=0) for k in parts[0].sums}
    return EvalStats(rows, sums)


def take_examples(inputs: np.ndarray, real: np.ndarray, fake: np.ndarray, meta: dict, first: int,
                  limit: int) -> dict | None:
    """The samples of this batch whose global index is below `limit` (the figures' examples), or None."""
    n = max(0, min(limit - first, len(real)))
    if n == 0:
        return None
    return {"inputs": inputs[:n], "real": real[:n], "fake": fake[:n], "meta": {k: v[:n] for k, v in meta.items()}}


def merge_examples(parts: list[dict | None]) -> dict:
    """Examples from batches (and ranks) in index order, as one dict of arrays."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return {"inputs": None, "real": None, "fake": None, "meta": {}}
    cat = lambda key: np.concatenate([p[key] for p in parts])  # noqa: E731
    return {"inputs": cat("inputs"), "real": cat("real"), "fake": cat("fake"),
            "meta": {k: np.concatenate([p["meta"][k] for p in parts]) for k in parts[0]["meta"]}}
