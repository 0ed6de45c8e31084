"""Shared test helpers: launch real multi-rank jobs and fail with every rank's output.

The fixture `run_mpi` gives `run_mpi(np, args, timeout, launcher="mpirun")`, which starts `mpirun -np N --oversubscribe`
(or `horovodrun -np N --gloo`) with this venv's Python and returns the finished
process with `.output` (all ranks, stdout and stderr merged, rank-tagged). A job
that outlives its timeout is killed as a whole process group and the test fails
with what the ranks printed so far, so a hang costs seconds, not CI's 90 minutes.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent
# The installed console script when there is one (what users run), else the same entry point via -m.
HPCGAN = [str(BIN / "hpcgan")] if (BIN / "hpcgan").exists() else [PYTHON, "-m", "hpcgan.cli.main"]
HOROVODRUN = str(BIN / "horovodrun") if (BIN / "horovodrun").exists() else shutil.which("horovodrun")
MPIRUN = shutil.which("mpirun")

# Launcher variables of an enclosing job (pytest under srun/mpirun) would make the ranks we start
# believe they are someone else's ranks.
_LAUNCHER_PREFIXES = ("OMPI_COMM_WORLD_", "OMPI_MCA_orte_", "OMPI_MCA_ess_", "PMI_", "PMIX_", "SLURM_", "HOROVOD_")
_LAUNCHER_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "MPI_LOCALRANKID", "MPI_LOCALNRANKS")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without any launcher's rank variables, plus what a test job needs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_LAUNCHER_PREFIXES) and k not in _LAUNCHER_NAMES}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               HDF5_USE_FILE_LOCKING="FALSE", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    # Ranks waiting in MPI busy-poll a core by default; on a shared 2-core machine that starves the rank
    # they wait for (about a quarter of the mpirun tests' time).
    env.setdefault("OMPI_MCA_mpi_yield_when_idle", "1")
    env.update(extra or {})
    return env


_TAG = re.compile(r"(\[\d+(?:,\d+)?\]<(?:stdout|stderr)>:)")


@dataclass
class Job:
    command: list[str]
    returncode: int
    output: str  # stdout and stderr (merged in order unless split)
    elapsed: float
    stdout: str = ""  # only with split=True
    stderr: str = ""  # only with split=True
    ended: float = field(default_factory=time.time)  # wall clock when the job was seen to end

    @property
    def text(self) -> str:
        """The output without launcher tags, each rank's stream put back together.

        mpirun ([1,0]<stderr>:) and horovodrun ([0]<stdout>:) tag every write, not every
        line, and unbuffered Python writes a print's text and its newline separately, so
        two ranks' lines interleave mid-line ("rank 0 ...[1,1]<stdout>:rank 1 ...").
        Concatenating the chunks of each (rank, stream) in order undoes that; untagged
        launcher messages come first, then the ranks' streams.
        """
        parts = _TAG.split(self.output)
        streams: dict[str, list[str]] = {"": [parts[0]]}
        for tag, chunk in zip(parts[1::2], parts[2::2]):
            streams.setdefault(tag, []).append(chunk)
        return "\n".join("".join(chunks) for chunks in streams.values())

    def describe(self) -> str:
        return (f"$ {' '.join(self.command)}\nexit code {self.returncode} after {self.elapsed:.1f} s; "
                f"output of all ranks:\n{self.output}")


def launch(command: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
           cwd: str | os.PathLike = REPO, split: bool = False) -> Job:
    """Run a command in its own process group; on timeout kill the group and fail the test with its output.

    split: keep stdout and stderr apart (Job.stdout, Job.stderr) instead of merged in order.
    """
    command = [str(c) for c in command]
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE if split else subprocess.STDOUT,
                            text=True, cwd=cwd, env=clean_env(env), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        job = Job(command, proc.returncode, out + (err or ""), time.monotonic() - start)
        pytest.fail(f"timed out after {timeout:.0f} s (killed the job)\n{job.describe()}", pytrace=False)
    if split:
        return Job(command, proc.returncode, out + err, time.monotonic() - start, stdout=out, stderr=err)
    return Job(command, proc.returncode, out, time.monotonic() - start)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL to the job's process group (mpirun, its ranks, horovodrun's children)."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def require_launcher(launcher: str) -> None:
    if launcher == "mpirun" and MPIRUN is None:
        pytest.fail("mpirun not found on PATH: run the tests through 'make test' (it builds the environment)",
                    pytrace=False)
    if launcher == "horovodrun" and HOROVODRUN is None:
        pytest.fail("horovodrun not found on PATH: run the tests through 'make test' (it builds the environment)",
                    pytrace=False)


def mpi_command(np: int, args: Sequence[str], launcher: str = "mpirun", timeout: float = 120) -> list[str]:
    """The launcher command line for np ranks of args (args[0] is a program; .py files run with this Python)."""
    args = [str(a) for a in args]
    if args and args[0].endswith(".py"):
        args = [PYTHON] + args
    if launcher == "mpirun":
        # --timeout: mpirun's own watchdog, a few seconds inside ours, so it can report which ranks hang.
        # --bind-to none: with its default binding every concurrent job pins its rank 0 to core 0.
        return [MPIRUN, "-np", str(np), "--oversubscribe", "--bind-to", "none", "--tag-output",
                "--timeout", str(int(timeout)), *args]
    if launcher == "horovodrun":
        return [HOROVODRUN, "-np", str(np), "--gloo", "--start-timeout", str(int(min(timeout, 60))), *args]
    raise ValueError(f"launcher {launcher!r}: expected mpirun or horovodrun")


def run_mpi(np: int, args: Sequence[str], timeout: float = 120, launcher: str = "mpirun",
            env: Mapping[str, str] | None = None, check: bool = True, split: bool = False) -> Job:
    """Launch np ranks and wait; with check, fail with all ranks' output unless the job exits 0."""
    require_launcher(launcher)
    job = launch(mpi_command(np, args, launcher, timeout), timeout + 15, env, split=split)
    if check and job.returncode != 0:
        pytest.fail(f"job failed\n{job.describe()}", pytrace=False)
    return job


def run_single(args: Sequence[str], timeout: float = 120, env: Mapping[str, str] | None = None,
               split: bool = True) -> Job:
    """One process, no launcher (what a laptop user runs); stdout and stderr kept apart by default."""
    args = [str(a) for a in args]
    if args and args[0].endswith(".py"):
        args = [PYTHON] + args
    return launch(args, timeout, env, split=split)


@pytest.fixture(name="run_mpi")
def run_mpi_fixture():
    """run_mpi(np, args, timeout=120, launcher="mpirun"|"horovodrun", env=None, check=True, split=False) -> Job."""
    return run_mpi


@pytest.fixture(name="run_single")
def run_single_fixture():
    """run_single(args, timeout=120, env=None, split=True) -> Job: one process, no launcher."""
    return run_single


@pytest.fixture(name="hpcgan")
def hpcgan_fixture():
    """The `hpcgan` command as an argument list: run_single(hpcgan + ["info"]), run_mpi(2, hpcgan + [...])."""
    return list(HPCGAN)
