"""`hpcgan info`: versions, MPI library, backends, and what each rank sees."""
from __future__ import annotations

import argparse
import importlib
import platform
import sys

import torch

from hpcgan.runtime import available_backends, session


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, backends, and rank/size/device as detected")
    p.add_argument("--backend", default="auto", choices=["auto", "horovod", "torch", "local"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=run)


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception as e:
        return f"not available ({type(e).__name__})"


def mpi_library() -> str:
    try:
        from mpi4py import MPI

        return MPI.Get_library_version().splitlines()[0].strip()
    except Exception as e:
        return f"not available ({type(e).__name__}: {e})"


def run(args: argparse.Namespace) -> int:
    backend = session.start(args.backend, args.device)
    info = backend.info
    line = (f"rank {info.rank}/{info.size} local {info.local_rank}/{info.local_size} node {info.node_rank}/"
            f"{info.num_nodes} host {info.hostname} launcher {info.launcher} backend {backend.describe()} "
            f"device {backend.device} threads {torch.get_num_threads()}")
    # Every rank initialises MPI together (or already has through Horovod); under srun without MPI, skip it.
    query_mpi = info.launcher in ("openmpi", "pmi", "none") or backend.name == "horovod"
    mpi = mpi_library() if query_mpi else f"not queried (launcher {info.launcher}, backend {backend.name})"
    lines = backend.allgather_object(line)
    if backend.is_root:
        print(f"hpcgan {_version('hpcgan')} on Python {platform.python_version()} ({sys.executable})")
        print(f"torch {torch.__version__}  horovod {_version('horovod')}  mpi4py {_version('mpi4py')}  "
              f"h5py {_version('h5py')}  numpy {_version('numpy')}")
        print(f"MPI library: {mpi}")
        print(f"backends available: {', '.join(available_backends())}")
        cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
        print(f"CUDA devices: {', '.join(cuda) if cuda else 'none'}")
        for ln in lines:
            print(ln)
        print(f"summary: {info.size} rank(s) on {info.num_nodes} node(s), backend {backend.name}")
    session.stop()
    return 0
