"""A minimal step loop with the trainer's preemption protocol, for cluster-only tests.

Exercises the job-script side (srun flags, signals, hpcgan_finish, requeue, kill-on-bad-exit) in
seconds, without a model: each step allreduces the step number (checked), then the step-boundary
flag, exactly as the trainer does. State (the step reached) lives in RUN_DIR/state.json, written by
rank 0 on preemption, so a requeued job resumes.

    python stepper.py RUN_DIR STEPS STEP_SECONDS [--backend auto|horovod|torch]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from hpcgan.runtime import faults, session, signals


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir", type=Path)
    p.add_argument("steps", type=int)
    p.add_argument("step_seconds", type=float)
    p.add_argument("--backend", default="auto")
    a = p.parse_args()
    backend = session.start(a.backend, "cpu")
    signals.install()
    fault = faults.resolve(None)
    state_file = a.run_dir / "state.json"
    start = json.loads(state_file.read_text())["step"] if state_file.exists() else 0
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    info = backend.info
    print(f"start rank {info.rank}/{info.size} node {info.node_rank}/{info.num_nodes} local {info.local_rank} "
          f"restart {restart} step {start} time {time.time():.3f}", flush=True)
    for step in range(start, a.steps):
        time.sleep(a.step_seconds)
        total = backend.allreduce(torch.tensor([float(step)]), op="sum")
        assert total.item() == step * backend.size, (total, step)
        if fault is not None:
            print(f"rank {info.rank} step {step + 1} time {time.time():.3f}", flush=True)
            faults.maybe_inject(fault, info.rank, step + 1)
        if backend.any(signals.requested() is not None):
            if backend.is_root:
                a.run_dir.mkdir(parents=True, exist_ok=True)
                state_file.write_text(json.dumps({"step": step + 1}))
                with open(a.run_dir / "interruptions.jsonl", "a") as f:
                    f.write(json.dumps({"signal": signals.requested(), "received_at": signals.received_at(),
                                        "step": step + 1, "restart": restart, "time": time.time()}) + "\n")
            backend.barrier()
            print(f"preempted rank {info.rank} step {step + 1} time {time.time():.3f}", flush=True)
            session.stop()
            return signals.EXIT_REQUEUE
    if backend.is_root:
        a.run_dir.mkdir(parents=True, exist_ok=True)
        (a.run_dir / "done.json").write_text(json.dumps({"steps": a.steps, "time": time.time()}))
    print(f"done rank {info.rank} time {time.time():.3f}", flush=True)
    session.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
