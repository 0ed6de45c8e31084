"""The sample ledger (train.sample_ledger): which samples every rank consumed at every step, for audits.

Each run of a job (a segment: the first start, then every resume) writes one folder
`ledger/NNNN-from-STEP/` (NNNN counts segments, STEP is the global step it resumed
from), and each rank one file in it, `rank-RRRRR.i64`: little-endian int64 records
`[epoch, global_step, count, index_1 .. index_count]`, one per micro-batch drawn,
flushed as written (a killed job leaves at most one cut record, which read_ledger
ignores). A step done twice (a crash after the last checkpoint, then a resume from
it) appears in two segments; a segment resumed from step S voids every earlier
segment's records of steps after S (that work was lost with its process), which
consumed() applies. About 8 bytes per sample.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

FOLDER = "ledger"
_SEGMENT = re.compile(r"^(\d{4})-from-(\d{8})$")


def next_segment(run_dir: Path) -> int:
    """Number of the next segment folder (rank 0 decides and broadcasts it)."""
    folder = Path(run_dir) / FOLDER
    found = [int(m.group(1)) for p in folder.iterdir() if (m := _SEGMENT.match(p.name))] if folder.is_dir() else []
    return max(found, default=-1) + 1


class LedgerWriter:
    """One rank's ledger file of one segment."""

    def __init__(self, run_dir: Path, segment: int, from_step: int, rank: int):
        folder = Path(run_dir) / FOLDER / f"{segment:04d}-from-{from_step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"rank-{rank:05d}.i64"
        self._f = open(self.path, "ab")

    def record(self, epoch: int, global_step: int, indices: np.ndarray) -> None:
        head = np.array([epoch, global_step, len(indices)], dtype="<i8")
        self._f.write(head.tobytes() + np.asarray(indices, dtype="<i8").tobytes())
        self._f.flush()

    def close(self) -> None:
        self._f.close()


@dataclass(frozen=True)
class Record:
    segment: int
    from_step: int
    rank: int
    epoch: int
    global_step: int
    indices: np.ndarray


def read_ledger(run_dir: Path) -> Iterator[Record]:
    """Every complete record of every segment and rank, segments in order."""
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return
    for seg in sorted(p for p in folder.iterdir() if _SEGMENT.match(p.name)):
        m = _SEGMENT.match(seg.name)
        number, from_step = int(m.group(1)), int(m.group(2))
        for f in sorted(seg.glob("rank-*.i64")):
            rank = int(f.stem.split("-")[1])
            data = np.fromfile(f, dtype="<i8")
            i = 0
            while i + 3 <= len(data) and i + 3 + data[i + 2] <= len(data):
                n = int(data[i + 2])
                yield Record(number, from_step, rank, int(data[i]), int(data[i + 1]), data[i + 3:i + 3 + n].copy())
                i += 3 + n


def consumed(run_dir: Path) -> dict[int, np.ndarray]:
    """Per epoch, the sample indices trained, over all ranks and segments: a record counts unless a later
    segment resumed from a step before it (module doc)."""
    records = list(read_ledger(run_dir))
    folder = Path(run_dir) / FOLDER
    starts = {int(m.group(1)): int(m.group(2)) for p in folder.iterdir() if (m := _SEGMENT.match(p.name))} \
        if folder.is_dir() else {}
    out: dict[int, list[np.ndarray]] = {}
    for r in records:
        if all(start >= r.global_step for seg, start in starts.items() if seg > r.segment):
            out.setdefault(r.epoch, []).append(r.indices)
    return {e: np.concatenate(v) for e, v in sorted(out.items())}
