"""`hpcgan data synth | convert | stats | inspect | validate`: make, convert and check datasets.

synth and stats run in parallel when launched under mpirun/srun: every rank
does its share, and failures are agreed on collectively (Backend.agree: rank 0
reports, every rank exits 2) so no rank is left waiting in a collective.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from hpcgan.errors import UserError

SYNTH_WORKLOADS = ("crf", "lhc", "lhc-fastsim", "galaxy")
CONVERTERS = {"crf-npz": "hpcgan.workloads.crf.convert_npz", "trackml": "hpcgan.workloads.lhc.convert_trackml",
              "galaxy-fits": "hpcgan.workloads.galaxy.convert_fits"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthesise, convert, check and describe HDF5 datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    s = dsub.add_parser("synth", help="write a synthetic dataset (parallel over MPI ranks)")
    s.add_argument("workload", help="a registered workload (crf, lhc, lhc-fastsim, galaxy, ...: workloads/registry.py)")
    s.add_argument("--n", type=int, required=True, help="number of samples")
    s.add_argument("--out", required=True, help="output .h5 (with several ranks: STEM-00000-of-0000K.h5 ...)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size (crf, galaxy)")
    s.add_argument("--layers", type=int, help="tracker layers (lhc)")
    s.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="generator option (repeatable)")
    s.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    s.add_argument("--backend", default="auto", choices=["auto", "horovod", "torch", "local"])
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=run_synth)

    c = dsub.add_parser("convert", help="convert a real dataset (crf-npz: imgs/+metos/ npz; trackml: event CSVs; galaxy-fits: g/r/i FITS cutouts)")
    c.add_argument("format", help="a registered real-data format (crf-npz, trackml, galaxy-fits, ...)")
    c.add_argument("src", help="source folder")
    c.add_argument("--out", required=True)
    c.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="converter option (repeatable)")
    c.add_argument("--backend", default="auto", choices=["auto", "horovod", "torch", "local"])
    c.set_defaults(func=run_convert)

    st = dsub.add_parser("stats", help="per-channel mean/std/min/max (parallel over ranks) into the file attributes")
    st.add_argument("path", help="file or glob (stats are stored per file)")
    st.add_argument("--backend", default="auto", choices=["auto", "horovod", "torch", "local"])
    st.set_defaults(func=run_stats)

    i = dsub.add_parser("inspect", help="schema, shapes, dtypes, chunking, stats, provenance")
    i.add_argument("path", help="file or glob")
    i.add_argument("--plot", metavar="OUT.png", help="also draw one sample")
    i.add_argument("--sample", type=int, default=0, help="sample index for --plot")
    i.set_defaults(func=run_inspect)

    v = dsub.add_parser("validate", help="full check of every file (attributes, shapes, chunking, finite values)")
    v.add_argument("path", help="file or glob")
    v.set_defaults(func=run_validate)


def parse_opts(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--opt {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v) if v else ""
    return out


class BackendComm:
    """hpcgan.data.stats.Comm on top of a runtime Backend (float64 tensors, CPU)."""

    def __init__(self, backend):
        self.backend, self.rank, self.size = backend, backend.rank, backend.size

    def agree(self, fn: Callable[[], Any]) -> Any:
        return self.backend.agree(fn)

    def allreduce(self, x: np.ndarray, op: str) -> np.ndarray:
        import torch

        if self.size == 1:
            return x
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
        return self.backend.allreduce(t, op=op).cpu().numpy()


def _start(name: str):
    from hpcgan.runtime import session

    return session.start(name, "cpu")


def _stop() -> None:
    from hpcgan.runtime import session

    session.stop()


# --- synth -------------------------------------------------------------------------

def shard_paths(out: str, files: int) -> list[str]:
    """PATH for one file, else STEM-0000r-of-0000K.h5 next to it."""
    if files == 1:
        return [out]
    p = Path(out)
    stem, suffix = (p.stem, p.suffix) if p.suffix else (p.name, ".h5")
    return [str(p.with_name(f"{stem}-{r:05d}-of-{files:05d}{suffix}")) for r in range(files)]


def synth_ranges(n: int, size: int, block: int) -> list[tuple[int, int]]:
    """Block-aligned [start, stop) per output file: min(size, blocks) files, blocks split evenly."""
    blocks = -(-n // block)
    files = max(1, min(size, blocks))
    return [(min(n, blocks * r // files * block), min(n, blocks * (r + 1) // files * block)) for r in range(files)]


def run_synth(args: argparse.Namespace) -> int:
    from hpcgan.data.format import SYNTH_BLOCK, DatasetWriter

    if args.n < 1:
        raise UserError(f"--n {args.n}: expected a positive number of samples")
    opts = parse_opts(args.opt)
    if args.size is not None:
        opts["size"] = tuple(args.size)
    if args.layers is not None:
        opts["layers"] = args.layers
    from hpcgan.workloads.registry import generator

    module = generator(args.workload)
    backend = _start(args.backend)
    try:
        rank, size = backend.rank, backend.size
        ranges = synth_ranges(args.n, size, SYNTH_BLOCK)
        paths = shard_paths(args.out, len(ranges))

        def work() -> tuple[str, int] | None:
            sch = module.schema(**opts)
            if rank >= len(ranges):
                return None
            start, stop = ranges[rank]
            provenance = {"generator": module.__name__, "options": opts, "seed": args.seed,
                          "n_total": args.n, "range": [start, stop], "file": rank, "files": len(ranges),
                          "synth_block": SYNTH_BLOCK, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "command": " ".join(sys.argv)}
            bar = _progress(stop - start, rank == 0 and not args.quiet, f"synth {args.workload}")
            with DatasetWriter(paths[rank], args.workload, stop - start, sch["input_shape"], sch["target_shape"],
                               sch["input_channels"], sch["target_channels"], meta_spec=sch.get("meta_spec", {}),
                               provenance=provenance, dtype=args.dtype) as w:
                for inputs, targets, meta in module.generate(start, stop - start, args.seed, **opts):
                    w.write(inputs, targets, meta)
                    bar.update(len(inputs))
            bar.close()
            return paths[rank], stop - start

        done = backend.allgather_object(backend.agree(work))
        if backend.is_root:
            for item in done:
                if item is not None:
                    print(f"wrote {item[0]} ({item[1]} samples)")
            print(f"synth {args.workload}: {args.n} samples in {len(ranges)} file(s), seed {args.seed}")
    finally:
        _stop()
    return 0


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="sample", file=sys.stderr, mininterval=1.0)


# --- convert -------------------------------------------------------------------------

def run_convert(args: argparse.Namespace) -> int:
    """Conversion runs on rank 0 (one output file); other ranks only learn whether it worked."""
    opts = parse_opts(args.opt)
    backend = _start(args.backend)
    try:
        def work() -> str | None:
            if backend.rank != 0:
                return None
            from hpcgan.workloads.registry import converter

            return converter(args.format).convert(args.src, args.out, **opts)

        out = backend.agree(work)
        if backend.is_root:
            from hpcgan.data.inspect import summary_line

            print(f"wrote {out}: {summary_line([out])}")
    finally:
        _stop()
    return 0


# --- stats -----------------------------------------------------------------------------

def run_stats(args: argparse.Namespace) -> int:
    from hpcgan.data.reader import resolve_paths
    from hpcgan.data.stats import dataset_stats, store_stats

    backend = _start(args.backend)
    try:
        paths = backend.agree(lambda: resolve_paths(args.path))
        comm = BackendComm(backend)
        for path in paths:
            result = {name: dataset_stats(path, name, comm) for name in ("inputs", "targets")}
            # Rank 0 writes once every rank has closed the file; the others learn whether it worked.
            backend.agree(lambda: store_stats(path, result["inputs"], result["targets"])
                          if backend.is_root else None)
            if backend.is_root:
                st = result["inputs"]
                print(f"{path}: stats over {st.count} values per input channel written "
                      f"(input mean range {st.mean.min():.4g}..{st.mean.max():.4g}) by {backend.size} rank(s)")
    finally:
        _stop()
    return 0


# --- inspect / validate -------------------------------------------------------------

def _is_root() -> bool:
    from hpcgan.runtime.env import detect_process

    return detect_process().rank == 0


def run_inspect(args: argparse.Namespace) -> int:
    """No collectives: every rank checks, rank 0 prints (under mpirun an error still exits 2 everywhere)."""
    from hpcgan.data.inspect import describe, nonfinite_warnings, plot_sample
    from hpcgan.data.reader import resolve_paths

    text = describe(args.path)
    if args.plot:
        out = plot_sample(args.path, args.plot, args.sample) if _is_root() else None
        text += f"\nfigure: {out}" if out else ""
    if _is_root():
        print(text)
        for line in (w for p in resolve_paths(args.path) for w in nonfinite_warnings(p)):
            print(f"hpcgan: {line}", file=sys.stderr)
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from hpcgan.data.format import validate
    from hpcgan.data.inspect import summary_line
    from hpcgan.data.reader import resolve_paths

    paths = resolve_paths(args.path)
    for p in paths:
        validate(p)
    if len(paths) > 1:  # the files must also fit together as one dataset
        from hpcgan.data.reader import ShardedReader

        ShardedReader(paths, 0, 1, 1, 0, normalize=False, check_finite="off", remainder="pad").close()
    if _is_root():
        print(f"{args.path}: valid ({summary_line(paths)})")
    return 0
