"""`mpirun -np 2 python slow_root_worker.py BACKEND MODE SHARED_DIR` (test_multirank.py): rank 0 spends
SLOW_S seconds in file work, longer than the collective timeout (torch) or stall shutdown (Horovod) the test
sets. MODE poll: Backend.run_on_root, the job carries on. MODE barrier: the others wait in one barrier, the
way checkpoints were written before, and the job fails (the control that shows the timeout is real)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from hpcgan.runtime import session

SLOW_S = 8.0


def main() -> None:
    backend_name, mode, shared = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    B = session.start(backend_name, "cpu")
    marker = shared / "written"

    def work() -> None:
        time.sleep(SLOW_S)
        marker.write_text("checkpoint")

    B.barrier()  # both ranks are up before the clock starts
    if mode == "poll":
        B.run_on_root(work if B.is_root else None)
    else:
        if B.is_root:
            work()
        B.barrier()
    assert marker.exists(), f"rank {B.rank} left before rank 0's work was done"
    total = B.allreduce(torch.tensor([1.0]), op="sum", name="after")
    print(f"rank {B.rank}: carried on after rank 0's {SLOW_S:.0f} s of work ({int(total.item())} ranks)", flush=True)
    session.stop()


if __name__ == "__main__":
    main()
