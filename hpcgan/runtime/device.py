"""Pick the device for this rank and size its CPU thread pool."""
from __future__ import annotations

import os

import torch

from hpcgan.errors import UserError
from hpcgan.runtime.env import ProcessInfo


def cores_per_rank(info: ProcessInfo) -> int:
    """Cores this rank may use: SLURM's cpus-per-task, else the affinity mask shared by local ranks."""
    if os.environ.get("SLURM_CPUS_PER_TASK"):
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    try:
        ncores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        ncores = os.cpu_count() or 1
    return max(1, ncores // max(info.local_size, 1))


def select_device(info: ProcessInfo, prefer: str = "auto", set_threads: bool = True) -> torch.device:
    """GPU local_rank % n_gpus when CUDA is there (or asked for), else CPU with one thread per owned core."""
    if prefer not in ("auto", "cpu", "cuda"):
        raise UserError(f"device {prefer!r}: expected auto, cpu or cuda")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for, but torch sees no CUDA device (check the torch build and CUDA_VISIBLE_DEVICES)")
    if prefer != "cpu" and torch.cuda.is_available():
        device = torch.device("cuda", info.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    if set_threads and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(cores_per_rank(info))
    return torch.device("cpu")
