"""Allreduce bus bandwidth: Horovod vs raw MPI (mpi4py) vs torch.distributed (gloo), and Horovod tensor fusion.

Bus bandwidth (NCCL-tests' definition) = 2(n-1)/n * bytes / time: the bytes
each rank must move in a ring allreduce, so the figure is comparable across
rank counts and close to the link's bandwidth when the algorithm is optimal.

One driver process launches `mpirun -np N python -m benchmarks.allreduce --worker LIB`
per configuration (library x rank count); each worker times every message size
with the harness protocol (warm-up, then `iters` timed iterations of a batch of
back-to-back allreduces, a barrier before each iteration) and the time of an
iteration is the slowest rank's. Rank counts above the core count are marked
"oversubscribed": they measure time-sharing, not a network.

Fusion: a model-like list of gradient tensors (the parameter shapes of a real
hpcgan model: G then D of the chosen workload) reduced with
  - horovod, fusion on: allreduce_async_ every tensor then synchronize (default HOROVOD_FUSION_THRESHOLD),
  - horovod, fusion off: the same with HOROVOD_FUSION_THRESHOLD=0,
  - hpcgan flat: what the trainer does (Backend.sync_gradients: concatenate into
    flat buffers, one allreduce each) over Horovod,
  - hpcgan flat-fp16: the same with train.grad_compression=fp16 (the buffers travel in 16
    bits); its bandwidth is counted in the fp32 gradient bytes they stand for.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchmarks.common import (DEFAULT_RESULTS, Stats, environment, log, numel, oversubscribed, parameter_shapes,
                               read_result, run_ranks, workload_config, write_result)

LIBS = ("horovod", "mpi", "torch")
DEFAULT_SIZES = [4 * 1024 * 4 ** k for k in range(9)]  # 4 KiB, 16 KiB, ..., 256 MiB (2**28 bytes)
BATCH_BYTES = 64 * 2 ** 20  # back-to-back allreduces per timed iteration move about this much (at least one)
MAX_BATCH = 50


def bus_bandwidth(nbytes: float, seconds: float, n: int) -> float:
    """Bytes/s each rank moves in a ring allreduce: 2(n-1)/n * bytes / time."""
    return 2.0 * (n - 1) / n * nbytes / seconds


# --- worker side (runs under mpirun) -------------------------------------------------

class _Comm:
    """One library's allreduce on a float32 buffer, plus an MPI barrier and max-over-ranks for timing."""

    def __init__(self, lib: str):
        self.lib = lib
        if lib == "horovod":
            import horovod.torch as hvd

            hvd.init()
            self.hvd = hvd
        from mpi4py import MPI  # after hvd.init: reuses its MPI (THREAD_MULTIPLE), else initialises it

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()  # our barriers never interleave with the library's own traffic
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if lib == "torch":
            from hpcgan.runtime.env import detect_process
            from hpcgan.runtime.torch_backend import TorchBackend

            import torch

            self.backend = TorchBackend(detect_process(), torch.device("cpu"))
            self.dist = torch.distributed

    def buffer(self, nbytes: int):
        n = max(1, nbytes // 4)
        if self.lib == "mpi":
            return np.ones(n, dtype=np.float32)
        import torch

        return torch.ones(n, dtype=torch.float32)

    def allreduce(self, buf) -> None:
        if self.lib == "mpi":
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        elif self.lib == "horovod":
            self.hvd.allreduce_(buf, op=self.hvd.Sum, name="bench")
        else:
            self.dist.all_reduce(buf)

    def barrier(self) -> None:
        self.comm.Barrier()

    def slowest(self, values: Sequence[float]) -> list[float]:
        a = np.asarray(values, dtype=np.float64)
        out = np.empty_like(a)
        self.comm.Allreduce(a, out, op=self.MPI.MAX)
        return out.tolist()

    def close(self) -> None:
        if self.lib == "torch":
            self.backend.shutdown()
        elif self.lib == "horovod":
            self.hvd.shutdown()


def _timed(comm: _Comm, op: Callable[[], None], warmup: int, iters: int, batch: int) -> list[float]:
    """Seconds per operation for each iteration, slowest rank's (barrier before each iteration)."""
    for _ in range(warmup):
        op()
    times = []
    for _ in range(iters):
        comm.barrier()
        t0 = time.perf_counter()
        for _ in range(batch):
            op()
        times.append((time.perf_counter() - t0) / batch)
    return comm.slowest(times)


def worker_sizes(lib: str, sizes: Sequence[int], warmup: int, iters: int, out: str) -> None:
    comm = _Comm(lib)
    rows = []
    for nbytes in sizes:
        buf = comm.buffer(nbytes)
        batch = int(min(MAX_BATCH, max(1, BATCH_BYTES // nbytes)))
        times = _timed(comm, lambda: comm.allreduce(buf), warmup=max(warmup, 1), iters=iters, batch=batch)
        st = Stats.of(times)
        rows.append({"bytes": int(nbytes), "batch": batch, "time_s": st.to_dict(),
                     "busbw_GBps": bus_bandwidth(nbytes, st.median, comm.size) / 1e9,
                     "busbw_GBps_best": bus_bandwidth(nbytes, st.min, comm.size) / 1e9})
        del buf
    if comm.rank == 0:
        Path(out).write_text(json.dumps(rows))
    comm.close()


def worker_fusion(mode: str, workload: str, warmup: int, iters: int, out: str) -> None:
    """Reduce a model's gradient list: per-tensor async Horovod ops, or hpcgan's flat buffers."""
    import torch

    comm = _Comm("horovod")
    hvd = comm.hvd
    shapes = parameter_shapes(workload_config(workload))
    tensors = [torch.ones(s) for part in ("G", "D") for s in shapes[part]]
    if mode.startswith("flat"):
        from hpcgan.runtime.env import detect_process
        from hpcgan.train.step import GRAD_COMPRESSION
        from hpcgan.runtime.horovod_backend import HorovodBackend

        backend = HorovodBackend(detect_process(), torch.device("cpu"))
        params = [torch.nn.Parameter(torch.zeros(t.shape)) for t in tensors]
        for p, t in zip(params, tensors):
            p.grad = t

        compression = GRAD_COMPRESSION[mode.split("-")[1] if "-" in mode else "none"]

        def op():
            backend.sync_gradients(params, group="bench", compression=compression)
    else:
        def op():
            handles = [hvd.allreduce_async_(t, op=hvd.Sum, name=f"t{i}") for i, t in enumerate(tensors)]
            for h in handles:
                hvd.synchronize(h)

    times = _timed(comm, op, warmup=max(warmup, 1), iters=iters, batch=1)
    if comm.rank == 0:
        nbytes = sum(t.numel() * 4 for t in tensors)
        st = Stats.of(times)
        Path(out).write_text(json.dumps({
            "tensors": len(tensors), "bytes": nbytes, "time_s": st.to_dict(),
            "busbw_GBps": bus_bandwidth(nbytes, st.median, comm.size) / 1e9,
            "fusion_threshold": os.environ.get("HOROVOD_FUSION_THRESHOLD", "default (128 MiB in Horovod 0.28)")}))
    comm.close()


# --- driver ---------------------------------------------------------------------------

def run_benchmark(ranks: Sequence[int], libs: Sequence[str], sizes: Sequence[int], warmup: int, iters: int,
                  fusion_workload: str, out: Path, timeout: float) -> dict:
    results: dict = {"curves": [], "fusion": []}
    env = environment()
    with tempfile.TemporaryDirectory(prefix="hpcgan-allreduce-") as tmp:
        for n in ranks:
            for lib in libs:
                part = Path(tmp) / f"{lib}-{n}.json"
                log(f"allreduce: {lib} x {n} ranks{' (oversubscribed)' if oversubscribed(n) else ''} ...")
                t0 = time.time()
                run_ranks(n, "allreduce", ["--worker", lib, "--sizes", ",".join(map(str, sizes)),
                                           "--warmup", str(warmup), "--iters", str(iters), "--part", str(part)],
                          env={"OMP_NUM_THREADS": "1"}, timeout=timeout)
                rows = json.loads(part.read_text())
                results["curves"].append({"lib": lib, "ranks": n, "oversubscribed": oversubscribed(n), "rows": rows,
                                          "wall_s": round(time.time() - t0, 1)})
                for r in rows:
                    log(f"  {r['bytes']:>10d} B  {r['time_s']['median'] * 1e3:9.3f} ms  {r['busbw_GBps']:7.3f} GB/s")
            if fusion_workload and "horovod" in libs:
                for mode, extra in (("fusion-on", {}), ("fusion-off", {"HOROVOD_FUSION_THRESHOLD": "0"}),
                                    ("flat", {}), ("flat-fp16", {})):  # Horovod 0.28 has no bf16 allreduce
                    part = Path(tmp) / f"fusion-{mode}-{n}.json"
                    log(f"allreduce: horovod {mode}, {fusion_workload} gradients x {n} ranks ...")
                    run_ranks(n, "allreduce", ["--worker", "fusion", "--fusion-mode", mode, "--fusion-workload",
                                               fusion_workload, "--warmup", str(warmup), "--iters", str(iters),
                                               "--part", str(part)],
                              env={"OMP_NUM_THREADS": "1", **extra}, timeout=timeout)
                    row = json.loads(part.read_text())
                    row.update(mode=mode, ranks=n, oversubscribed=oversubscribed(n), workload=fusion_workload)
                    results["fusion"].append(row)
                    log(f"  {row['tensors']} tensors {row['bytes'] / 2**20:.1f} MiB: "
                        f"{row['time_s']['median'] * 1e3:.2f} ms  {row['busbw_GBps']:.3f} GB/s")
    results["relative_to_mpi"] = relative_to(results["curves"], "mpi")
    params = {"ranks": list(ranks), "libs": list(libs), "sizes": list(sizes), "warmup": warmup, "iters": iters,
              "batch_bytes": BATCH_BYTES, "fusion_workload": fusion_workload,
              "busbw": "2(n-1)/n * bytes / median time of the slowest rank"}
    write_result(out, "allreduce", params, results, env=env)
    log(f"wrote {out}")
    return results


def relative_to(curves: list[dict], base: str) -> list[dict]:
    """Bus bandwidth of each library / the base library's, per rank count and size."""
    ref = {(c["ranks"], r["bytes"]): r["busbw_GBps"] for c in curves if c["lib"] == base for r in c["rows"]}
    out = []
    for c in curves:
        if c["lib"] == base:
            continue
        for r in c["rows"]:
            b = ref.get((c["ranks"], r["bytes"]))
            if b:
                out.append({"lib": c["lib"], "ranks": c["ranks"], "bytes": r["bytes"], "ratio": r["busbw_GBps"] / b})
    return out


def summary(path: Path) -> str:
    """A text table of a result file (for the README and the report)."""
    doc = read_result(path, "allreduce")
    lines = ["| lib | ranks | " + " | ".join(_size(b) for b in doc["params"]["sizes"]) + " |",
             "|---|---|" + "---|" * len(doc["params"]["sizes"])]
    for c in doc["results"]["curves"]:
        bw = {r["bytes"]: r["busbw_GBps"] for r in c["rows"]}
        lines.append(f"| {c['lib']} | {c['ranks']}{' (oversub.)' if c['oversubscribed'] else ''} | "
                     + " | ".join(f"{bw.get(b, float('nan')):.2f}" for b in doc["params"]["sizes"]) + " |")
    for f in doc["results"]["fusion"]:
        lines.append(f"fusion {f['mode']:<10} ranks {f['ranks']}: {f['tensors']} tensors, {f['bytes'] / 2**20:.1f} MiB, "
                     f"{f['time_s']['median'] * 1e3:.2f} ms, {f['busbw_GBps']:.3f} GB/s")
    return "\n".join(lines)


def _size(b: int) -> str:
    for unit, k in (("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if b >= k:
            return f"{b // k} {unit}"
    return f"{b} B"


def parse_sizes(text: str) -> list[int]:
    from hpcgan.errors import UserError

    try:
        sizes = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--sizes {text!r}: expected comma-separated byte counts (e.g. 4096,1048576)") from None
    if not sizes or min(sizes) < 4:
        raise UserError(f"--sizes {text!r}: expected byte counts >= 4")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpcgan bench allreduce", description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="2,4", help="rank counts, comma-separated (default 2,4)")
    p.add_argument("--libs", default=",".join(LIBS), help=f"subset of {','.join(LIBS)}")
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="message sizes in bytes")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches before timing")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per size")
    p.add_argument("--fusion-workload", default="crf", help="model whose gradient list the fusion test reduces ('' skips)")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "allreduce.json")
    p.add_argument("--timeout", type=float, default=900, help="seconds per mpirun")
    p.add_argument("--summary", action="store_true", help="print the table of an existing --out file and exit")
    # worker-only options (set by the driver)
    p.add_argument("--worker", choices=[*LIBS, "fusion"], help=argparse.SUPPRESS)
    p.add_argument("--fusion-mode", choices=["fusion-on", "fusion-off", "flat", "flat-fp16"],
                   help=argparse.SUPPRESS)
    p.add_argument("--part", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hpcgan.errors import UserError

    args = build_parser().parse_args(argv)
    if args.worker == "fusion":
        worker_fusion(args.fusion_mode, args.fusion_workload, args.warmup, args.iters, args.part)
        return 0
    sizes = parse_sizes(args.sizes)
    if args.worker:
        worker_sizes(args.worker, sizes, args.warmup, args.iters, args.part)
        return 0
    if args.summary:
        print(summary(args.out))
        return 0
    libs = [x for x in args.libs.split(",") if x]
    bad = [x for x in libs if x not in LIBS]
    if bad:
        raise UserError(f"--libs: unknown {', '.join(bad)} (expected a subset of {', '.join(LIBS)})")
    try:
        ranks = [int(x) for x in args.ranks.split(",") if x]
    except ValueError:
        raise UserError(f"--ranks {args.ranks!r}: expected comma-separated integers") from None
    if not ranks or min(ranks) < 2:
        raise UserError(f"--ranks {args.ranks!r}: allreduce needs at least 2 ranks")
    run_benchmark(ranks, libs, sizes, args.warmup, args.iters, args.fusion_workload, args.out, args.timeout)
    print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
