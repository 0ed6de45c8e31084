"""torch.distributed: gloo on CPU, nccl on GPU, rendezvous from the launcher's environment."""
from __future__ import annotations

import datetime
import gc
import os
import socket

import torch
import torch.distributed as dist

from hpcgan.errors import UserError
from hpcgan.runtime.backend import Backend
from hpcgan.runtime.env import ProcessInfo, expand_nodelist

DEFAULT_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def rendezvous(info: ProcessInfo) -> tuple[str, int]:
    """MASTER_ADDR/PORT: explicit variables, else rank 0's host over MPI, else the SLURM node list."""
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if info.size == 1:  # nobody to meet: a fixed port would collide with any other job on this host
        return "127.0.0.1", _free_port()
    if info.launcher in ("openmpi", "pmi"):
        from mpi4py import MPI

        addr = MPI.COMM_WORLD.bcast((socket.gethostname() if info.num_nodes > 1 else "127.0.0.1", _free_port())
                                    if info.rank == 0 else None, root=0)
        return addr
    if info.launcher == "slurm":
        hosts = expand_nodelist(os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", ""))
        port = slurm_rendezvous_port(int(os.environ.get("SLURM_JOB_ID", "0") or 0),
                                     int(os.environ.get("SLURM_STEP_ID", "0") or 0))
        return (hosts[0] if hosts else "127.0.0.1"), int(os.environ.get("MASTER_PORT", port))
    return os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", 29500))


def slurm_rendezvous_port(job_id: int, step_id: int) -> int:
    """A port in [20000, 60000) from (job, step): (job, step) and (job + k, 0) never meet for steps below 100
    (the old sum job % 20000 + step % 100 made job J step k and job J + k step 0 share one); equal ports need
    jobs 400 ids apart with the same step on the same first node."""
    return 20000 + (job_id * 100 + step_id % 100) % 40000


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, info: ProcessInfo, device: torch.device):
        super().__init__(info, device)
        if not dist.is_available():
            raise UserError("backend 'torch' asked for, but this torch build has no torch.distributed")
        self.pg_backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            addr, port = rendezvous(info)
            timeout = datetime.timedelta(seconds=float(os.environ.get("HPCGAN_COLLECTIVE_TIMEOUT", DEFAULT_TIMEOUT_S)))
            dist.init_process_group(self.pg_backend, init_method=f"tcp://{addr}:{port}", rank=info.rank,
                                    world_size=info.size, timeout=timeout)

    def _comm(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device) if self.pg_backend == "nccl" else t.cpu()

    def allreduce_(self, tensor, op="mean", name=""):
        work = self._comm(tensor)
        dist.all_reduce(work, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        if op == "mean":
            work.div_(self.size)
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def allreduce_async_(self, tensor, op="mean", name=""):
        if self._comm(tensor) is not tensor:  # needs a copy to the communication device: done at once
            return super().allreduce_async_(tensor, op, name)
        work = dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, async_op=True)
        return work, tensor, op

    def wait(self, handle):
        if handle is None:
            return
        work, tensor, op = handle
        work.wait()
        if op == "mean":
            tensor.div_(self.size)

    def broadcast_(self, tensor, root=0, name=""):
        work = self._comm(tensor)
        dist.broadcast(work, src=root)
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def allgather(self, tensor, name=""):
        t = self._comm(tensor.contiguous())
        n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.size)]
        dist.all_gather(sizes, n)
        sizes = [int(s.item()) for s in sizes]
        padded = torch.zeros((max(sizes),) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[: t.shape[0]] = t
        out = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(out, padded)
        return torch.cat([o[:s] for o, s in zip(out, sizes)]).to(tensor.device)

    def broadcast_object(self, obj, root=0):
        box = [obj]
        dist.broadcast_object_list(box, src=root, device=self.device if self.pg_backend == "nccl" else None)
        return box[0]

    def allgather_object(self, obj):
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        dist.barrier()

    def convert_sync_batchnorm(self, module):
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)

    def describe(self):
        return f"torch.distributed ({self.pg_backend})"

    def _to_comm_device(self, t):
        return self._comm(t)

    def shutdown(self):
        if dist.is_initialized():
            dist.destroy_process_group()
        # Drop the last Python references to tensors gloo's worker threads may still hold, here on the main
        # thread: a worker releasing one while the interpreter finalizes aborts the process (seen 1 in 12).
        gc.collect()
