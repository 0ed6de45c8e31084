"""Atomic, verified checkpoints.

A checkpoint is a plain `torch.save` file: `torch.load(path, weights_only=True)` opens it anywhere, and the
generator's state dict is under the key "G" (its EMA copy, when trained with one, under "G_ema"). Its
integrity record is a sidecar `ckpt-N.pt.sha256` in `sha256sum` format (`sha256sum -c` checks it too).
Both are written by rank 0 to temporary names in the same folder, fsynced, then renamed, the checkpoint
first, so a crash mid-write never leaves a half checkpoint under a real name, nor a record that does not
match its file; the folder is fsynced too so the rename survives a node failure. On load the checksum is
verified before unpickling when the sidecar exists (a checkpoint copied without it, or one whose write was
cut between the two renames, still loads: it was renamed complete, and its zip structure ends in a central
directory, so a truncated copy fails to open).

A checkpoint is data, not a program: the payload holds tensors, numbers, strings, lists and dicts only
(RNG states included, see rng_state) and is loaded with `weights_only=True`, so a planted file cannot run
code in `train`'s resume, `evaluate` or `generate`. The checksum guards against truncation, not against
tampering (anyone who can write the file can recompute it). Files of the earlier format (a JSON header line
before the payload) still load, verified by their header.

RNG states are per rank and beside the checkpoint, not in it: before rank 0 writes `ckpt-N.pt`, every rank
writes its own state atomically to `ckpt-N.pt.rng/rank-R.pt` (plain types, weights_only), and at resume each
rank reads only its own file. Nothing is gathered, so the cost per rank does not grow with the rank count;
a checkpoint that exists under its real name has every rank's file complete beside it (they were written
first). Rotation removes the folder with its checkpoint. Checkpoints of before (every rank's state in "rng")
still load.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from hpcgan.errors import UserError

LEGACY_MAGIC = "hpcgan-checkpoint-v1"  # the header line of checkpoints before 2026-12-03
NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


def sidecar(path: Path) -> Path:
    """The integrity record of checkpoint `path`: `<sha256>  <name>` as sha256sum writes it."""
    return path.with_name(path.name + ".sha256")


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (ENOSPC, EDQUOT, EIO, ...): the partial files are gone, the previous
    checkpoints are intact. The trainer ends the job with the requeue code on this."""


def save_checkpoint(state: dict, directory: Path, step: int, keep: int, protect: tuple[str, ...] = ()) -> Path:
    """Write atomically; then delete all but the newest `keep` checkpoints (and their sidecars and RNG folders)."""
    final = directory / checkpoint_name(step)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(directory, writing=final)
        sidecar(final).unlink(missing_ok=True)  # a record of an earlier file of this name must not outlive it
        write_atomic(final, payload)
        write_atomic(sidecar(final), f"{hashlib.sha256(payload).hexdigest()}  {final.name}\n".encode())
    except OSError as e:
        raise CheckpointWriteError(e.errno, f"checkpoint {final}: write failed ({e.strerror or e}); "
                                   "the previous checkpoints are intact") from None
    for old in list_checkpoints(directory)[:-keep]:
        if old.name not in protect:
            old.unlink(missing_ok=True)
            sidecar(old).unlink(missing_ok=True)
            _remove_rng_dir(old)
    return final


def rng_dir(checkpoint: Path) -> Path:
    """The folder of per-rank RNG states beside checkpoint `ckpt-N.pt`: `ckpt-N.pt.rng/`."""
    return checkpoint.with_name(checkpoint.name + ".rng")


def rank_rng_file(checkpoint: Path, rank: int) -> Path:
    return rng_dir(checkpoint) / f"rank-{rank:05d}.pt"


def save_rank_rng(directory: Path, step: int, rank: int) -> str | None:
    """This rank's RNG state beside checkpoint `step` (written before the checkpoint itself); None when written,
    else the one-line reason (the trainer agrees on failures, so every rank ends together)."""
    path = rank_rng_file(directory / checkpoint_name(step), rank)
    buf = io.BytesIO()
    torch.save(rng_state(), buf)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buf.getvalue())
    except OSError as e:
        return f"checkpoint RNG state {path}: write failed ({e.strerror or e}); the previous checkpoints are intact"
    return None


