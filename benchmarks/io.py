"""Reader throughput against a raw read of the same bytes, at 1, 2, 4 ranks.

    python -m benchmarks.io [--ranks 1 2 4] [--n 2048] [--size 16 16] [--batch 32] [--out results/io.json]

The driver writes a CRF-shaped dataset (44 input + 3 target channels, random
values: only the bytes matter), a raw copy of its arrays (.bin), then launches
`mpirun -np K python benchmarks/io.py --worker ...` for each K. Every rank reads
its share (N/K samples) with each method, after a barrier; a pass takes as long
as its slowest rank. Methods:
  reader-shuffled     ShardedReader, seeded global shuffle (as in training), normalize off
  reader-sequential   ShardedReader, shuffle off
  reader-norm         ShardedReader, shuffled, per-channel normalisation and NaN check on (what training pays)
  reader-staged       ShardedReader, shuffled, reading the node-local copy data.stage makes (hpcgan/data/stage.py:
                      local rank 0 of each node copies and verifies the file into --stage-dir, default
                      $SLURM_TMPDIR, $TMPDIR or /tmp, before any timing; the copy's time is reported apart)
  h5py-slabs          h5py read_direct of the rank's contiguous range in slabs of `batch` samples
  fromfile            numpy.fromfile of the same byte range of the raw copy, same slabs
The page cache is warm for every method (the files are read once before timing), so
this compares software overheads, not disks (where the copy lies on the same disk as the
original, reader-staged can only match reader-shuffled: what staging buys on a cluster is a
local disk or memory instead of a shared file system). One warm-up pass, then --repeats timed
passes: mean and standard deviation. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("reader-shuffled", "reader-sequential", "reader-norm", "reader-staged", "h5py-slabs", "fromfile")


def make_data(folder: Path, n: int, size: tuple[int, int]) -> Path:
    from hpcgan.data.format import DatasetWriter

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "io-bench.h5"
    h, w = size
    if path.exists() and (folder / "inputs.bin").exists():
        from hpcgan.data.format import read_attrs

        a = read_attrs(path)
        if a["n"] == n and a["input_shape"] == (44, h, w):
            return path
    rng = np.random.default_rng(0)
    block = max(1, (32 * 2**20) // (4 * 47 * h * w))
    with DatasetWriter(path, "crf", n, (44, h, w), (3, h, w), [f"c{i}" for i in range(44)], ["r", "g", "b"],
                       provenance={"generator": "benchmarks/io.py (random values)"}) as wr, \
            open(folder / "inputs.bin", "wb") as fin, open(folder / "targets.bin", "wb") as fout:
        for a in range(0, n, block):
            b = min(n, a + block)
            x = rng.standard_normal((b - a, 44, h, w), dtype=np.float32)
            y = rng.random((b - a, 3, h, w), dtype=np.float32)
            wr.write(x, y)
            x.tofile(fin)
            y.tofile(fout)
    return path


# --- worker (one per rank, under mpirun) ------------------------------------------

def _pass(method: str, args, rank: int, size: int) -> tuple[int, int]:
    """One read of this rank's share; returns (samples, bytes)."""
    from hpcgan.data.reader import ShardedReader
    from hpcgan.data.format import h5py

    if method.startswith("reader"):
        rd = ShardedReader(args.data, rank, size, args.batch, seed=1, shuffle=method != "reader-sequential",
                           normalize=method == "reader-norm", check_finite="batch" if method == "reader-norm" else "off",
                           prefetch=4, copies=args.copies if method == "reader-staged" else None)
        samples = nbytes = 0
        for x, y, _ in rd.epoch(0):
            samples += len(x)
            nbytes += x.numel() * 4 + y.numel() * 4
        return samples, nbytes
    n = args.n // (size * args.batch) * args.batch  # the reader's share under remainder=drop
    lo, hi = rank * n, (rank + 1) * n
    if method == "h5py-slabs":
        with h5py.File(args.data, "r") as f:
            xin, xout = f["inputs"], f["targets"]
            bx = np.empty((args.batch, *xin.shape[1:]), np.float32)
            by = np.empty((args.batch, *xout.shape[1:]), np.float32)
            for a in range(lo, hi, args.batch):
                xin.read_direct(bx, np.s_[a:a + args.batch])
                xout.read_direct(by, np.s_[a:a + args.batch])
        return hi - lo, (hi - lo) * (bx[0].nbytes + by[0].nbytes)
    folder = Path(args.data).parent
    per_in, per_out = 44 * args.size[0] * args.size[1], 3 * args.size[0] * args.size[1]
    with open(folder / "inputs.bin", "rb") as fin, open(folder / "targets.bin", "rb") as fout:
        for a in range(lo, hi, args.batch):
            fin.seek(a * per_in * 4)
            fout.seek(a * per_out * 4)
            np.fromfile(fin, np.float32, args.batch * per_in)
            np.fromfile(fout, np.float32, args.batch * per_out)
    return hi - lo, (hi - lo) * 4 * (per_in + per_out)


def stage_on_each_node(comm, data: str, stage_dir: str) -> dict:
    """data.stage's copy, as the trainer makes it: local rank 0 of each node copies and verifies, the node's
    other ranks wait. Returns this node's Staged fields (copies empty, notice set, when it fell back)."""
    from mpi4py import MPI

    from hpcgan.data import stage

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    staged = None
    if node.Get_rank() == 0:
        staged = stage.stage_files([data], stage.stage_base(stage_dir, os.environ)[0])
    staged = node.bcast(staged, root=0)
    node.Free()
    return {"root": staged.root, "copies": staged.copies, "bytes": staged.nbytes, "seconds": staged.seconds,
            "notice": staged.notice}


