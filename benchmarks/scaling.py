"""Weak and strong scaling over ranks under mpirun or srun, horovod vs torch backends, synthetic vs real data.

- weak: fixed per-rank batch B at every rank count (the global batch grows with N);
- strong: fixed global batch B, B/N per rank.
Efficiency = rate(N) / (N * rate(1)) for both (rate = global samples/s; for strong
scaling this equals T(1) / (N * T(N))).

Inputs: "synthetic" = one fixed in-memory batch on the device (no I/O, as CSCS
measured compute scaling), "real" = hpcgan.data.reader.ShardedReader over an
HDF5 file (written once by `hpcgan data synth` unless --data names one).

Time per step is split into data wait (next batch from the reader + the
workload's `prepare`), allreduce wait (the Backend.sync_gradients calls of
Training.sync_and_step, timed separately by the trainer) and compute (the rest).
Each timed iteration's figures are the slowest rank's (the step of a
synchronous data-parallel job ends when its slowest rank does).

One driver launches `mpirun -np N python -m benchmarks.scaling --worker ...`
(or `srun --ntasks N ...` inside a SLURM job: --launcher srun, what
jobs/bench_scaling.sh uses) per (backend, N); the worker runs weak and strong,
synthetic and real, in one process. Its data file and per-run results go to a
temporary folder beside --out, not /tmp: on several nodes every rank must see
them, and each node has its own /tmp. Rank counts above the core count are
marked oversubscribed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.common import (DEFAULT_RESULTS, LAUNCHERS, REPO, Stats, environment, log, oversubscribed,
                               read_result, run_ranks, workload_config, write_result)

BACKENDS = ("horovod", "torch")
WORKLOADS = ("lhc", "crf-small", "crf")
DATA_SAMPLES = {"lhc": 8192, "crf-small": 256, "crf": 64}  # real-data file size (epochs wrap around)
ITERS = (3, 5, 4)  # warm-up steps, timed iterations, steps per iteration


# --- worker ---------------------------------------------------------------------------

class _Batches:
    """Endless (cond, real, valid) batches from the reader, each timed as data wait (read + prepare)."""

    def __init__(self, reader, training):
        self.reader, self.training = reader, training
        self.epoch = 0
        self.it = iter(reader.epoch(0))
        self.wait_s = 0.0

    def next(self):
        t0 = time.perf_counter()
        try:
            batch = next(self.it)
        except StopIteration:
            self.epoch += 1
            self.it = iter(self.reader.epoch(self.epoch))
            batch = next(self.it)
        batch = self.training.prepare(batch)
        if self.training.device.type == "cuda":
            torch.cuda.synchronize(self.training.device)
        self.wait_s += time.perf_counter() - t0
        return batch


def measure(training, backend, batch: int, data_path: str | None, iters: tuple[int, int, int]) -> dict:
    """Steps with one per-rank batch size; per iteration: wall, data and sync seconds per step (slowest rank)."""
    from benchmarks.throughput import synthetic_batch

    warmup, n_iter, per_iter = iters
    reader = None
    if data_path:
        from hpcgan.data.reader import ShardedReader

        reader = ShardedReader(data_path, backend.rank, backend.size, batch, training.cfg.seed, prefetch=4)
        source = _Batches(reader, training)
        get = source.next
    else:
        fixed = synthetic_batch(training, batch, seed=backend.rank)
        source = None

        def get():
            return fixed

    def sync_device():
        if training.device.type == "cuda":
            torch.cuda.synchronize(training.device)

    for _ in range(warmup):
        training.step(*get())
    sync_device()
    rows = []
    for _ in range(n_iter):
        backend.barrier()
        training.sync_timer.take()  # start the iteration's sync time from zero
        data0 = source.wait_s if source else 0.0
        t0 = time.perf_counter()
        for _ in range(per_iter):
            training.step(*get())
        sync_device()
        wall = (time.perf_counter() - t0) / per_iter
        sync = training.sync_timer.take() / per_iter
        data = ((source.wait_s if source else 0.0) - data0) / per_iter
        worst = backend.allreduce_scalars({"step_s": wall, "sync_s": sync, "data_s": data}, op="max")
        rows.append(worst)
    if reader is not None:
        reader.close()
    step = Stats.of([r["step_s"] for r in rows])
    med = lambda k: Stats.of([r[k] for r in rows]).median  # noqa: E731
    return {"per_rank_batch": batch, "global_batch": batch * backend.size, "step_s": step.to_dict(),
            "samples_per_s": Stats.of([batch * backend.size / r["step_s"] for r in rows]).to_dict(),
            "split_s": {"data": med("data_s"), "allreduce": med("sync_s"),
                        "compute": max(0.0, step.median - med("data_s") - med("sync_s"))}}


def worker(args) -> None:
    from hpcgan.runtime import session
    from hpcgan.train.step import build_training

    backend = session.start(args.backend, args.device)
    cfg = workload_config(args.workload, ["backend=" + args.backend, f"device={args.device}", "train.d_steps=1"])
    training = build_training(cfg, backend, log=lambda *_: None)
    n = backend.size
    nodes = len(set(backend.allgather_object(backend.info.node_rank)))
    out = {"ranks": n, "nodes": nodes, "backend": backend.describe(), "threads_per_rank": torch.get_num_threads(),
           "device": str(training.device), "runs": []}
    iters = tuple(int(x) for x in args.iters.split(","))
    for mode in args.modes.split(","):
        per_rank = args.batch if mode == "weak" else args.batch // n
        for data in args.data_kinds.split(","):
            path = args.data if data == "real" else None
            r = measure(training, backend, per_rank, path, iters)
            r.update(mode=mode, data=data)
            out["runs"].append(r)
            if backend.is_root:
                log(f"  {args.backend} x{n} {mode:<6} {data:<9} batch {per_rank:>4}/rank: "
                    f"{r['samples_per_s']['median']:9.2f} samples/s  step {r['step_s']['median'] * 1e3:8.1f} ms "
                    f"(data {r['split_s']['data'] * 1e3:.1f}, allreduce {r['split_s']['allreduce'] * 1e3:.1f}, "
                    f"compute {r['split_s']['compute'] * 1e3:.1f})")
    if backend.is_root:
        Path(args.part).write_text(json.dumps(out))
    session.stop()


# --- driver ---------------------------------------------------------------------------

def make_dataset(workload: str, n: int, path: Path) -> None:
    """Write the real-data file with the data helper's CLI (the same code users run)."""
    cfg = workload_config(workload)
    cmd = [sys.executable, "-m", "hpcgan.cli.main", "data", "synth", cfg.workload, "--n", str(n), "--out", str(path),
           "--seed", "1"]
    if cfg.workload == "crf":
        cmd += ["--size", str(cfg.crf.size), str(cfg.crf.size)]
    elif cfg.workload == "lhc":
        cmd += ["--layers", str(cfg.lhc.n_layers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM_WORLD_", "PMI_", "PMIX_"))}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"writing the real-data file failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")


def efficiencies(runs: list[dict]) -> list[dict]:
    """rate(N) / (N * rate(1)) per (workload, backend, mode, data)."""
    base = {(r["workload"], r["backend"], r["mode"], r["data"]): r["samples_per_s"]["median"]
            for r in runs if r["ranks"] == 1}
    out = []
    for r in runs:
        b = base.get((r["workload"], r["backend"], r["mode"], r["data"]))
        if b:
            out.append({k: r[k] for k in ("workload", "backend", "mode", "data", "ranks", "oversubscribed")}
                       | {"efficiency": r["samples_per_s"]["median"] / (r["ranks"] * b),
                          "samples_per_s": r["samples_per_s"]["median"]})
    return out


def run_benchmark(workloads: Sequence[str], backends: Sequence[str], ranks: Sequence[int], modes: Sequence[str],
                  data_kinds: Sequence[str], data: str, batch: int, iters: str, device: str, out: Path,
                  timeout: float, launcher: str = "mpirun") -> dict:
    env = environment()
    runs: list[dict] = []
    skipped: list[str] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".scaling-work-", dir=out.parent) as tmp:
        for w in workloads:
            kinds = list(data_kinds)
            path = data
            if "real" in kinds and not path:
                path = str(Path(tmp) / f"{w}.h5")
                try:
                    log(f"scaling: writing {DATA_SAMPLES[w]} {w} samples to {path} ...")
                    make_dataset(w, DATA_SAMPLES[w], Path(path))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    skipped.append(f"{w}: real data skipped ({str(e).splitlines()[0]})")
                    log(skipped[-1])
                    kinds.remove("real")
            b = batch or workload_config(w).train.batch_size
            if "strong" in modes and b % max(ranks):
                from hpcgan.errors import UserError

                raise UserError(f"--batch {b}: strong scaling splits it over up to {max(ranks)} ranks; "
                                f"expected a multiple of {max(ranks)}")
            for be in backends:
                for n in ranks:
                    part = Path(tmp) / f"{w}-{be}-{n}.json"
                    # srun spreads the ranks over the job's nodes: this node's core count says nothing then.
                    over = launcher == "mpirun" and oversubscribed(n)
                    log(f"scaling: {w} {be} x {n} rank(s) by {launcher}{' (oversubscribed)' if over else ''} ...")
                    args = ["--worker", "--workload", w, "--backend", be, "--device", device, "--batch", str(b),
                            "--modes", ",".join(modes if n > 1 else ["weak"]), "--data-kinds", ",".join(kinds),
                            "--iters", iters, "--part", str(part)] + (["--data", path] if "real" in kinds else [])
                    run_ranks(n, "scaling", args, timeout=timeout, launcher=launcher)
                    part_doc = json.loads(part.read_text())
                    for r in part_doc["runs"]:
                        r.update(workload=w, backend=be, ranks=n, nodes=part_doc["nodes"],
                                 oversubscribed=over,
                                 threads_per_rank=part_doc["threads_per_rank"], backend_detail=part_doc["backend"])
                        runs.append(r)
                        if n == 1 and "strong" in modes:  # one rank: weak and strong are the same run
                            runs.append(dict(r, mode="strong"))
    results = {"runs": runs, "efficiency": efficiencies(runs), "skipped": skipped}
    params = {"workloads": list(workloads), "backends": list(backends), "ranks": list(ranks), "modes": list(modes),
              "data_kinds": list(data_kinds), "data": data or "written by `hpcgan data synth` per workload",
              "batch": batch or "preset's train.batch_size", "iters": iters, "device": device, "launcher": launcher,
              "cores": os.cpu_count(), "efficiency": "rate(N) / (N * rate(1))"}
    write_result(out, "scaling", params, results, env=env)
    log(f"wrote {out}")
    return results


def summary(path: Path) -> str:
    doc = read_result(path, "scaling")
    lines = ["| workload | backend | mode | data | ranks | per-rank batch | samples/s | efficiency | step ms "
             "| data ms | allreduce ms | compute ms |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    eff = {(e["workload"], e["backend"], e["mode"], e["data"], e["ranks"]): e["efficiency"]
           for e in doc["results"]["efficiency"]}
    for r in doc["results"]["runs"]:
        e = eff.get((r["workload"], r["backend"], r["mode"], r["data"], r["ranks"]))
        s = r["split_s"]
        lines.append(f"| {r['workload']} | {r['backend']} | {r['mode']} | {r['data']} | {r['ranks']}"
                     f"{' (oversub.)' if r['oversubscribed'] else ''} | {r['per_rank_batch']} | "
                     f"{r['samples_per_s']['median']:.2f} | {'' if e is None else f'{e:.2f}'} | "
                     f"{r['step_s']['median'] * 1e3:.1f} | {s['data'] * 1e3:.1f} | {s['allreduce'] * 1e3:.1f} | "
                     f"{s['compute'] * 1e3:.1f} |")
    lines += doc["results"].get("skipped", [])
    return "\n".join(lines)


def _csv(text: str, allowed: Sequence[str], flag: str) -> list[str]:
    from hpcgan.errors import UserError

    items = [x for x in text.split(",") if x]
    if not items or any(x not in allowed for x in items):
        raise UserError(f"{flag} {text!r}: expected a comma-separated subset of {', '.join(allowed)}")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpcgan bench scaling", description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default="lhc,crf-small", help=f"subset of {','.join(WORKLOADS)}")
    p.add_argument("--backends", default=",".join(BACKENDS), help="horovod,torch")
    p.add_argument("--ranks", default="1,2,4", help="rank counts (1 is needed for the efficiencies)")
    p.add_argument("--modes", default="weak,strong")
    p.add_argument("--data-kinds", default="synthetic,real", help="synthetic,real")
    p.add_argument("--data", default="", help="HDF5 file/glob for the real-data rows (default: written per workload)")
    p.add_argument("--batch", type=int, default=0, help="weak: per-rank batch; strong: global batch (default: preset's)")
    p.add_argument("--iters", default=",".join(map(str, ITERS)), help="warm-up steps, timed iterations, steps per iteration")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "scaling.json")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per launch")
    p.add_argument("--launcher", default="mpirun", choices=LAUNCHERS,
                   help="how to start each rank count: mpirun, or srun inside a SLURM job (jobs/bench_scaling.sh)")
    p.add_argument("--summary", action="store_true", help="print the table of an existing --out file and exit")
    # worker-only
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--part", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hpcgan.errors import UserError

    args = build_parser().parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.summary:
        print(summary(args.out))
        return 0
    try:
        ranks = sorted({int(x) for x in args.ranks.split(",") if x})
        it = [int(x) for x in args.iters.split(",")]
    except ValueError:
        raise UserError(f"--ranks {args.ranks!r} / --iters {args.iters!r}: expected comma-separated integers") from None
    if not ranks or ranks[0] != 1:
        raise UserError(f"--ranks {args.ranks!r}: must include 1 (efficiency is relative to one rank)")
    if len(it) != 3 or it[0] < 0 or min(it[1:]) < 1:
        raise UserError(f"--iters {args.iters!r}: expected WARMUP,ITERS,STEPS_PER_ITER (e.g. 3,5,4)")
    run_benchmark(_csv(args.workloads, WORKLOADS, "--workloads"), _csv(args.backends, BACKENDS, "--backends"), ranks,
                  _csv(args.modes, ("weak", "strong"), "--modes"),
                  _csv(args.data_kinds, ("synthetic", "real"), "--data-kinds"), args.data, args.batch, args.iters,
                  args.device, args.out, args.timeout, args.launcher)
    print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
