"""One rank fails mid-run while the others wait in an allreduce; the whole job must end, non-zero.

`mpirun -np N python fault_worker.py BACKEND MODE`. After a first collective, rank 1
fails and every other rank enters an allreduce rank 1 never joins. The failing rank
also holds a non-daemon thread (like a reader's prefetch thread blocked on a full
queue), so a plain interpreter exit would wait for it forever: only the runtime's
abort ends the job. MODE:
  user    UserError inside rank_local_errors, through the CLI's error policy
  raise   RuntimeError through the CLI's error policy (hpcgan.cli.main.run_guarded)
  script  RuntimeError escaping a plain script that called session.start (excepthook)
  exit    the rank's process dies (os._exit(3)) without any Python clean-up
"""
from __future__ import annotations

import os
import sys
import threading
import time

import torch

from hpcgan.cli.main import run_guarded
from hpcgan.errors import UserError
from hpcgan.runtime import session


def body(backend_name: str, mode: str) -> int:
    backend = session.start(backend_name, "cpu")
    t = torch.ones(3)
    backend.allreduce_(t, op="sum", name="first")
    print(f"rank {backend.rank}: first allreduce {t.tolist()}", flush=True)
    if backend.rank == 1:
        stuck = threading.Event()
        threading.Thread(target=stuck.wait, name="prefetch", daemon=False).start()
        time.sleep(1.0)  # let the other ranks block in the next allreduce
        print(f"rank 1: failing at {time.time():.3f}", flush=True)
        if mode == "user":
            with session.rank_local_errors():
                raise UserError("data file shard-1.h5: truncated (injected on rank 1)")
        if mode == "exit":
            os._exit(3)
        raise RuntimeError("injected failure on rank 1")
    backend.allreduce_(t, op="sum", name="never-completes")
    print(f"rank {backend.rank}: second allreduce returned, which it must not", flush=True)
    return 0


def main() -> None:
    backend_name, mode = sys.argv[1], sys.argv[2]
    if mode == "script":
        body(backend_name, mode)
        sys.exit(0)
    sys.exit(run_guarded(lambda: body(backend_name, mode)))


if __name__ == "__main__":
    main()