def worker(args) -> None:
    from mpi4py import MPI

    from hpcgan.data import stage

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    staged = stage_on_each_node(comm, args.data, args.stage_dir)
    if staged["notice"]:
        print(f"rank {rank}: reader-staged reads in place: {staged['notice']}", file=sys.stderr)
    args.copies = staged["copies"]
    results = {}
    for method in METHODS:
        totals, per_rank = [], []
        for rep in range(1 + args.repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            samples, nbytes = _pass(method, args, rank, size)
            dt = time.perf_counter() - t0
            times = comm.allgather(dt)
            counts = comm.allgather((samples, nbytes))
            if rep == 0:
                continue  # warm-up
            wall = max(times)
            totals.append((sum(c[0] for c in counts) / wall, sum(c[1] for c in counts) / wall))
            per_rank.append((float(np.mean([c[0] / t for c, t in zip(counts, times)])),
                             float(np.mean([c[1] / t for c, t in zip(counts, times)]))))
        t, p = np.array(totals), np.array(per_rank)
        results[method] = {"total_samples_s": t[:, 0].mean(), "total_samples_s_std": t[:, 0].std(),
                           "total_gb_s": t[:, 1].mean() / 1e9, "rank_samples_s": p[:, 0].mean(),
                           "rank_gb_s": p[:, 1].mean() / 1e9, "samples_per_rank": counts[0][0]}
    comm.Barrier()
    stage.remove(staged["root"])  # "" on all but each node's copier
    staging = {k: staged[k] for k in ("bytes", "seconds", "notice")}
    staging["seconds_max"] = max(comm.allgather(staged["seconds"]))
    if rank == 0:
        Path(args.worker_out).write_text(json.dumps({"ranks": size, "methods": results, "staging": staging}))


# --- driver -----------------------------------------------------------------------

def table(runs: list[dict]) -> str:
    head = (f"{'ranks':>5} {'method':<18} {'samples/s/rank':>14} {'GB/s/rank':>10} {'samples/s total':>16} "
            f"{'GB/s total':>10} {'/h5py-slabs':>11} {'/fromfile':>9}")
    lines = [head, "-" * len(head)]
    for run in runs:
        m = run["methods"]
        for name in METHODS:
            r = m[name]
            lines.append(f"{run['ranks']:>5} {name:<18} {r['rank_samples_s']:>14.0f} {r['rank_gb_s']:>10.3f} "
                         f"{r['total_samples_s']:>9.0f} ±{r['total_samples_s_std']:<5.0f} {r['total_gb_s']:>10.3f} "
                         f"{r['total_samples_s'] / m['h5py-slabs']['total_samples_s']:>11.2f} "
                         f"{r['total_samples_s'] / m['fromfile']['total_samples_s']:>9.2f}")
        st = run.get("staging")
        if st:
            lines.append(f"{'':>5} staging: {st['bytes'] / 2**20:.0f} MiB copied and verified per node in "
                         f"{st['seconds_max']:.2f} s ({st['bytes'] / max(st['seconds_max'], 1e-9) / 1e9:.2f} GB/s)"
                         + (f"; fell back: {st['notice']}" if st["notice"] else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--n", type=int, default=2048, help="samples in the dataset")
    p.add_argument("--size", type=int, nargs=2, default=[16, 16], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-dir", default="results/io-data")
    p.add_argument("--out", default="results/io.json")
    p.add_argument("--keep-data", action="store_true", help="keep the generated files")
    p.add_argument("--stage-dir", default="", help="reader-staged: node-local directory to copy the dataset to "
                   "(default: $SLURM_TMPDIR, $TMPDIR or /tmp, as data.stage)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.common import environment, write_result

    env_info = environment()
    data = make_data(Path(args.data_dir), args.n, tuple(args.size))
    sample_bytes = 4 * 47 * args.size[0] * args.size[1]
    print(f"dataset {data}: {args.n} samples x {sample_bytes / 1024:.0f} KiB = {args.n * sample_bytes / 2**20:.0f} MiB, "
          f"batch {args.batch}, {os.cpu_count()} CPUs", flush=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    runs = []
    for k in args.ranks:
        out = Path(args.data_dir) / f"worker-{k}.json"
        cmd = ["mpirun", "-np", str(k), "--oversubscribe", "--bind-to", "none", sys.executable, str(Path(__file__).resolve()), "--worker",
               "--data", str(data), "--worker-out", str(out), "--n", str(args.n), "--size", *map(str, args.size),
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--stage-dir", args.stage_dir]
        t0 = time.time()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stdout, res.stderr, file=sys.stderr)
            return res.returncode
        runs.append(json.loads(out.read_text()))
        print(f"  {k} rank(s) done in {time.time() - t0:.0f}s", flush=True)
    text = table(runs)
    print(text)
    params = {"n": args.n, "size": args.size, "batch": args.batch, "repeats": args.repeats, "ranks": args.ranks,
              "sample_bytes": sample_bytes, "page_cache": "warm", "methods": list(METHODS),
              "stage_dir": args.stage_dir or "default ($SLURM_TMPDIR, $TMPDIR or /tmp)"}
    write_result(args.out, "io", params, {"runs": runs, "table": text}, env=env_info)
    print(f"wrote {args.out}")
    if not args.keep_data:
        for f in ("io-bench.h5", "inputs.bin", "targets.bin"):
            (Path(args.data_dir) / f).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