def load_rank_rng(checkpoint: Path, rank: int) -> dict | None:
    """This rank's RNG state saved beside `checkpoint`, or None when there is none (a copied checkpoint, best.pt)
    or it does not load; weights_only, like every checkpoint."""
    path = rank_rng_file(Path(checkpoint), rank)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing or unreadable: the caller reseeds and says so
        return None


def _remove_rng_dir(checkpoint: Path) -> None:
    folder = rng_dir(checkpoint)
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass


def write_atomic(final: Path, data: bytes) -> None:
    """Write data to a temporary name beside `final`, fsync, rename, fsync the folder. On any failure (a full
    disk, EIO, a kill) the partial file is removed, so failed attempts do not pile up and fill the quota."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


BEST_NAME = "best.pt"


def keep_best(checkpoint: Path) -> Path:
    """Copy a just-written checkpoint to best.pt beside it (atomically, with its sidecar). Its name does not
    match ckpt-N.pt, so rotation never removes it; a resume still continues from the newest ckpt-N.pt."""
    data = checkpoint.read_bytes()
    best = checkpoint.with_name(BEST_NAME)
    sidecar(best).unlink(missing_ok=True)
    write_atomic(best, data)
    write_atomic(sidecar(best), f"{hashlib.sha256(data).hexdigest()}  {best.name}\n".encode())
    return best


def remove_stale_temporaries(directory: Path, writing: Path | None = None) -> None:
    """Partial files of earlier failed or killed writes (each had its own pid in the name). One writer per run
    directory (rank 0 of the one job holding it), so any temporary found here is stale; so is an RNG folder
    whose checkpoint does not exist, except that of the checkpoint being written (`writing`)."""
    for p in [*directory.glob(".ckpt-*.pt.tmp-*"), *directory.glob(".ckpt-*.pt.sha256.tmp-*"),
              *directory.glob(".best.pt*.tmp-*")]:
        p.unlink(missing_ok=True)
    for folder in directory.glob("ckpt-*.pt.rng"):
        owner = folder.with_name(folder.name[:-len(".rng")])
        if not owner.exists() and (writing is None or owner != writing):
            _remove_rng_dir(owner)
    for record in directory.glob("*.pt.sha256"):  # a record whose checkpoint was rotated away by a killed job
        if not record.with_name(record.name[:-len(".sha256")]).exists():
            record.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints (temporary files excluded), oldest first."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if NAME.match(p.name)), key=lambda p: p.name)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict:
    """Verify the checksum, then load. UserError names the file and what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"checkpoint {path}: cannot read ({e.strerror})") from None
    if data.startswith(b'{"magic"'):  # the earlier format: a JSON header line, then the payload
        return _load_weights_only(path, _legacy_payload(path, data), map_location)
    record = sidecar(Path(path))
    if record.is_file():
        want = record.read_text(errors="replace").split()[:1]
        if [hashlib.sha256(data).hexdigest()] != want:
            raise UserError(f"checkpoint {path}: checksum mismatch against {record.name} ({len(data)} bytes): "
                            "the file is truncated or corrupted")
    if not data.startswith(b"PK"):
        raise UserError(f"checkpoint {path}: not an hpcgan checkpoint (expected a torch.save zip file)")
    return _load_weights_only(path, data, map_location)


def _legacy_payload(path: Path, data: bytes) -> bytes:
    header_line, _, payload = data.partition(b"\n")
    try:
        header = json.loads(header_line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"checkpoint {path}: not an hpcgan checkpoint (bad header)") from None
    if not isinstance(header, dict) or header.get("magic") != LEGACY_MAGIC:
        raise UserError(f"checkpoint {path}: not an hpcgan checkpoint (expected magic {LEGACY_MAGIC})")
    if len(payload) != header.get("bytes") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise UserError(f"checkpoint {path}: checksum mismatch ({len(payload)} of {header.get('bytes')} bytes): "
                        "the file is truncated or corrupted")
    return payload


