"""One job per run directory, taken by `hpcgan train` itself (rank 0, before anything is written).

An exclusive flock on RUN_DIR/run.lock, held for the life of the process: the kernel releases it when the
holder exits or dies (a kill -9, a crashed node's lease on a cluster file system), so a stale lock cannot
exist and no `squeue` guess is needed. Covers every launcher: mpirun, srun, SLURM job scripts and sweeps.
The holder's host, pid and SLURM job id are written into the file so the second job can name it.
Cluster file systems: Lustre needs its `flock` mount option (the usual setting), NFSv4 maps flock to
byte-range locks; where flock is not supported the error says so instead of running unprotected.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from hpcgan.errors import UserError

LOCK_NAME = "run.lock"
_held: dict[str, int] = {}  # run directory -> open descriptor (closing it would release the lock)


def take_run_lock(run_dir: str | Path) -> Path:
    """Take RUN_DIR's lock for this process, or raise UserError naming the job that holds it."""
    run_dir = Path(run_dir)
    key = str(run_dir.resolve())
    if key in _held:
        return run_dir / LOCK_NAME
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise UserError(f"run directory {run_dir}: in use by {describe_holder(path)} "
                            f"(lock {path}); give this job another run_dir, or wait for that one") from None
        raise UserError(f"run directory {run_dir}: cannot lock {path} ({e.strerror}); the file system must "
                        "support flock (Lustre: mount option flock) so two jobs cannot share one run") from None
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
              "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    _held[key] = fd
    return path


def describe_holder(path: Path) -> str:
    try:
        h = json.loads(Path(path).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "another process"
    job = f", SLURM job {h['slurm_job_id']}" if h.get("slurm_job_id") else ""
    return f"pid {h.get('pid')} on {h.get('host')}{job} since {h.get('since')}"


def release_run_lock(run_dir: str | Path) -> None:
    fd = _held.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        os.close(fd)
