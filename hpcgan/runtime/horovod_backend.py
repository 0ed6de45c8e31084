"""Horovod over MPI (mpirun, srun) or Gloo (horovodrun --gloo).

Fusion threshold, cycle time, timeline and stall checks come from Horovod's
own environment variables (HOROVOD_FUSION_THRESHOLD, HOROVOD_CYCLE_TIME,
HOROVOD_TIMELINE, HOROVOD_STALL_CHECK_TIME_SECONDS, ...), passed through untouched.
"""
from __future__ import annotations

import dataclasses
import sys

import torch

from hpcgan.runtime.backend import Backend
from hpcgan.runtime.env import ProcessInfo


class HorovodBackend(Backend):
    name = "horovod"

    def __init__(self, info: ProcessInfo, device: torch.device):
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        info = dataclasses.replace(
            info, rank=hvd.rank(), size=hvd.size(), local_rank=hvd.local_rank(), local_size=hvd.local_size(),
            node_rank=hvd.cross_rank(), num_nodes=hvd.cross_size())
        super().__init__(info, device)
        self._ops = {"sum": hvd.Sum, "mean": hvd.Average, "max": hvd.Max}

    compressions = ("none", "fp16")  # Horovod 0.28's CPU/MPI ops have no bfloat16

    def allreduce_(self, tensor, op="mean", name=""):
        return self.hvd.allreduce_(tensor, op=self._ops[op], name=name or None)

    def allreduce_async_(self, tensor, op="mean", name=""):
        return self.hvd.allreduce_async_(tensor, op=self._ops[op], name=name or None)

    def wait(self, handle):
        if handle is not None:
            self.hvd.synchronize(handle)

    def broadcast_(self, tensor, root=0, name=""):
        return self.hvd.broadcast_(tensor, root_rank=root, name=name or None)

    def allgather(self, tensor, name=""):
        return self.hvd.allgather(tensor, name=name or None)

    # Horovod names these collectives after type(obj) unless told otherwise, so a root sending a dict
    # while the others pass None (the usual pattern) would wait on mismatched names forever.
    def broadcast_object(self, obj, root=0):
        return self.hvd.broadcast_object(obj, root_rank=root, name="hpcgan.broadcast_object")

    def allgather_object(self, obj):
        return self.hvd.allgather_object(obj, name="hpcgan.allgather_object")

    def barrier(self):
        self.hvd.barrier()

    def abort(self, code=1, reason=""):
        """MPI_Abort when Horovod runs over MPI (srun may not end a step whose task merely exits)."""
        if self.hvd.mpi_enabled():
            try:  # Horovod initialised MPI itself; let mpi4py attach to it without init/finalize.
                import mpi4py

                mpi4py.rc.initialize = False
                mpi4py.rc.finalize = False
                from mpi4py import MPI  # noqa: F401  (makes backend._mpi_abort find it)
            except Exception:
                pass
        super().abort(code, reason)

    def convert_sync_batchnorm(self, module):
        """Swap every BatchNorm for hvd.SyncBatchNorm, keeping its weights and statistics."""
        for child_name, child in module.named_children():
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                sync = self.hvd.SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                              child.track_running_stats)
                sync.load_state_dict(child.state_dict())
                setattr(module, child_name, sync)
            else:
                self.convert_sync_batchnorm(child)
        return module

    def describe(self):
        controller = "mpi" if self.hvd.mpi_enabled() and self.hvd.mpi_built() else "gloo"
        return f"horovod {self.hvd.__version__ if hasattr(self.hvd, '__version__') else ''} ({controller})".replace("  ", " ")

    def _to_comm_device(self, t):
        return t.to(self.device) if self.device.type == "cuda" else t

    def shutdown(self):
        try:
            self.hvd.shutdown()
        except Exception as e:  # shutting down after an error must not mask it
            print(f"horovod shutdown: {e}", file=sys.stderr)