# What checkpoints written before RNG states became tensors hold beyond plain types: numpy's RNG state
# (a uint32 array). Allowed by name only; anything else (a callable, a class) is refused.
_LEGACY_NUMPY_GLOBALS = {"numpy.dtype", "numpy.ndarray", "numpy._core.multiarray._reconstruct",
                         "numpy.core.multiarray._reconstruct", "numpy.dtypes.UInt32DType"}


def _load_weights_only(path: Path, payload: bytes, map_location: Any) -> dict:
    """torch.load(weights_only=True); a payload that needs any other global is refused with one line."""
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as first:  # noqa: BLE001 - the unpickler's refusal is an UnpicklingError or RuntimeError
        try:
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(payload)))
        except Exception:  # noqa: BLE001
            unsafe = None
        if unsafe and unsafe <= _LEGACY_NUMPY_GLOBALS:
            import numpy as np

            allowed = [np.dtype, np.ndarray, np.dtypes.UInt32DType]
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy 1.x
                from numpy.core.multiarray import _reconstruct
            allowed.append(_reconstruct)
            with torch.serialization.safe_globals(allowed):
                return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
        what = f"it needs {', '.join(sorted(unsafe - _LEGACY_NUMPY_GLOBALS))}" if unsafe else str(first).splitlines()[0]
        raise UserError(f"checkpoint {path}: refused, the payload is not plain tensors and containers ({what}); "
                        "hpcgan never unpickles code from a checkpoint") from None


def find_resume_checkpoint(directory: Path, log=print) -> Path | None:
    """Newest checkpoint that verifies; a corrupted newer one is reported and skipped, never deleted."""
    for path in reversed(list_checkpoints(directory)):
        try:
            load_checkpoint(path)
            return path
        except UserError as e:
            log(f"warning: skipping {e}")
    return None


def resolve_checkpoint(path_or_run: str, which: str = "best") -> Path:
    """A checkpoint file, or a run directory: its best.pt (the best validation value, when the run kept one)
    for which="best", else (or for "last") its newest valid checkpoint."""
    if which not in ("best", "last"):
        raise UserError(f"--checkpoint {which!r}: expected best or last")
    p = Path(path_or_run)
    if p.is_dir():
        directory = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        if which == "best" and (directory / BEST_NAME).is_file():
            load_checkpoint(directory / BEST_NAME)  # verified: a damaged best.pt is an error, not a fallback
            return directory / BEST_NAME
        found = find_resume_checkpoint(directory)
        if found is None:
            raise UserError(f"{p}: no valid checkpoint found (expected checkpoints/ckpt-*.pt)")
        return found
    if not p.is_file():
        raise UserError(f"checkpoint {p}: not found")
    return p


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile's wrapper (so state dict keys stay stable)."""
    return getattr(module, "_orig_mod", module)


def rng_state() -> dict:
    """This process's RNG states as plain types (a weights_only load opens them): torch's as uint8 tensors,
    Python's as its tuple of ints, numpy's MT19937 state as a dict with its keys as an int64 tensor."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():  # this rank's own GPU only: the next job may see another number of them
        state["cuda_device"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    if isinstance(n, dict):
        n = (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)  # older checkpoints: numpy's own tuple
    if torch.cuda.is_available():
        device = torch.cuda.current_device()
        if "cuda_device" in state:
            torch.cuda.set_rng_state(state["cuda_device"], device)
        elif state.get("cuda"):  # older checkpoints: every visible GPU's; fewer GPUs now is no IndexError
            cuda = state["cuda"]
            torch.cuda.set_rng_state(cuda[device] if device < len(cuda) else cuda[0], device)


def _as_tuples(x):
    """random.setstate wants tuples; a round trip through some serialisers gives lists."""
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def generator_state(state: dict, weights: str = "ema") -> tuple[dict, str]:
    """The generator's state dict to use from a checkpoint: its EMA copy ("G_ema", trained with
    train.ema_halflife_samples) by default, else the raw weights ("G"); returns (state dict, which)."""
    if weights not in ("ema", "raw"):
        raise UserError(f"--weights {weights!r}: expected ema or raw")
    if weights == "ema" and state.get("G_ema") is not None:
        return state["G_ema"], "ema"
    return state["G"], "raw"
