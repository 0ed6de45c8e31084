"""`hpcgan generate --checkpoint RUN_OR_CKPT --data IN.h5 --out OUT.h5`: batched generation over all ranks."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np

from hpcgan.data.format import DatasetWriter
from hpcgan.errors import UserError
from hpcgan.runtime import session
from hpcgan.train.inference import generate_range, load_generator, open_for_inference, rank_range


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="run a trained generator over a dataset, write its outputs to HDF5")
    p.add_argument("--checkpoint", required=True, help="checkpoint file or run directory (newest checkpoint)")
    p.add_argument("--config", help="preset or YAML the checkpoint must match (workload check); optional")
    p.add_argument("--data", required=True, help="input HDF5 file or glob (e.g. measured hits)")
    p.add_argument("--out", required=True, help="output HDF5 (inputs + generated targets, hpcgan data format)")
    p.add_argument("--batch-size", type=int, default=1024)
    add_weight_args(p)
    p.add_argument("--backend", default="auto", choices=["auto", "horovod", "torch", "local"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=run)


def add_weight_args(p: argparse.ArgumentParser, which_flag: str = "--which") -> None:
    """Which checkpoint of a run directory and which of its generators (generate, evaluate, export)."""
    p.add_argument(which_flag, dest="which", default="best", choices=["best", "last"],
                   help="for a run directory: checkpoints/best.pt, the best validation value (default, when the "
                        "run kept one), or the newest checkpoint")
    p.add_argument("--weights", default="ema", choices=["ema", "raw"],
                   help="the generator's EMA copy when the run kept one (default), or its raw weights")


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: expected a positive integer")
    backend = session.start(args.backend, args.device)
    cfg, workload, G, ckpt_path, used = load_generator(args.checkpoint, backend, args.overrides, args.which,
                                                       args.weights)
    if args.config:
        from hpcgan.config import load_config

        want = load_config(args.config).workload
        if want != cfg.workload:
            raise UserError(f"--config {args.config}: workload {want!r}, but {ckpt_path} was trained for {cfg.workload!r}")
    reader = open_for_inference(cfg, args.data, backend)
    workload.check_dataset(reader.attrs, args.data)
    out = Path(args.out)
    part = out.with_name(f".{out.name}.part{backend.rank:05d}")
    start, stop = rank_range(reader.num_samples, backend.rank, backend.size)

    with session.rank_local_errors():
        t0 = time.perf_counter()
        model_s = 0.0
        with h5py.File(part, "w") as f:
            d = f.create_dataset("fake", (stop - start, *reader.target_shape), dtype="float32")
            for first, fake, dt, _, _ in generate_range(cfg, workload, G, reader, start, stop, args.batch_size, backend.device):
                d[first - start:first - start + len(fake)] = fake
                model_s += dt
        wall = time.perf_counter() - t0
        times = backend.allgather_object((stop - start, model_s, wall))

        def merge_and_report() -> None:
            merge(reader, out, [out.with_name(f".{out.name}.part{r:05d}") for r in range(backend.size)],
                  provenance={"generator": "hpcgan generate", "checkpoint": str(ckpt_path), "data": args.data,
                              "ranks": backend.size, "device": str(backend.device)}, workload=cfg.workload)
            n = sum(t[0] for t in times)
            rate_model = n / max(max(t[1] for t in times), 1e-12)
            rate_wall = n / max(max(t[2] for t in times), 1e-12)
            unit = "tracks" if cfg.workload.startswith("lhc") else "samples"
            print(f"generated {n} {unit} on {backend.size} rank(s) ({backend.device}): "
                  f"{rate_model:,.0f} {unit}/s in the generator, {rate_wall:,.0f} {unit}/s end to end (read + write)")
            print(json.dumps({"samples": n, "ranks": backend.size, "rate_model_per_s": rate_model,
                              "rate_end_to_end_per_s": rate_wall, "out": str(out)}))

        # Merging rewrites every sample on rank 0: the others wait in short polls, not in one timed barrier.
        backend.run_on_root(merge_and_report if backend.is_root else None)
    session.stop()
    return 0


def merge(reader, out: Path, parts: list[Path], provenance: dict, workload: str) -> None:
    """Rank 0 streams the source inputs and meta and every rank's generated part into one dataset file."""
    attrs = reader.attrs
    meta_spec = dict(attrs.get("meta") or {})
    meta = {name: reader.read_meta(name) for name in meta_spec}
    with DatasetWriter(out, workload, reader.num_samples, reader.input_shape, reader.target_shape,
                       attrs["input_channels"], attrs["target_channels"], meta_spec=meta_spec,
                       provenance=provenance) as w:
        offset = 0
        for part in parts:
            with h5py.File(part, "r") as f:
                fake = f["fake"]
                for b in range(0, fake.shape[0], 4096):
                    idx = np.arange(offset + b, offset + min(b + 4096, fake.shape[0]))
                    x, _ = reader.read_samples(idx, normalize=False)
                    w.write(x, fake[b:b + len(idx)], {k: v[idx] for k, v in meta.items()})
                offset += fake.shape[0]
    for part in parts:
        part.unlink(missing_ok=True)
