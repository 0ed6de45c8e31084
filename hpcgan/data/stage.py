"""Node-local copies of the data files (data.stage): where they go, copying, verifying, removing.

A parallel file system serves many small random reads badly, and every epoch every rank reads a
shuffled share of every file (the reader's global permutation), so staging copies the whole
resolved list of training and validation files to each node once, not a per-rank subset.
Which rank copies and when is decided in hpcgan/train/staging.py; nothing here is collective.

A copy is verified by its size and a CRC-32 of its bytes read back, against the CRC of the
source bytes as they were copied. Anything that goes wrong (a directory that is not writable,
too little free space, ENOSPC or an I/O error half-way) removes what was made and returns a
notice instead: the node then reads the files in place.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from hpcgan.errors import UserError

PREFIX = "hpcgan-stage-"  # every staging directory's name starts so; remove() touches nothing else
HEADROOM_BYTES = 256 * 2**20  # free space to leave: other jobs and the run's own temporary files share the disk
CHUNK_BYTES = 16 * 2**20


@dataclass
class Staged:
    """One node's copies: source path -> copy, or none and the reason the node reads in place."""

    root: str = ""  # the directory holding the copies ("" when nothing was made)
    copies: dict[str, str] = field(default_factory=dict)
    nbytes: int = 0
    seconds: float = 0.0
    notice: str = ""  # why the data is read in place; empty when staged


def stage_base(stage_dir: str, env: Mapping[str, str]) -> tuple[str, bool]:
    """(directory to stage under, whether the user named it): data.stage_dir with $VARS and ~ expanded
    (on each node, so /local/$SLURMD_NODENAME works), else $SLURM_TMPDIR, else $TMPDIR, else the
    system temporary directory."""
    if stage_dir:
        return os.path.expanduser(_expand(stage_dir, env)), True
    for name in ("SLURM_TMPDIR", "TMPDIR"):
        if env.get(name):
            return env[name], False
    return tempfile.gettempdir(), False


def _expand(text: str, env: Mapping[str, str]) -> str:
    """$NAME and ${NAME} from env (unknown names stay as written, like os.path.expandvars)."""
    return re.sub(r"\$(\w+)|\$\{(\w+)\}", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def check_stage_dir(stage_dir: str, env: Mapping[str, str]) -> None:
    """An explicit data.stage_dir must be a directory this process can create files in (UserError
    otherwise): the user asked for that place, so a typo ends the job rather than silently reading
    in place. The default places only fall back, with a notice."""
    if not stage_dir:
        return
    base, _ = stage_base(stage_dir, env)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    except OSError as e:
        raise UserError(f"config key data.stage_dir: {base}: not a writable directory ({e.strerror or e}) "
                        "(expected node-local storage, e.g. $SLURM_TMPDIR, or leave it empty)") from None


def plan_copies(sources: Sequence[str], root: str) -> dict[str, str]:
    """source -> root/<8 hex digits of the absolute source path>-<name>: names stay readable in errors,
    and two files of the same name in different directories do not collide."""
    out = {}
    for src in sources:
        tag = hashlib.sha1(os.path.abspath(src).encode()).hexdigest()[:8]
        out[src] = os.path.join(root, f"{tag}-{os.path.basename(src)}")
    return out


def room_notice(base: str, need: int, free: int, headroom: int = HEADROOM_BYTES) -> str:
    """Empty when `need` bytes fit into `free` with `headroom` to spare, else the notice saying why not."""
    if need + headroom <= free:
        return ""
    return (f"no room in {base}: the data needs {_mib(need)} + {_mib(headroom)} headroom, "
            f"{_mib(free)} free")


def copy_verified(src: str, dst: str) -> int:
    """Copy src to dst and read the copy back; raise OSError unless its size and CRC-32 match the
    bytes read from src. Returns the bytes copied."""
    crc, n = 0, 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
            n += len(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    size = os.path.getsize(dst)
    if size != n:
        raise OSError(f"{dst}: {size} bytes after copying {n} from {src}")
    if file_crc(dst) != crc:
        raise OSError(f"{dst}: CRC-32 differs from the bytes read from {src}")
    return n


def file_crc(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    return crc


def stage_files(sources: Sequence[str], base: str) -> Staged:
    """Copy `sources` into a new directory under `base` and verify them. Never raises OSError: any
    failure removes what was made and returns a Staged with a notice (read the files in place)."""
    t0 = time.perf_counter()
    try:
        need = sum(os.path.getsize(s) for s in sources)
        root = tempfile.mkdtemp(prefix=PREFIX, dir=base)
    except OSError as e:
        return Staged(notice=f"cannot stage in {base}: {e.strerror or e}")
    notice = room_notice(base, need, shutil.disk_usage(root).free)
    if notice:
        remove(root)
        return Staged(notice=notice)
    copies = plan_copies(sources, root)
    try:
        for src, dst in copies.items():
            copy_verified(src, dst)
    except OSError as e:  # ENOSPC when another job filled the disk meanwhile, an I/O error, a bad copy
        remove(root)
        return Staged(notice=f"copying to {base} failed: {e.strerror or e}")
    return Staged(root=root, copies=copies, nbytes=need, seconds=time.perf_counter() - t0)


def visible(copies: Mapping[str, str]) -> bool:
    """Whether every copy exists here with its source's size: a rank that is not the copier checks
    that it shares the copier's node-local storage (a launcher may misreport which ranks share a node)."""
    try:
        return all(os.path.getsize(dst) == os.path.getsize(src) for src, dst in copies.items())
    except OSError:
        return False


def remove(root: str) -> None:
    """Delete a staging directory (only one this module made: its name starts with PREFIX)."""
    if root and Path(root).name.startswith(PREFIX):
        shutil.rmtree(root, ignore_errors=True)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
