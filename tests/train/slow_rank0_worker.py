"""`mpirun -np N python slow_rank0_worker.py WHAT SECONDS COMMAND ...`: an `hpcgan` command in which rank 0's
file work WHAT takes SECONDS longer, as on a busy parallel file system: checkpoint (each checkpoint write)
or figures (each epoch's validation figures, CRF) under `train`; merge (the output file) under `generate`;
evaluate (the science evaluation, LHC) under `evaluate`. Used by test_slow_checkpoint_mpi.py and
test_generate.py."""
from __future__ import annotations

import sys
import time

from hpcgan.cli import cmd_generate
from hpcgan.cli.main import main
from hpcgan.train import checkpoint as ckpt
from hpcgan.workloads.crf.workload import CRFWorkload
from hpcgan.workloads.lhc.workload import LHCWorkload


def slowed(fn, delay: float):
    def slow(*args, **kwargs):
        time.sleep(delay)
        return fn(*args, **kwargs)
    return slow


if __name__ == "__main__":
    what, delay = sys.argv[1], float(sys.argv[2])
    owner, name = {"checkpoint": (ckpt, "save_checkpoint"), "figures": (CRFWorkload, "write_figures"),
                   "merge": (cmd_generate, "merge"), "evaluate": (LHCWorkload, "evaluation_finish")}[what]
    setattr(owner, name, slowed(getattr(owner, name), delay))  # each runs on rank 0 only
    sys.exit(main(sys.argv[3:]))
