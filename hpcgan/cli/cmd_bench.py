"""`hpcgan bench allreduce|throughput|scaling|projection|plot|io|lhc-rate|gpu|rank-costs [options]`: run a benchmark.

The benchmarks live in the repository's top-level `benchmarks/` package, not
inside `hpcgan` (they launch mpirun, write results/, and are tools for the
engineer rather than library code). This command finds that folder next to the
`hpcgan` package (an editable install, the normal case on a cluster checkout)
or at $HPCGAN_BENCHMARKS (the folder's path), puts its parent on sys.path and
calls `benchmarks.<name>.main(argv)` with the remaining arguments, so
`hpcgan bench scaling --help` shows the benchmark's own options.
A module without `main` is run as a script (runpy, __name__ == "__main__").
"""
from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
from pathlib import Path

from hpcgan.errors import UserError

BENCHMARKS = {
    "allreduce": "allreduce",
    "throughput": "throughput",
    "scaling": "scaling",
    "projection": "projection",
    "plot": "plot",
    "io": "io",
    "lhc-rate": "lhc_rate",
    "gpu": "gpu_check",
    "rank-costs": "rank_costs",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: allreduce, throughput, scaling, projection, plot, io, lhc-rate, gpu, "
                                     "rank-costs",
                       description=__doc__.splitlines()[0], add_help=True)
    p.add_argument("name", choices=list(BENCHMARKS), help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of that benchmark (see hpcgan bench NAME --help)")
    p.set_defaults(func=run)


def benchmarks_dir() -> Path:
    """The benchmarks/ folder: $HPCGAN_BENCHMARKS, else next to the installed hpcgan package."""
    env = os.environ.get("HPCGAN_BENCHMARKS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "benchmarks")
    for c in candidates:
        if (c / "__init__.py").is_file() and (c / "common.py").is_file():
            return c.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise UserError(f"benchmarks folder not found (looked at {where}); run from a source checkout installed with "
                    "`pip install -e .`, or set HPCGAN_BENCHMARKS=/path/to/hpcgan/benchmarks")


def run(args: argparse.Namespace) -> int:
    folder = benchmarks_dir()
    module_name = BENCHMARKS[args.name]
    if not (folder / f"{module_name}.py").is_file():
        raise UserError(f"benchmark {args.name!r}: {folder / (module_name + '.py')} does not exist in this checkout")
    root = str(folder.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    # Ranks launched by the benchmark drivers import `benchmarks.*` too.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")]))
    argv = list(args.args)
    module = importlib.import_module(f"benchmarks.{module_name}")
    if hasattr(module, "main"):
        return int(module.main(argv) or 0)
    old = sys.argv
    sys.argv = [str(folder / f"{module_name}.py"), *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    return 0
