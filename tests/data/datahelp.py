"""Helpers for the data-layer tests (imported as `datahelp`; unique name, no package): tiny datasets whose values encode the sample index, and launchers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcgan.data.format import DatasetWriter

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
IN_SHAPE, OUT_SHAPE = (3, 2, 2), (2, 2, 2)


def write_indexed(path, n: int, first: int = 0, dtype: str = "float32", block: int = 16) -> Path:
    """Dataset where inputs[i, c] = first + i + 1000 c and targets[i] = -(first + i): a read reveals its index."""
    with DatasetWriter(path, "test", n, IN_SHAPE, OUT_SHAPE, ["a", "b", "c"], ["x", "y"],
                       meta_spec={"index": ((), "int64")}, provenance={"test": True}, dtype=dtype) as w:
        for a in range(0, n, block):
            idx = np.arange(first + a, first + min(n, a + block))
            x = idx[:, None, None, None] + 1000.0 * np.arange(3)[None, :, None, None] + np.zeros((1, *IN_SHAPE))
            y = -idx[:, None, None, None] + np.zeros((1, *OUT_SHAPE))
            w.write(x.astype(np.float32), y.astype(np.float32), {"index": idx})
    return Path(path)


def env() -> dict:
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
             PATH=f"{VENV_BIN}:{e.get('PATH', '')}", PYTHONUNBUFFERED="1")
    e.pop("HDF5_USE_FILE_LOCKING", None)
    # an enclosing launcher's rank variables (pytest under srun/mpirun) would confuse the ranks we start
    for k in list(e):
        if k.startswith(("OMPI_COMM_WORLD_", "OMPI_MCA_ess_", "OMPI_MCA_orte_", "PMI_", "PMIX_", "SLURM_", "HOROVOD_")):
            del e[k]
    return e


def run(cmd: list[str], np_ranks: int = 0, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run a command (under `mpirun -np N` when np_ranks > 0); a timeout fails the test with the output so far."""
    if np_ranks:
        cmd = ["mpirun", "-np", str(np_ranks), "--oversubscribe", "--bind-to", "none"] + cmd
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every rank
        out, err = proc.communicate()
        pytest.fail(f"timed out (hang?) after {timeout}s: {' '.join(cmd)}\nstdout:\n{out}\nstderr:\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def hpcgan(*args: str, np_ranks: int = 0, timeout: int = 240) -> subprocess.CompletedProcess:
    return run([str(VENV_BIN / "hpcgan"), *args], np_ranks=np_ranks, timeout=timeout)


def show(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
