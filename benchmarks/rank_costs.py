"""Per-rank start-up costs of one rank of a simulated large job, computed in one process (no 1024 processes).

    python -m benchmarks.rank_costs [--ranks 1024] [--samples 4194304] [--batch 4] [--data-mb 256]

What one rank of `--ranks` pays that could grow with the rank count:
  epoch plan     wall time and peak traced memory (tracemalloc) to compute this rank's batch indices of one
                 epoch (the middle rank; the same code the trainer runs: ShardedReader's plan)
  resumed plan   the same for finishing an epoch begun at half the ranks (a checkpoint at N/2 resumed at N)
  RNG state      bytes of one rank's RNG state, and what a rank receives at a checkpoint: every rank's
                 (allgather, before) or nothing (its own file beside the checkpoint, after)
  finite scan    bytes a rank reads at start-up under data.check_finite=open for a --data-mb data set:
                 the whole set in preflight and again in the trainer (before), or its share once (after)
  evaluate       `hpcgan evaluate` of --eval-samples held-out samples of the `crf` preset (256x256 RGB from 44
                 channels): what every rank receives and what rank 0 reads and holds. Before: all generated
                 images (allgather) and, on rank 0, every input and target. After: measured from the
                 workload's streamed statistics (their size does not depend on the samples or the ranks)
                 plus the figures' first samples
Run it against two checkouts to compare (PYTHONPATH=OLD ... and PYTHONPATH=NEW ...); the code version is
detected from the API it finds. Prints a table, writes JSON with --out.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import tracemalloc
from pathlib import Path


def measure(fn) -> tuple[float, float]:
    """(seconds, peak MiB traced) of fn()."""
    tracemalloc.start()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dt, peak / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=1024)
    p.add_argument("--samples", type=int, default=4 * 2**20)
    p.add_argument("--batch", type=int, default=4, help="per-rank batch")
    p.add_argument("--shuffle-block", type=int, default=32)
    p.add_argument("--data-mb", type=float, default=256.0)
    p.add_argument("--eval-samples", type=int, default=20000, help="held-out samples `hpcgan evaluate` reads")
    p.add_argument("--out", default="")
    a = p.parse_args(argv)

    import torch

    from hpcgan.data import reader
    from hpcgan.train import checkpoint as ckpt

    after = hasattr(reader, "rank_plan")
    n, size, b, sb = a.samples, a.ranks, a.batch, a.shuffle_block
    rank = size // 2
    if after:
        plan = lambda: reader.rank_plan(n, rank, size, b, 1, 0, True, sb, "drop")  # noqa: E731
    else:
        plan = lambda: reader.plan_epoch(n, size, b, 1, 0, True, sb, "drop")[rank]  # noqa: E731
    rows = {"version": "after" if after else "before", "plan_s": None, "plan_mib": None}
    plan()  # warm-up (imports, first allocations)
    rows["plan_s"], rows["plan_mib"] = measure(plan)
    rows["plan_samples"] = int(len(plan()) * b)
    if after:
        old_unit = (size // 2) * b
        rows["resumed_s"], rows["resumed_mib"] = measure(lambda: reader.continued_plan(
            n, rank, size, b, 1, 0, True, sb, "drop", old_unit, old_unit * 7))
    buf = io.BytesIO()
    torch.save(ckpt.rng_state(), buf)
    rows["rng_bytes"] = len(buf.getvalue())
    rows["rng_received_bytes"] = 0 if hasattr(ckpt, "save_rank_rng") else size * rows["rng_bytes"]
    data = a.data_mb * 2**20
    rows["scan_bytes"] = data / size if hasattr(reader, "mark_scanned") else 2 * data

    rows.update(evaluate_costs(a.eval_samples, size))

    print(f"one rank of {size}: {n} samples, batch {b}, shuffle block {sb} ({rows['version']} code)")
    print(f"  epoch plan      {rows['plan_s']:.3f} s, peak {rows['plan_mib']:.1f} MiB for {rows['plan_samples']} "
          f"indices")
    if after:
        print(f"  resumed plan    {rows['resumed_s']:.3f} s, peak {rows['resumed_mib']:.1f} MiB (checkpoint at "
              f"{size // 2} ranks, resumed at {size}: once per resume)")
    print(f"  RNG state       {rows['rng_bytes'] / 1024:.1f} KiB own; received at each checkpoint and resume "
          f"{rows['rng_received_bytes'] / 2**20:.1f} MiB")
    print(f"  finite scan     {rows['scan_bytes'] / 2**20:.2f} MiB read at start-up for a {a.data_mb:g} MiB data set "
          f"({rows['scan_bytes'] * size / 2**30:.2f} GiB over all ranks)")
    print(f"  evaluate        {a.eval_samples} crf samples: every rank receives {rows['eval_received_bytes'] / 2**20:.2f}"
          f" MiB, rank 0 reads {rows['eval_root_read_bytes'] / 2**20:.2f} MiB of held-out data beyond its share")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"params": vars(a), "results": rows}, indent=1))
    return 0


def evaluate_costs(samples: int, size: int) -> dict:
    """Bytes every rank receives and rank 0 reads beyond its own share when evaluating the crf preset."""
    import numpy as np

    from hpcgan.config import load_config
    from hpcgan.workloads import get_workload

    cfg = load_config("crf", [])
    wl = get_workload(cfg)
    c = cfg.crf
    target, inputs = 4 * c.out_channels * c.size ** 2, 4 * c.in_channels * c.size ** 2
    own = -(-samples // size)
    if not hasattr(wl, "evaluation_batch"):  # before: gather every image, rank 0 reads the whole set
        return {"eval_received_bytes": samples * target, "eval_root_read_bytes": (samples - own) * (inputs + target)}
    rng = np.random.default_rng(0)
    real = rng.uniform(0, 1, (2, c.out_channels, c.size, c.size)).astype(np.float32)
    x = rng.normal(size=(2, c.in_channels, c.size, c.size)).astype(np.float32)
    stats = wl.evaluation_batch(x, real, real, {})  # rank 0 keeps its own first samples for the figures
    return {"eval_received_bytes": stats.nbytes(), "eval_root_read_bytes": 0}


if __name__ == "__main__":
    sys.exit(main())
