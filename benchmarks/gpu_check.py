"""One prepared check of the GPU path, written as it goes: every precision trains to finite weights, and how fast.

For a single-GPU machine with a stock torch, h5py and mpi4py (no Horovod, no network), seen for a few minutes
at a time: everything runs inside --budget-s (default 420 s, one 10-minute command with room to spare), in
sections ordered cheap and essential first, each in its own try and recorded with its status, wall time and
error (an error is reported apart from finiteness: a crashed variant is not a "losses non-finite"):
  probe        GPU, torch, CUDA, packages; a C compiler and Python's headers (torch.compile needs both)
  peak         a bf16 matmul peak and the device memory bandwidth (a large copy), measured in the same run
  train_lhc    LHC trains --steps steps in fp32, bf16 and fp16 (with the gradient scaler) on data of the
               workload's synthetic generator; the last losses and all weights must be finite; samples/s
  lhc_eager    LHC generation, G alone on the device, tracks/s at batch 512..65536, bf16 and fp32
  lhc_graph    the same replayed from a CUDA graph (the generator is tiny: eager it is launch-bound); on CPU
               timed eagerly with the reason recorded. Every generation row gives its fraction of the bf16
               peak (FLOPs counted by torch.utils.flop_counter) and of the bandwidth (bytes every op reads
               and writes, counted on one forward) and which bound the numbers point to
  torch_job    a 1-rank `hpcgan train --backend torch` job (NCCL on a GPU, gloo on CPU), in a subprocess
  crf_flops    model FLOPs of one reference-style CRF step
  train_crf    CRF at the preset's 256x256: reference-style (fp32, eager, NCHW, batch 6, as krisrs1128/
               clouds_dist), fp32, bf16, fp16 and bf16 NCHW; bf16 rows' fraction of the bf16 peak
  compile      torch.compile rows, each in a subprocess with a time limit: LHC generation (reduce-overhead),
               CRF bf16 training; skipped with the reason when no C compiler or Python headers are there
The JSON (benchmarks/common.py format, results.complete false until the end) and a Markdown table beside it
are rewritten after every row and section, so a kill at the time limit leaves everything measured so far;
SIGTERM records the interruption first. A section that does not fit the budget left is skipped with the reason.
Subprocesses get at most SUBPROCESS_TIMEOUT_S each. Exit 1 when a check failed (non-finite, an error, the torch
job); skips are not failures. `--devices cpu --tiny` is the smoke test (tests/bench/test_gpu_check.py).

    benchmarks/gpu_check.sh [--out results/gpu_check.json] [--budget-s 420]     (or: hpcgan bench gpu)
    benchmarks/gpu_suite.sh OUT_DIR      (the whole GPU visit: this check, then the paper-size CRF run)
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from unittest import mock

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks.common import DEFAULT_RESULTS, REPO, environment, log, rate_stats, time_batches, write_result
from benchmarks.throughput import REFERENCE_BATCH, build, count_flops, matmul_peak

# Targets from issue 12, for an H100-class GPU (reported, never asserted).
TARGETS = {"lhc_tracks_per_s": 1e7, "crf_speedup_vs_reference": 3.0, "crf_bf16_peak_fraction": 0.40}
GEN_BATCHES = (512, 2048, 8192, 32768, 65536)
TINY_GEN_BATCHES = (256, 512)
# --tiny: sizes a 2-core CPU runs in seconds (the smoke test); the real check uses the presets.
TINY = {"crf": ["crf.size=16", "crf.widths=[8,16]", "crf.d_widths=[8,16]", "crf.d_scales=1"],
        "lhc": ["lhc.hidden=32", "lhc.blocks=1", "lhc.d_hidden=32", "lhc.d_blocks=1"]}
NEEDED = ("torch", "numpy", "h5py", "yaml", "tqdm", "matplotlib")
# Reported by the probe: module -> distribution (for its version). Absent ones are facts, not errors.
PACKAGES = {"numpy": "numpy", "h5py": "h5py", "yaml": "PyYAML", "tqdm": "tqdm", "matplotlib": "matplotlib",
            "mpi4py": "mpi4py", "scipy": "scipy", "skimage": "scikit-image", "tensorboard": "tensorboard",
            "triton": "triton", "horovod": "horovod", "astropy": "astropy", "galsim": "GalSim", "optuna": "optuna"}
DEFAULT_BUDGET_S = 420.0
SUBPROCESS_TIMEOUT_S = 120.0  # per subprocess (torch job commands, each compile row)
PRECISIONS = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BOUND_FRACTION = 0.5  # a row is compute- or memory-bound when it reaches this fraction of that measured peak
LAUNCH_US = 20.0  # below half of both peaks and ops this short: launch/latency-bound (eager launches take ~5-10 us)


class Interrupted(BaseException):
    """SIGTERM (the time limit's kill) or SIGINT: record the interruption, write the report, exit."""


# --- the report: rewritten after every row and section --------------------------------------------------------

class Report:
    """results + params, written as JSON and Markdown (each atomically) whenever `save` is called."""

    def __init__(self, out: Path, params: dict, env: dict):
        self.out, self.params, self.env = out, params, env
        self.results: dict = {"complete": False, "sections": {}, "rows": [], "lhc_generation": [], "checks": {}}

    def save(self) -> None:
        self.results["checks"] = checks(self.results)
        write_result(self.out, "gpu_check", self.params, self.results, env=self.env)
        md = self.out.with_suffix(".md")
        tmp = md.with_name(md.name + ".tmp")
        tmp.write_text(markdown(self.results, self.env, self.params) + "\n")
        os.replace(tmp, md)


@dataclass
class Check:
    """What every section needs: the device, sizes, the budget and the report."""

    backend: object
    device: torch.device
    tiny: bool
    steps: int
    crf_steps: int
    report: Report
    deadline: float
    budget_s: float
    workdir: Path
    compile_backend: str = "inductor"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def results(self) -> dict:
        return self.report.results

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> Callable[[], None] | None:
        return (lambda: torch.cuda.synchronize(self.device)) if self.cuda else None

    def extra(self, workload: str) -> list[str]:
        return TINY[workload] if self.tiny else []

    def add_row(self, key: str, row: dict) -> None:
        self.results.setdefault(key, []).append(row)
        self.report.save()

    def budget_reason(self, need_s: float) -> str | None:
        left = self.left()
        if left >= need_s:
            return None
        return f"budget: {max(left, 0):.0f} s left of --budget-s {self.budget_s:.0f}, needs about {need_s:.0f} s"


# --- probe -------------------------------------------------------------------------------------------------------

def probe() -> dict:
    """GPU, torch, CUDA, packages and compilers: what this machine has, before anything runs on it."""
    info: dict = {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
                  "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
                  "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    bf16_supported=torch.cuda.is_bf16_supported(), gpus=torch.cuda.device_count())
    info["packages"] = {m: _package_version(m, dist) for m, dist in PACKAGES.items()}
    info["compiler"] = compiler_probe()
    return info


def _package_version(module: str, dist: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _find_compiler(env: dict, var: str, names: Sequence[str]) -> str | None:
    """$var when set (what triton and inductor use then, found or not), else the first of names on PATH."""
    if env.get(var):
        return shutil.which(env[var], path=env.get("PATH"))
    return next((p for p in (shutil.which(n, path=env.get("PATH")) for n in names) if p), None)


def compiler_probe(env: dict | None = None, timeout: float = 30.0) -> dict:
    """Can torch.compile build here? Triton's launcher stubs need a C compiler ($CC, else cc, gcc, clang) and
    inductor's CPU code a C++ one ($CXX, else c++, g++, clang++); both build against Python.h. Each found
    compiler builds a file including Python.h, so a missing header reads as such and not as a crash later."""
    env = dict(os.environ if env is None else env)
    include = sysconfig.get_paths()["include"]
    headers = (Path(include) / "Python.h").is_file()
    out: dict = {"python_include": include, "python_headers": headers}
    for kind, var, names, suffix in (("c", "CC", ("cc", "gcc", "clang"), ".c"),
                                     ("cxx", "CXX", ("c++", "g++", "clang++"), ".cpp")):
        exe = _find_compiler(env, var, names)
        out[kind] = exe
        out[f"{kind}_builds"] = False
        if exe and headers:
            out[f"{kind}_builds"], err = _try_build(exe, include, suffix, timeout)
            if err:
                out[f"{kind}_error"] = err
    return out


def _try_build(exe: str, include: str, suffix: str, timeout: float) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="hpcgan-cc-") as tmp:
        src = Path(tmp) / f"probe{suffix}"
        src.write_text("#include <Python.h>\nint probe(void) { return PY_MAJOR_VERSION; }\n")
        try:
            proc = subprocess.run([exe, "-c", str(src), "-I", include, "-o", str(src.with_suffix(".o"))],
                                  capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, f"{type(e).__name__}: {e}"
        return proc.returncode == 0, "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-500:]


def compile_skip_reason(compiler: dict, device_type: str, compile_backend: str = "inductor") -> str | None:
    """Why the compile rows cannot run here, or None. `compile_backend` other than inductor generates no code."""
    if compile_backend != "inductor":
        return None
    kind, what, var, names = (("c", "C", "CC", "cc, gcc, clang") if device_type == "cuda"
                              else ("cxx", "C++", "CXX", "c++, g++, clang++"))
    if not compiler.get(kind):
        return f"no {what} compiler (${var} unset or not found, none of {names} on PATH)"
    if not compiler.get("python_headers"):
        return f"no Python headers (Python.h not in {compiler.get('python_include')})"
    if not compiler.get(f"{kind}_builds"):
        return f"the {what} compiler {compiler[kind]} cannot build against Python.h: {compiler.get(kind + '_error', '')}"
    return None


def probe_lines(info: dict) -> list[str]:
    """What the probe found, in a few lines (the suite prints them first)."""
    c = info["compiler"]
    gpu = (f"{info['gpu']} (sm {info['capability']}, {info['gpu_memory_gib']} GiB, bf16 "
           f"{'yes' if info['bf16_supported'] else 'no'})" if info["cuda_available"] else "none (torch sees no GPU)")
    have = [f"{m} {v}" for m, v in info["packages"].items() if v]
    missing = [m for m, v in info["packages"].items() if not v]
    return [f"GPU: {gpu}",
            f"torch {info['torch']} (CUDA {info['cuda']}), Python {info['python']} at {info['executable']}, "
            f"{info['cores']} cores",
            f"compiler: C {c['c'] or 'none'} ({'builds' if c['c_builds'] else 'does not build'} against Python.h), "
            f"C++ {c['cxx'] or 'none'} ({'builds' if c['cxx_builds'] else 'does not build'}), Python headers "
            f"{'yes' if c['python_headers'] else 'NO'}",
            f"packages: {', '.join(have)}", f"absent: {', '.join(missing) or 'none'}"]


# --- sections ----------------------------------------------------------------------------------------------------

def section_probe(ck: Check) -> None:
    ck.results["probe"] = probe()
    for line in probe_lines(ck.results["probe"]):
        log(f"  {line}")


def memory_bandwidth(device: torch.device, n_bytes: int | None = None, reps: int = 5) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted), best of reps."""
    n_bytes = n_bytes or (2**30 if device.type == "cuda" else 2**26)
    a = torch.ones(n_bytes // 4, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    times = time_batches(lambda: b.copy_(a), warmup=2, iters=reps, batches_per_iter=2, sync=sync)
    return 2.0 * n_bytes / min(times)


def section_peak(ck: Check) -> None:
    ck.results["peak_bf16_flops"] = matmul_peak(ck.device, torch.bfloat16, n=256 if ck.tiny else None)
    ck.results["mem_bandwidth_bytes_per_s"] = memory_bandwidth(ck.device, 2**24 if ck.tiny else None)
    log(f"  {ck.device}: bf16 matmul peak {ck.results['peak_bf16_flops'] / 1e12:.3f} TFLOP/s, "
        f"memory bandwidth {ck.results['mem_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s")


def variants(workload: str, batch: int) -> list[dict]:
    """What to train: every precision; CRF also the reference-style step and NCHW (compiled: the compile section)."""
    out = [dict(name=f"{amp}", amp=amp, channels_last=True, compile_=False, batch=batch)
           for amp in ("off", "bf16", "fp16")]
    if workload == "crf":
        out.insert(0, dict(name="reference-style", amp="off", channels_last=False, compile_=False,
                           batch=REFERENCE_BATCH["crf"]))
        out.append(dict(name="bf16-nchw", amp="bf16", channels_last=False, compile_=False, batch=batch))
    return out


def train_batch(workload: str, ck: Check) -> int:
    if ck.tiny:
        return 4 if workload == "crf" else 64
    return 512 if workload == "lhc" else 32


def sample_pool(workload: str, cfg, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n synthetic samples in file units (CRF inputs standardised per channel, as the reader does)."""
    if workload == "lhc":
        from hpcgan.workloads.lhc import synth as synth_lhc

        parts = list(synth_lhc.generate(0, n, seed, layers=cfg.lhc.n_layers))
    else:
        from hpcgan.workloads.crf import synth as synth_crf

        parts = list(synth_crf.generate(0, n, seed, size=(cfg.crf.size, cfg.crf.size)))
    x = np.concatenate([p[0] for p in parts]).astype(np.float32)
    y = np.concatenate([p[1] for p in parts]).astype(np.float32)
    if workload == "crf":
        x = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / (x.std(axis=(0, 2, 3), keepdims=True) + 1e-6)
    return torch.from_numpy(x), torch.from_numpy(y)


def all_finite(tr, stats: dict) -> bool:
    tensors = list(stats.values()) + [p for m in (tr.G, tr.D) for p in m.parameters()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def train_variant(workload: str, v: dict, backend, pool, steps: int, extra: Sequence[str]) -> dict:
    """Train `steps` steps (timed after a warm-up of a tenth), then check losses and weights are finite."""
    device = backend.device
    t0 = time.perf_counter()
    tr = build(workload, device.type, v["batch"], v["amp"], v["channels_last"], v["compile_"], backend, extra)
    x, y = pool
    n_batches = max(1, len(x) // v["batch"])
    batches = [tr.workload.prepare(x[i * v["batch"]:(i + 1) * v["batch"]], y[i * v["batch"]:(i + 1) * v["batch"]],
                                   device) for i in range(n_batches)]
    feed = itertools.cycle(batches)
    last: dict = {}

    def step():
        nonlocal last
        last = tr.step(*next(feed))

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    warmup = max(1, steps // 10)
    per_iter = max(1, (steps - warmup) // 10)
    train_s = time_batches(step, warmup, max(1, (steps - warmup) // per_iter), per_iter, sync)
    cond = batches[0][0]
    gen_s = time_batches(lambda: tr.generate(cond), 2, 5, 2, sync)
    finite = all_finite(tr, last)
    row = {"workload": workload, "variant": v["name"], "device": device.type, "precision": PRECISIONS[tr.dtype],
           "channels_last": tr.channels_last, "compile": bool(v["compile_"]) and tr.cfg.train.compile,
           "batch": v["batch"], "steps": warmup + len(train_s) * per_iter, "finite": finite,
           "last_losses": {k: float(t) for k, t in last.items()},
           "train_samples_per_s": rate_stats(train_s, v["batch"]).median,
           "generate_samples_per_s": rate_stats(gen_s, len(cond)).median,
           "loss_scale": tr.scaler.get_scale() if tr.scaler.is_enabled() else None,
           "wall_s": round(time.perf_counter() - t0, 1)}
    log(f"  {workload} {v['name']:<16} batch {v['batch']:>4}: {'finite' if finite else 'NON-FINITE'}, "
        f"train {row['train_samples_per_s']:.1f}/s, generate {row['generate_samples_per_s']:.1f}/s")
    return row


def train_rows(ck: Check, workload: str, pool, row_s: float) -> None:
    """Every variant of one workload, one row each (an error row when it fails; skipped when out of budget)."""
    steps = ck.steps if workload == "lhc" else ck.crf_steps
    for v in variants(workload, train_batch(workload, ck)):
        base = {"workload": workload, "variant": v["name"], "device": ck.device.type, "batch": v["batch"]}
        reason = ck.budget_reason(row_s)
        if reason:
            ck.add_row("rows", {**base, "finite": None, "skipped": reason})
            log(f"  {workload} {v['name']}: skipped ({reason})")
            continue
        try:
            row = train_variant(workload, v, ck.backend, pool, steps, ck.extra(workload))
        except Exception as e:  # one failing variant is a result, not the end of the check
            row = {**base, "finite": None, "error": f"{type(e).__name__}: {e}"}
            log(f"  {workload} {v['name']}: ERROR {row['error']}")
        ck.add_row("rows", row)
        if ck.cuda:
            torch.cuda.empty_cache()


def section_train_lhc(ck: Check) -> None:
    from benchmarks.common import workload_config

    cfg = workload_config("lhc", ck.extra("lhc"))
    train_rows(ck, "lhc", sample_pool("lhc", cfg, 4 * train_batch("lhc", ck)), row_s=10)


def crf_pool(ck: Check):
    """The CRF sample pool (one batch: 0.2 s of CPU per 256x256 sample), saved for the compile row's subprocess."""
    from benchmarks.common import workload_config

    path = ck.workdir / "crf_pool.pt"
    if path.is_file():
        return torch.load(path)
    cfg = workload_config("crf", ck.extra("crf"))
    pool = sample_pool("crf", cfg, 2 * train_batch("crf", ck) if ck.tiny else train_batch("crf", ck))
    torch.save(pool, path)
    return pool


def section_train_crf(ck: Check) -> None:
    train_rows(ck, "crf", crf_pool(ck), row_s=20)
    crf_peak_fractions(ck.results)


def crf_peak_fractions(results: dict) -> None:
    """Each CRF bf16 row's model FLOP/s over the bf16 matmul peak (when both were measured)."""
    flops, peak = results.get("crf_train_flops_per_sample"), results.get("peak_bf16_flops")
    if flops and peak:
        for r in results["rows"]:
            if r["workload"] == "crf" and r.get("precision") == "bf16" and "train_samples_per_s" in r:
                r["peak_bf16_fraction"] = flops * r["train_samples_per_s"] / peak


def _reference_step(backend, extra: Sequence[str]) -> None:
    """One reference-style CRF step at batch 2 (what the FLOP counter traces)."""
    from benchmarks.throughput import synthetic_batch

    tr = build("crf", backend.device.type, 2, "off", False, False, backend, extra)
    tr.step(*synthetic_batch(tr, 2))


def section_crf_flops(ck: Check) -> None:
    ck.results["crf_train_flops_per_sample"] = count_flops(lambda: _reference_step(ck.backend, ck.extra("crf"))) / 2
    log(f"  crf: {ck.results['crf_train_flops_per_sample'] / 1e9:.3g} GFLOP per training sample")


# --- LHC generation: eager, CUDA graph, compiled --------------------------------------------------------------

class _Traffic(TorchDispatchMode):
    """Ops run and bytes they read and write (inputs + outputs), on one traced call. Views launch nothing and
    move nothing (their schema returns a non-writing alias of an input). An estimate of eager DRAM traffic: every op
    reads its inputs and writes its outputs once (caches can only lower it; fusion lowers it in a compiled graph)."""

    def __init__(self):
        super().__init__()
        self.ops, self.bytes = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        if returns and all(r.alias_info is not None and not r.alias_info.is_write for r in returns):
            return out  # a view
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.ops += 1
        self.bytes += sum(t.numel() * t.element_size() for t in ins + outs)
        return out


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The trainer's autocast, without its weight-cast cache (a CUDA graph must not capture cached casts)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


def generator_profile(G, cond: torch.Tensor, dtype) -> dict:
    """FLOPs and bytes per track and ops per call of one forward of G (counted, not timed)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), autocast(cond.device, dtype):
        with FlopCounterMode(display=False) as flops:
            G(cond)
        with _Traffic() as traffic:
            G(cond)
    n = len(cond)
    return {"flops_per_track": flops.get_total_flops() / n, "bytes_per_track": traffic.bytes / n,
            "ops_per_call": traffic.ops}


def bound(compute_fraction: float | None, memory_fraction: float | None, us_per_op: float) -> str:
    """Which limit the numbers point to: the peak reached to >= BOUND_FRACTION; else launches when an op takes
    about what launching one costs (LAUNCH_US); else none of them (under half of both peaks, ops not tiny)."""
    if compute_fraction is None or memory_fraction is None:
        return "unknown (no peak measured)"
    if max(compute_fraction, memory_fraction) >= BOUND_FRACTION:
        return "compute-bound" if compute_fraction >= memory_fraction else "memory-bound"
    return "launch-bound" if us_per_op <= LAUNCH_US else "under both peaks"


def generation_row(ck: Check, mode: str, precision: str, batch: int, secs: Sequence[float], prof: dict,
                   **extra) -> dict:
    rate = rate_stats(secs, batch).median
    peak, bw = ck.results.get("peak_bf16_flops"), ck.results.get("mem_bandwidth_bytes_per_s")
    comp = prof["flops_per_track"] * rate / peak if peak else None
    mem = prof["bytes_per_track"] * rate / bw if bw else None
    call_s = batch / rate
    us_per_op = call_s * 1e6 / max(prof["ops_per_call"], 1)
    row = {"mode": mode, "precision": precision, "batch": batch, "tracks_per_s": rate, "call_ms": call_s * 1e3,
           "flops_per_track": prof["flops_per_track"], "bytes_per_track": prof["bytes_per_track"],
           "ops_per_call": prof["ops_per_call"], "us_per_op": us_per_op, "peak_bf16_fraction": comp,
           "bandwidth_fraction": mem, "bound": bound(comp, mem, us_per_op), **extra}
    log(f"  lhc generation {mode:<10} {precision} batch {batch:>6}: {rate:.3g} tracks/s, "
        f"{100 * (comp or 0):.2f} % bf16 peak, {100 * (mem or 0):.1f} % bandwidth, {row['bound']}")
    return row


def lhc_generator(ck: Check, amp: str):
    """The trainer's G for LHC at this precision, its autocast dtype and a pool of conditions on the device."""
    from benchmarks.common import workload_config

    tr = build("lhc", ck.device.type, 64, amp, False, False, ck.backend, ck.extra("lhc"))
    cfg = workload_config("lhc", ck.extra("lhc"))
    x, y = sample_pool("lhc", cfg, 256 if ck.tiny else 8192, seed=1)
    cond0, _ = tr.workload.prepare(x, y, ck.device)
    return tr, cond0


def batch_of(cond0: torch.Tensor, b: int) -> torch.Tensor:
    return cond0.repeat((b + len(cond0) - 1) // len(cond0), 1, 1)[:b].contiguous()


def timed(fn: Callable[[], object], sync, target_s: float = 0.01) -> list[float]:
    """time_batches with enough calls per iteration that each lasts about target_s (sub-ms calls otherwise
    measure the clock and the synchronisation)."""
    fn()
    if sync:
        sync()
    t0 = time.perf_counter()
    fn()
    if sync:
        sync()
    per = int(min(200, max(1, target_s / max(time.perf_counter() - t0, 1e-6))))
    return time_batches(fn, 2, 5, per, sync)


def gen_precisions(ck: Check) -> list[str]:
    bf16 = not ck.cuda or torch.cuda.is_bf16_supported()
    return (["bf16"] if bf16 else []) + ["off"]


def gen_batches(ck: Check) -> tuple[int, ...]:
    return TINY_GEN_BATCHES if ck.tiny else GEN_BATCHES


def section_lhc_eager(ck: Check) -> None:
    """Tracks/s of G alone (model space on the device, no host copies), the trainer's generate path."""
    for amp in gen_precisions(ck):
        tr, cond0 = lhc_generator(ck, amp)
        prof = generator_profile(tr.G, cond0[:256], tr.dtype)
        for b in gen_batches(ck):
            cond = batch_of(cond0, b)
            ck.add_row("lhc_generation", generation_row(ck, "eager", PRECISIONS[tr.dtype], b,
                                                        timed(lambda: tr.generate(cond), ck.sync()), prof))


def _solve3(A: torch.Tensor, B: torch.Tensor, **_) -> torch.Tensor:
    """x = A^-1 b for (N, 3, 3) A, (N, 3) b by Cramer's rule on the Jacobi-scaled system: elementwise kernels
    only, so it captures (linear_seed's normal equations are symmetric positive definite)."""
    d = torch.rsqrt(torch.diagonal(A, dim1=-2, dim2=-1))
    a, b = A * d[..., :, None] * d[..., None, :], B * d
    c0, c1, c2 = a[..., 0], a[..., 1], a[..., 2]
    det = (c0 * torch.linalg.cross(c1, c2)).sum(-1)
    x = torch.stack([(b * torch.linalg.cross(c1, c2)).sum(-1), (c0 * torch.linalg.cross(b, c2)).sum(-1),
                     (c0 * torch.linalg.cross(c1, b)).sum(-1)], dim=-1) / det[..., None]
    return x * d


# How linear_seed's torch.linalg.solve runs in a captured graph, tried in order. linalg.solve itself checks its
# result on the host (on CUDA it synchronises: forbidden while capturing, and a failed capture is best not
# risked on a one-shot visit); solve_ex without the check is the same factorisation; the closed form (elementwise
# kernels only) is the last resort.
SOLVES = ("linalg.solve_ex", "closed-form-3x3")


def solve_patch(kind: str):
    if kind == "linalg.solve":
        return contextlib.nullcontext()
    solve_ex = torch.linalg.solve_ex
    fn = (lambda A, B, **kw: solve_ex(A, B)[0]) if kind == "linalg.solve_ex" else _solve3
    return mock.patch.object(torch.linalg, "solve", fn)


def capture(G, static_in: torch.Tensor, dtype, solve: str) -> Callable[[], None]:
    """G(static_in) captured in a CUDA graph (warm-up on a side stream first, as torch.cuda.graphs asks);
    returns the replay. Noise inside G comes from the graph-safe CUDA generator: new draws every replay."""
    def forward():
        with torch.no_grad(), autocast(static_in.device, dtype):
            return G(static_in).float()

    with solve_patch(solve):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                forward()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = forward()
    graph.replay()
    torch.cuda.synchronize()
    if not bool(torch.isfinite(out).all()):
        raise RuntimeError(f"captured generator ({solve}) gives non-finite tracks")

    def replay() -> torch.Tensor:  # holds the graph, its input and its output alive
        graph.replay()
        return out
    return replay


def capture_first_working(G, static_in, dtype, errors: list[str],
                          solves: Sequence[str] = SOLVES) -> tuple[Callable[[], torch.Tensor], str]:
    for solve in solves:
        try:
            return capture(G, static_in, dtype, solve), solve
        except Exception as e:  # a capture that fails says why; the next way is tried
            errors.append(f"{solve}: {type(e).__name__}: {str(e)[:300]}")
            torch.cuda.synchronize()
    raise RuntimeError("no way of capturing the generator worked: " + "; ".join(errors))


def section_lhc_graph(ck: Check) -> None:
    """G replayed from a CUDA graph per batch size: what a launch-bound tiny model reaches without launches."""
    info = ck.results["sections"]["lhc_graph"]
    if not ck.cuda:
        info["graph_skipped"] = "no CUDA device: CUDA graphs need a GPU; timed eagerly so the row code runs"
    failed = []
    for amp in gen_precisions(ck):
        try:
            graph_rows(ck, amp, info)
        except Exception as e:  # the other precision still runs
            failed.append(f"{amp}: {type(e).__name__}: {e}")
            log(f"  lhc generation cuda-graph {amp}: ERROR {failed[-1]}")
    if failed:
        raise RuntimeError("; ".join(failed))


def graph_rows(ck: Check, amp: str, info: dict) -> None:
    tr, cond0 = lhc_generator(ck, amp)
    G = tr.G.eval()
    prof = generator_profile(G, cond0[:256], tr.dtype)
    solve = None
    for b in gen_batches(ck):
        static_in = batch_of(cond0, b)
        if ck.cuda:
            tried = SOLVES[SOLVES.index(solve):] if solve else SOLVES  # start from what worked before
            fn, solve = capture_first_working(G, static_in, tr.dtype, info.setdefault("capture_errors", []), tried)
            mode, extra = "cuda-graph", {"solve": solve}
        else:
            def fn(x=static_in):
                with torch.no_grad(), autocast(ck.device, tr.dtype):
                    return G(x).float()
            mode, extra = "eager", {"graph_skipped": info["graph_skipped"]}
        ck.add_row("lhc_generation", generation_row(ck, mode, PRECISIONS[tr.dtype], b, timed(fn, ck.sync()),
                                                    prof, **extra))
        del fn
        if ck.cuda:
            torch.cuda.empty_cache()


# --- the torch.distributed job and the compile rows: subprocesses with time limits --------------------------------

def run_limited(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int | None, str]:
    """(exit code or None on a timeout, output): a subprocess never outlives `timeout`."""
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        out = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
        return None, out + f"\n[timed out after {timeout:.0f} s: {' '.join(cmd)}]"
    return proc.returncode, proc.stdout + proc.stderr


def subprocess_env() -> dict:
    """The children find the repository's packages without an install (PYTHONPATH = the repo root)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
    return env


def section_torch_job(ck: Check) -> None:
    """`hpcgan train --backend torch` as one rank: the torch.distributed path end to end (NCCL on a GPU)."""
    data, run = ck.workdir / "lhc.h5", ck.workdir / "run"
    cli = [sys.executable, "-m", "hpcgan.cli.main"]
    steps = 4 if ck.tiny else 200
    cmds = [cli + ["data", "synth", "lhc", "--n", str(512 if ck.tiny else 16384), "--seed", "1", "--out", str(data),
                   "--quiet"],
            cli + ["train", "--config", "lhc-small", "--backend", "torch", "--device", ck.device.type,
                   f"data.path={data}", "data.val_path=", f"run_dir={run}", f"train.max_steps={steps}",
                   "train.figures=false", *(TINY["lhc"] + ["train.batch_size=32"] if ck.tiny else [])]]
    t0 = time.perf_counter()
    out, code = "", None
    for cmd in cmds:
        code, text = run_limited(cmd, min(SUBPROCESS_TIMEOUT_S, max(ck.left(), 10.0)), subprocess_env())
        out += text
        if code != 0:
            break
    backend_line = next((line for line in out.splitlines() if "hpcgan train:" in line), "")
    ok = code == 0 and f"reached train.max_steps={steps}" in out
    job = {"ok": ok, "returncode": code, "timed_out": code is None, "steps": steps,
           "wall_s": round(time.perf_counter() - t0, 1), "backend_line": backend_line.strip(),
           "output_tail": "" if ok else out[-3000:]}
    ck.results["torch_backend_job"] = job
    log(f"  1-rank --backend torch job: {'ok' if ok else 'TIMED OUT' if code is None else 'FAILED'} "
        f"({backend_line.strip()})")
    if not ok:
        raise RuntimeError(f"the 1-rank --backend torch job {'timed out' if code is None else f'exited {code}'}: "
                           f"{out.strip().splitlines()[-1] if out.strip() else 'no output'}")


COMPILE_ROWS = ("lhc-generation", "crf-bf16")  # cheaper and closer to a target first


def section_compile(ck: Check) -> None:
    """Each compile row in its own subprocess with a time limit (compiling has none of its own); the row's
    rows come back through a JSON file the subprocess rewrites as it goes, so a timeout keeps what was done."""
    info = ck.results["sections"]["compile"]
    reason = compile_skip_reason(ck.results.get("probe", {}).get("compiler") or compiler_probe(), ck.device.type,
                                 ck.compile_backend)
    if reason is None and not ck.cuda and ck.compile_backend == "inductor":
        reason = ("cpu: compile rows are GPU-only (inductor's C++ build takes minutes on CPU; "
                  "--compile-backend eager traces them)")
    if reason:
        info["skipped_rows"] = reason
        for name in COMPILE_ROWS:
            ck.add_row("compile_rows", {"row": name, "skipped": reason})
        log(f"  compile rows skipped: {reason}")
        return
    for name in COMPILE_ROWS:
        timeout = min(SUBPROCESS_TIMEOUT_S, ck.left() - 5)
        if timeout < 20:
            ck.add_row("compile_rows", {"row": name, "skipped": ck.budget_reason(25) or "budget"})
            continue
        part = ck.workdir / f"compile-{name}.json"
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--row", name, "--row-out", str(part),
               "--devices", ck.device.type, "--crf-steps", str(ck.crf_steps), "--workdir", str(ck.workdir),
               "--compile-backend", ck.compile_backend, "--out", str(ck.report.out), *(["--tiny"] if ck.tiny else [])]
        t0 = time.perf_counter()
        code, out = run_limited(cmd, timeout, subprocess_env())
        got = json.loads(part.read_text()) if part.is_file() else {"rows": []}
        row = {"row": name, "returncode": code, "wall_s": round(time.perf_counter() - t0, 1), **got}
        if code != 0:
            row["error"] = f"timed out after {timeout:.0f} s" if code is None else f"exit {code}"
            row["output_tail"] = out[-2000:]
            log(f"  compile row {name}: ERROR {row['error']}")
        ck.add_row("compile_rows", row)
        for r in got.get("rows", []):
            if "tracks_per_s" in r:
                ck.results["lhc_generation"].append(r)
            else:
                ck.results["rows"].append(r)
        crf_peak_fractions(ck.results)
        ck.report.save()


def run_row(name: str, ck: Check, out: Path) -> None:
    """One compile row (the subprocess side of section_compile), its rows rewritten to `out` as they come."""
    got: dict = {"rows": []}

    def add(row: dict) -> None:
        got["rows"].append(row)
        out.write_text(json.dumps(got, default=str))

    if ck.compile_backend != "inductor":  # smoke: trace with another backend (no code generation)
        patch = mock.patch.object(torch, "compile", functools.partial(torch.compile, backend=ck.compile_backend))
    else:
        patch = contextlib.nullcontext()
    with patch:
        if name == "crf-bf16":
            v = dict(name="bf16-compile", amp="bf16", channels_last=True, compile_=True, batch=train_batch("crf", ck))
            add(train_variant("crf", v, ck.backend, crf_pool(ck), ck.crf_steps, ck.extra("crf")))
        else:
            compiled_generation(ck, add)


def compiled_generation(ck: Check, add: Callable[[dict], None]) -> None:
    """G under torch.compile (inductor's reduce-overhead: fused kernels replayed from CUDA graphs), bf16."""
    amp = gen_precisions(ck)[0]
    tr, cond0 = lhc_generator(ck, amp)
    G = tr.G.eval()
    prof = generator_profile(G, cond0[:256], tr.dtype)
    kwargs = {"mode": "reduce-overhead"} if ck.compile_backend == "inductor" and ck.cuda else {}
    with solve_patch("linalg.solve_ex"):  # traced once: the host check of linalg.solve would split the graph
        Gc = torch.compile(G, **kwargs)
        for b in gen_batches(ck):
            x = batch_of(cond0, b)
            t0 = time.perf_counter()

            def fn():
                with torch.no_grad(), autocast(ck.device, tr.dtype):
                    return Gc(x).float()
            fn()
            first_s = time.perf_counter() - t0
            add(generation_row(ck, "compiled", PRECISIONS[tr.dtype], b, timed(fn, ck.sync()), prof,
                               compile_backend=ck.compile_backend, first_call_s=round(first_s, 1),
                               solve="linalg.solve_ex", **kwargs))


# --- the sections in order, the checks, the Markdown ------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Check], None]
    need_s: float  # skipped when less of the budget is left (a guess at its cost on an H100-class GPU)


SECTIONS = (Section("probe", section_probe, 0), Section("peak", section_peak, 5),
            Section("train_lhc", section_train_lhc, 15), Section("lhc_eager", section_lhc_eager, 10),
            Section("lhc_graph", section_lhc_graph, 15), Section("torch_job", section_torch_job, 40),
            Section("crf_flops", section_crf_flops, 10), Section("train_crf", section_train_crf, 40),
            Section("compile", section_compile, 30))


def run_section(ck: Check, sec: Section) -> None:
    info: dict = {"status": "running", "started_s": round(ck.budget_s - ck.left(), 1)}
    ck.results["sections"][sec.name] = info
    reason = ck.budget_reason(sec.need_s)
    if reason:
        info["status"], info["reason"] = "skipped", reason
        log(f"[{sec.name}] skipped: {reason}")
        ck.report.save()
        return
    log(f"[{sec.name}] ({ck.left():.0f} s of the budget left)")
    ck.report.save()
    t0 = time.perf_counter()
    try:
        sec.run(ck)
        info["status"] = "ok"
    except subprocess.TimeoutExpired as e:
        info["status"], info["error"] = "error", f"timed out after {e.timeout:.0f} s: {e.cmd}"
    except Exception as e:  # a failing section is a result; the next one still runs
        info["status"], info["error"] = "error", f"{type(e).__name__}: {e}"
        info["traceback_tail"] = traceback.format_exc()[-2000:]
    finally:
        info["wall_s"] = round(time.perf_counter() - t0, 1)
        if info["status"] == "error":
            log(f"[{sec.name}] ERROR {info['error']}")
        if ck.cuda:
            torch.cuda.empty_cache()
        ck.report.save()


def checks(res: dict) -> dict:
    """What the results say so far (None: not measured yet)."""
    rows = [r for r in res["rows"] if "train_samples_per_s" in r]
    ref = next((r for r in rows if r["variant"] == "reference-style"), None)
    crf = [r for r in rows if r["workload"] == "crf" and r["variant"] != "reference-style"]
    best = max(crf, key=lambda r: r["train_samples_per_s"], default=None)
    gen = max(res["lhc_generation"], key=lambda g: g["tracks_per_s"], default=None)
    finite = [r["finite"] for r in res["rows"] if r.get("finite") is not None]
    errors = [res["error"]] if res.get("error") else []
    errors += [f"{name}: {s['error']}" for name, s in res["sections"].items() if s.get("error")]
    errors += [f"{r['workload']} {r['variant']}: {r['error']}" for r in res["rows"] if r.get("error")]
    errors += [f"compile {r['row']}: {r['error']}" for r in res.get("compile_rows", []) if r.get("error")]
    skipped = [f"{name}: {s['reason']}" for name, s in res["sections"].items() if s.get("status") == "skipped"]
    skipped += [f"{r['workload']} {r['variant']}: {r['skipped']}" for r in res["rows"] if r.get("skipped")]
    skipped += [f"compile {r['row']}: {r['skipped']}" for r in res.get("compile_rows", []) if r.get("skipped")]
    job = res.get("torch_backend_job")
    fracs = [r["peak_bf16_fraction"] for r in crf if r.get("peak_bf16_fraction") is not None]
    out = {
        "all_finite": all(finite) if finite else None,
        "errors": errors,
        "skipped": skipped,
        "torch_backend_job": job["ok"] if job else None,
        "lhc_tracks_per_s_max": gen["tracks_per_s"] if gen else None,
        "lhc_best": {k: gen[k] for k in ("mode", "precision", "batch", "bound")} if gen else None,
        "crf_speedup_vs_reference": best["train_samples_per_s"] / ref["train_samples_per_s"] if ref and best else None,
        "crf_best_variant": best["variant"] if best else None,
        "crf_bf16_peak_fraction_max": max(fracs) if fracs else None,
    }
    out["ok"] = out["all_finite"] is not False and out["torch_backend_job"] is not False and not errors
    return out


def _pct(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{100 * x:.{digits}f}"


def markdown(results: dict, env: dict, params: dict) -> str:
    c = checks(results)
    why = f"interrupted by {results['interrupted']}" if results.get("interrupted") else "written while running"
    state = "complete" if results["complete"] else f"INCOMPLETE ({why})"
    lines = [f"GPU check on {env.get('gpu', env.get('cpu'))} ({params['device']}), {env['date']}, torch {env['torch']}"
             f"{' (tiny sizes)' if params['tiny'] else ''}, budget {params['budget_s']:.0f} s, {state}: "
             f"`{env['command']}`", "", "| section | status | wall s | note |", "|---|---|---|---|"]
    for name, s in results["sections"].items():
        note = s.get("error") or s.get("reason") or s.get("graph_skipped") or s.get("skipped_rows") or ""
        lines.append(f"| {name} | {s['status']} | {s.get('wall_s', '')} | {note[:160]} |")
    lines += ["", "| workload | variant | precision | ch-last | compile | batch | steps | finite | train samples/s | "
              "generate samples/s | % bf16 peak | error / skipped |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "train_samples_per_s" not in r:
            note = f"ERROR: {r['error'][:100]}" if r.get("error") else f"skipped: {r.get('skipped', '')[:100]}"
            lines.append(f"| {r['workload']} | {r['variant']} | | | | {r.get('batch', '')} | | n/a | | | | {note} |")
            continue
        lines.append(f"| {r['workload']} | {r['variant']} | {r['precision']} | {int(r['channels_last'])} | "
                     f"{int(r['compile'])} | {r['batch']} | {r['steps']} | {'yes' if r['finite'] else 'NO'} | "
                     f"{r['train_samples_per_s']:.1f} | {r['generate_samples_per_s']:.1f} | "
                     f"{_pct(r.get('peak_bf16_fraction'))} | |")
    lines += ["", "| LHC generation | precision | batch | tracks/s | ms/call | ops/call | us/op | % bf16 peak | "
              "% bandwidth | bound |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {g['mode']} | {g['precision']} | {g['batch']} | {g['tracks_per_s']:.3g} | {g['call_ms']:.3g} | "
              f"{g['ops_per_call']} | {g['us_per_op']:.2f} | {_pct(g['peak_bf16_fraction'], 2)} | "
              f"{_pct(g['bandwidth_fraction'])} | {g['bound']} |" for g in results["lhc_generation"]]
    for r in results.get("compile_rows", []):
        if r.get("error") or r.get("skipped"):
            note = f"ERROR {r['error']}" if r.get("error") else f"skipped: {r['skipped']}"
            lines.append(f"- compile row {r['row']}: {note}")
    peak, bw = results.get("peak_bf16_flops"), results.get("mem_bandwidth_bytes_per_s")
    job = results.get("torch_backend_job")
    speed = "n/a" if c["crf_speedup_vs_reference"] is None else \
        f"x{c['crf_speedup_vs_reference']:.2f} ({c['crf_best_variant']})"
    best = c["lhc_best"]
    gen = "n/a" if best is None else (f"{c['lhc_tracks_per_s_max']:.3g} tracks/s ("
                                      + ", ".join(str(best[k]) for k in ("mode", "precision", "batch", "bound")) + ")")
    yn = {True: "yes", False: "NO", None: "n/a"}
    lines += ["", f"- all losses and weights finite (rows that ran): {yn[c['all_finite']]}",
              f"- errors: {len(c['errors'])}" + "".join(f"\n  - {e[:200]}" for e in c["errors"]),
              f"- skipped: {len(c['skipped'])}" + "".join(f"\n  - {s[:200]}" for s in c["skipped"]),
              f"- 1-rank `--backend torch` job: {'n/a' if job is None else 'ok' if job['ok'] else 'FAILED'}"
              f"{'' if job is None else ' (' + job['backend_line'] + ')'}",
              f"- bf16 matmul peak: {'n/a' if peak is None else f'{peak / 1e12:.3g} TFLOP/s'}; memory bandwidth: "
              f"{'n/a' if bw is None else f'{bw / 1e9:.4g} GB/s'}",
              f"- LHC generation, best: {gen} (target >= 1e7 on an H100)",
              f"- CRF train speed-up over reference-style: {speed} (target >= 3)",
              f"- CRF bf16 fraction of the bf16 matmul peak: {_pct(c['crf_bf16_peak_fraction_max']) or 'n/a'} % "
              "(target >= 40 %)"]
    return "\n".join(lines)


# --- entry points ----------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpcgan bench gpu", description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="cuda", choices=["cuda", "cpu"], help="where to run (cpu: smoke test)")
    p.add_argument("--tiny", action="store_true", help="tiny models and batches (the CPU smoke test)")
    p.add_argument("--steps", type=int, default=300, help="training steps per LHC variant")
    p.add_argument("--crf-steps", type=int, default=60, help="training steps per CRF variant")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                   help=f"wall-clock budget in seconds (default {DEFAULT_BUDGET_S:.0f}); sections that do not fit "
                        "what is left are skipped with the reason")
    p.add_argument("--sections", default=",".join(s.name for s in SECTIONS),
                   help="comma-separated subset to run, in the fixed order (default: all)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compile rows (eager: trace only, the CPU smoke test)")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "gpu_check.json")
    p.add_argument("--probe", action="store_true", help="print what the machine has (GPU, torch, compiler, "
                   "packages), write it to --out's folder as probe.json, and exit")
    p.add_argument("--row", choices=COMPILE_ROWS, help=argparse.SUPPRESS)  # section_compile's subprocess
    p.add_argument("--row-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return p


def run_check(args: argparse.Namespace, t_start: float) -> dict:
    from hpcgan.runtime import session

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"gpu_check: missing Python modules {', '.join(missing)} (pip install them from wheels "
                         "brought to the machine)")
    wanted = [s for s in args.sections.split(",") if s]
    unknown = set(wanted) - {s.name for s in SECTIONS}
    if unknown:
        raise SystemExit(f"gpu_check: --sections {args.sections!r}: unknown {', '.join(sorted(unknown))}")
    params = {"device": args.devices, "tiny": args.tiny, "steps": args.steps, "crf_steps": args.crf_steps,
              "budget_s": args.budget_s, "sections": wanted, "compile_backend": args.compile_backend,
              "subprocess_timeout_s": SUBPROCESS_TIMEOUT_S, "targets": TARGETS}
    report = Report(args.out, params, environment())
    report.save()
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        backend = session.start("local", args.devices)
    except Exception as e:  # no device to run on: say so in the report too
        report.results["error"] = f"starting the {args.devices} backend: {type(e).__name__}: {e}"
        report.save()
        raise
    try:
        with tempfile.TemporaryDirectory(prefix="hpcgan-gpu-check-") as tmp:
            ck = Check(backend, backend.device, args.tiny, args.steps, args.crf_steps, report,
                       t_start + args.budget_s, args.budget_s, Path(tmp), args.compile_backend)
            for sec in SECTIONS:
                if sec.name in wanted:
                    run_section(ck, sec)
        report.results["complete"] = True
    except Interrupted as e:
        report.results["interrupted"] = str(e)
        for s in report.results["sections"].values():
            if s["status"] == "running":
                s["status"] = "interrupted"
        log(f"gpu_check: interrupted by {e}; results so far in {args.out}")
    finally:
        report.results["wall_s"] = round(time.monotonic() - t_start, 1)
        report.save()
        for s, handler in previous.items():
            signal.signal(s, handler)
        session.stop()
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return report.results


def _interrupt(signum, frame) -> None:
    for s in (signal.SIGTERM, signal.SIGINT):  # the first one counts; the report is being written
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    from hpcgan.errors import UserError

    t_start = time.monotonic()
    args = build_parser().parse_args(argv)
    if args.probe:
        info = probe()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        (args.out.parent / "probe.json").write_text(json.dumps(info, indent=1) + "\n")
        for line in probe_lines(info):
            print(line)
        return 0
    if args.devices == "cuda" and not torch.cuda.is_available():
        raise UserError("--devices cuda: torch sees no GPU here (use --devices cpu --tiny for the smoke test)")
    if args.steps < 2 or args.crf_steps < 2:
        raise UserError(f"--steps {args.steps} / --crf-steps {args.crf_steps}: expected at least 2")
    if args.row:
        return row_main(args)
    res = run_check(args, t_start)
    print(args.out.with_suffix(".md").read_text())
    if res.get("interrupted"):
        return 128 + signal.Signals[res["interrupted"]].value
    return 0 if res["checks"]["ok"] else 1


def row_main(args: argparse.Namespace) -> int:
    """The subprocess of one compile row: no report, no budget of its own (the parent's timeout is the limit)."""
    from hpcgan.runtime import session

    backend = session.start("local", args.devices)
    report = Report(Path(os.devnull), {}, {})
    report.save = lambda: None  # type: ignore[method-assign]
    ck = Check(backend, backend.device, args.tiny, args.steps, args.crf_steps, report, float("inf"), 0.0,
               args.workdir or Path(tempfile.mkdtemp(prefix="hpcgan-gpu-row-")), args.compile_backend)
    parent = json.loads(args.out.read_text())["results"] if args.out.is_file() else {}
    ck.results.update({k: parent.get(k) for k in ("peak_bf16_flops", "mem_bandwidth_bytes_per_s")})
    run_row(args.row, ck, args.row_out)
    session.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
