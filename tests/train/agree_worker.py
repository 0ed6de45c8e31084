"""`mpirun -np N python agree_worker.py A B`: rank 0 opens dataset A, the other ranks B, then the trainer's
dataset agreement runs under the CLI's error policy, as in `hpcgan train` (test_validation_mpi.py)."""
from __future__ import annotations

import sys

from hpcgan.cli.main import run_guarded
from hpcgan.data.reader import ShardedReader
from hpcgan.runtime import session
from hpcgan.train.agreement import agree_on_data


def body() -> int:
    backend = session.start("auto", "cpu")
    path = sys.argv[1] if backend.rank == 0 else sys.argv[2]
    with session.rank_local_errors():
        reader = ShardedReader(path, backend.rank, backend.size, 2, seed=0, check_finite="off")
        agree_on_data(backend, {"data.path": reader})
    print(f"rank {backend.rank}: datasets agree", flush=True)
    session.stop()
    return 0


if __name__ == "__main__":
    sys.exit(run_guarded(body))
