"""`mpirun -np N python slow_checkpoint_worker.py SECONDS train ...`: `hpcgan train` whose checkpoint writes
take SECONDS longer on rank 0, as on a busy parallel file system (test_slow_checkpoint_mpi.py)."""
from __future__ import annotations

import sys
import time

from hpcgan.cli.main import main
from hpcgan.train import checkpoint as ckpt

if __name__ == "__main__":
    delay, write = float(sys.argv[1]), ckpt.save_checkpoint

    def slow_write(*args, **kwargs):
        time.sleep(delay)
        return write(*args, **kwargs)

    ckpt.save_checkpoint = slow_write  # only rank 0 writes
    sys.exit(main(sys.argv[2:]))
