"""Shared benchmark harness: Horovod's synthetic-benchmark protocol, JSON results, mpirun launching.

Protocol (horovod/examples/pytorch/pytorch_synthetic_benchmark.py): run some
warm-up batches untimed, then `iters` timed iterations of `batches_per_iter`
batches each; one rate per iteration. Horovod prints mean +- 1.96 std; we keep
that and add the median and the spread (min, max, quartiles), because a shared
2-core machine has outliers that move a mean.

Every JSON result carries the machine, date, command, library versions and the
load average at start and end (the development machine is shared: a rate
measured under load says so).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "results"


# --- statistics -----------------------------------------------------------------

@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (times or rates)."""

    median: float
    mean: float
    std: float
    ci95: float  # 1.96 * std, Horovod's "+-" figure
    min: float
    max: float
    q25: float
    q75: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stats":
        v = sorted(float(x) for x in values)
        if not v:
            raise ValueError("Stats.of: no values")
        std = statistics.stdev(v) if len(v) > 1 else 0.0
        return cls(median=statistics.median(v), mean=statistics.fmean(v), std=std, ci95=1.96 * std,
                   min=v[0], max=v[-1], q25=_quantile(v, 0.25), q75=_quantile(v, 0.75), n=len(v))

    def to_dict(self) -> dict:
        return asdict(self)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method)."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def time_batches(fn: Callable[[], Any], warmup: int, iters: int, batches_per_iter: int = 1,
                 sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds per batch for each timed iteration (warm-up batches untimed).

    `sync` runs before each clock read (torch.cuda.synchronize on GPU), so queued
    device work is charged to the iteration that queued it.
    """
    if warmup < 0 or iters < 1 or batches_per_iter < 1:
        raise ValueError(f"time_batches: need warmup >= 0, iters >= 1, batches_per_iter >= 1, "
                         f"got {warmup}, {iters}, {batches_per_iter}")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        for _ in range(batches_per_iter):
            fn()
        sync()
        out.append((time.perf_counter() - t0) / batches_per_iter)
    return out


def rate_stats(seconds_per_batch: Sequence[float], items_per_batch: float) -> Stats:
    """Items per second for each iteration, summarised."""
    return Stats.of([items_per_batch / s for s in seconds_per_batch])


# --- environment and JSON -------------------------------------------------------

def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "?"))
    except Exception as e:  # an absent optional library is a fact to record, not an error
        return f"not available ({type(e).__name__})"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def ncores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load() -> dict:
    """Load averages and `uptime`'s line: how busy the shared machine was."""
    la = os.getloadavg()
    try:
        up = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        up = ""
    return {"loadavg_1_5_15": [round(x, 2) for x in la], "uptime": up}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict:
    """Machine, versions, date and command for a result file. Never initialises MPI or CUDA contexts."""
    env = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": ncores(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "horovod": _version("horovod"),
        "mpi4py": _version("mpi4py"),
        "numpy": _version("numpy"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "git": git_commit(),
        "load_start": load(),
    }
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
    except Exception:
        pass
    return env


def write_result(path: str | os.PathLike, kind: str, params: dict, results: Any, env: dict | None = None) -> Path:
    """Write one benchmark's JSON (atomically: temp name then rename) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"kind": kind, "env": dict(env or environment()), "params": params, "results": results}
    doc["env"]["load_end"] = load()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(x: Any) -> Any:
    if isinstance(x, Stats):
        return x.to_dict()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def read_result(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Load a result file; `kind` checks it is the benchmark expected (clear error otherwise)."""
    from hpcgan.errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"result file {p}: not found (run the benchmark first, e.g. `hpcgan bench {kind or '...'}`)")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"result file {p}: not valid JSON ({e})") from None
    if kind is not None and doc.get("kind") != kind:
        raise UserError(f"result file {p}: holds a {doc.get('kind')!r} result, expected {kind!r}")
    return doc


# --- launching ranks ------------------------------------------------------------

def oversubscribed(np_: int) -> bool:
    """More ranks than cores on this machine: timings then measure time-sharing, and are marked so."""
    return np_ > ncores()


def mpirun_command(np_: int, module: str, args: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """`mpirun -np N ... python -m benchmarks.<module> args` with env passed to every rank.

    --bind-to none: a rank's torch threads may use any core (Open MPI binds to a
    core by default for np <= 2, which would starve a 2-thread rank).
    """
    cmd = ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none"]
    for k in sorted(env or {}):
        cmd += ["-x", f"{k}={env[k]}"]
    return cmd + [sys.executable, "-m", f"benchmarks.{module}", *args]


def srun_command(np_: int, module: str, args: Sequence[str]) -> list[str]:
    """`srun` a step of N tasks inside the job's allocation (a SLURM job script; Cray machines have no mpirun).

    N tasks over at most N of the job's nodes; `--mpi` from HPCGAN_SRUN_MPI (the job profile's, jobs/env.sh);
    `--cpus-per-task` from the job, which srun no longer inherits since Slurm 22.05. The tasks get this
    process's environment (srun's default --export=ALL).
    """
    nodes = min(np_, int(os.environ.get("SLURM_JOB_NUM_NODES") or 1))
    cmd = ["srun", f"--ntasks={np_}", f"--nodes={nodes}", "--kill-on-bad-exit=1"]
    if os.environ.get("HPCGAN_SRUN_MPI"):
        cmd.append(f"--mpi={os.environ['HPCGAN_SRUN_MPI']}")
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        cmd.append(f"--cpus-per-task={os.environ['SLURM_CPUS_PER_TASK']}")
    return cmd + [sys.executable, "-m", f"benchmarks.{module}", *args]


LAUNCHERS = ("mpirun", "srun")


def run_ranks(np_: int, module: str, args: Sequence[str], env: dict[str, str] | None = None,
              timeout: float = 600, launcher: str = "mpirun") -> str:
    """Launch `np_` ranks of a benchmark worker with `launcher` (mpirun, or srun inside a SLURM job), wait,
    return their output; raise with it on failure."""
    cmd = mpirun_command(np_, module, args, env) if launcher == "mpirun" else srun_command(np_, module, args)
    full_env = dict(os.environ)
    full_env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                     "OMPI_MCA_rmaps_base_oversubscribe": "1", "HDF5_USE_FILE_LOCKING": "FALSE"})
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise RuntimeError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}\n{out}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def log(msg: str) -> None:
    print(msg, flush=True)


# --- workloads -------------------------------------------------------------------

def workload_config(name: str, overrides: Sequence[str] = ()):
    """Config for a benchmark workload: a preset of that name when one exists, else `workload=<name>`."""
    from hpcgan.config import load_config, preset_names

    if name in preset_names():
        return load_config(name, list(overrides))
    return load_config(None, [f"workload={name}", *overrides])


def parameter_shapes(cfg) -> dict[str, list[tuple[int, ...]]]:
    """Shapes of G's and D's parameters, in registration order (= gradient order of sync_gradients)."""
    import torch

    from hpcgan.workloads import get_workload

    workload = get_workload(cfg)
    with torch.device("meta"):  # shapes only: no memory, no init cost for the 256x256 U-Net
        G = workload.build_generator()
        D = workload.build_discriminator()
    return {"G": [tuple(p.shape) for p in G.parameters()], "D": [tuple(p.shape) for p in D.parameters()]}


def numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
