"""The communication interface every layer above runtime talks to.

Three implementations: horovod (default when importable), torch
(torch.distributed), local (one process). Model and data code never import
them; the trainer holds a Backend and calls these methods only.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import threading
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Sequence, TypeVar

import torch

from hpcgan.errors import AgreedError, UserError
from hpcgan.runtime.env import ProcessInfo

T = TypeVar("T")

# Gradient fusion buffer size: PyTorch DDP's default bucket. Large enough that latency is
# negligible on any HPC network (25 MiB takes ~2.5 ms at Aries' 10 GB/s against ~1-2 us
# latency); on the 2-core VM the CRF gradients (88.8 MiB) synced in 103-115 ms with 25 MiB
# buckets against 128-138 ms with 64 MiB (2 ranks, Horovod/MPI, 2026-11-23).
BUCKET_BYTES = 25 * 2**20


class Backend(ABC):
    """Collectives over all ranks. Every rank must call every method in the same order."""

    name: str = "base"

    def __init__(self, info: ProcessInfo, device: torch.device):
        self.info = info
        self.device = device
        self._flat: dict[str, torch.Tensor] = {}  # sync_gradients' fusion buffers, kept between steps

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def local_rank(self) -> int:
        return self.info.local_rank

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # --- primitives each backend implements --------------------------------
    @abstractmethod
    def allreduce_(self, tensor: torch.Tensor, op: str = "mean", name: str = "") -> torch.Tensor:
        """In-place allreduce; op is sum, mean or max."""

    @abstractmethod
    def broadcast_(self, tensor: torch.Tensor, root: int = 0, name: str = "") -> torch.Tensor:
        """In-place broadcast from root."""

    @abstractmethod
    def allgather(self, tensor: torch.Tensor, name: str = "") -> torch.Tensor:
        """Concatenate each rank's tensor along dim 0 (sizes along dim 0 may differ)."""

    @abstractmethod
    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Picklable object from root to all."""

    @abstractmethod
    def allgather_object(self, obj: Any) -> list:
        """One picklable object per rank, in rank order."""

    @abstractmethod
    def barrier(self) -> None: ...

    def abort(self, code: int = 1, reason: str = "") -> None:
        """End every rank now (no collective), e.g. after an error on this rank only."""
        if reason:
            print(f"[rank {self.rank}] aborting job: {reason}", file=sys.stderr, flush=True)
        sys.stderr.flush()
        sys.stdout.flush()
        _mpi_abort(code)
        os._exit(code)

    def shutdown(self) -> None:
        pass

    # --- built on the primitives ----------------------------------------
    def allreduce(self, tensor: torch.Tensor, op: str = "mean", name: str = "") -> torch.Tensor:
        return self.allreduce_(tensor.clone(), op=op, name=name)

    def allreduce_scalars(self, values: dict[str, float], op: str = "mean") -> dict[str, float]:
        """Reduce a dict of Python numbers in one collective (for logging)."""
        if self.size == 1 or not values:
            return {k: float(v) for k, v in values.items()}
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        t = self.allreduce_(self._to_comm_device(t), op=op, name="scalars").cpu()
        return dict(zip(keys, t.tolist()))

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank (so ranks never disagree)."""
        if self.size == 1:
            return bool(flag)
        t = self._to_comm_device(torch.tensor([1.0 if flag else 0.0]))
        return bool(self.allreduce_(t, op="max", name="flag").item() > 0)

    def agree(self, check: Callable[[], T]) -> T:
        """Run `check` (no collective inside) on every rank, then agree on its outcome in one allgather.

        A UserError on any rank becomes an AgreedError on every rank, so the job can end
        cleanly in step (rank 0 reports, no abort) whether the error hit all ranks or one.
        Any other exception is re-raised on its own rank (a bug: the CLI aborts the job).
        """
        result, error, bug = None, None, None
        try:
            result = check()
        except UserError as e:
            error = str(e)
        except Exception as e:
            error, bug = f"{type(e).__name__}: {e}", e
        errors = self.allgather_object(error) if self.size > 1 else [error]
        if bug is not None:
            raise bug
        ranks: dict[str, list[int]] = {}
        for r, msg in enumerate(errors):
            if msg is not None:
                ranks.setdefault(msg, []).append(r)
        if ranks:
            raise AgreedError([msg if len(rs) == self.size else f"{msg} (rank {', '.join(map(str, rs))} of {self.size})"
                               for msg, rs in ranks.items()])
        return result

    def allreduce_async_(self, tensor: torch.Tensor, op: str = "mean", name: str = "") -> Any:
        """Start an in-place allreduce and return a handle for `wait` (here: done at once, handle None)."""
        self.allreduce_(tensor, op=op, name=name)
        return None

    def wait(self, handle: Any) -> None:
        """Finish an allreduce started by allreduce_async_."""

    # train.grad_compression values this backend's allreduce can carry.
    compressions: tuple[str, ...] = ("none", "fp16", "bf16")

    def supports_compression(self, name: str) -> bool:
        return name in self.compressions

    def sync_gradients(self, params: Iterable[torch.nn.Parameter], group: str = "grads",
                       compression: torch.dtype | None = None) -> None:
        """Average the gradients of params over ranks, fused into few flat buffers."""
        self.sync_gradient_groups({group: params}, compression)

    def sync_gradient_groups(self, groups: dict[str, Iterable[torch.nn.Parameter]],
                             compression: torch.dtype | None = None) -> None:
        """Average several phases' gradients (G's and D's), fused into few flat buffers per phase.

        Called explicitly once per step (see STYLE.md on why hook-based optimizer wrappers misfire
        when G's backward runs through D). Every bucket of every phase is issued before any is waited
        for, so D's transfer does not queue behind the host waiting for G's. `compression` (fp16 or
        bf16) sends the buffers in that dtype, half the bytes of fp32 (train.grad_compression).
        """
        if self.size == 1:
            return
        self._average_fused({group: [p.grad for p in params if p.grad is not None]
                             for group, params in groups.items()}, compression)

    def average_buffers(self, module: torch.nn.Module, group: str = "buffers") -> None:
        """Average floating-point buffers over ranks: BatchNorm running statistics, which each rank
        accumulates from its own shard. Afterwards every rank validates with, and rank 0 checkpoints,
        the same model. Integer buffers (num_batches_tracked) are equal on every rank already."""
        if self.size == 1:
            return
        self._average_fused({group: [b for b in module.buffers() if b.is_floating_point()]})

    def _average_fused(self, groups: dict[str, list[torch.Tensor]], compression: torch.dtype | None = None) -> None:
        """In-place mean over ranks of every tensor, fused into flat buckets (one allreduce each); every
        bucket of every group is issued before any is waited for.

        With `compression` the buffers travel in that dtype, scaled by compression_scale: one tiny max
        allreduce first gives every rank the largest gradient magnitude of each group over all ranks, and
        each rank sends g * scale with scale = 2**15 / (N * amax). The fp16 sum then stays below 2**15 (no
        overflow, whatever the loss scale or N) and a gradient underflows only below about 2e-9 * amax at
        1024 ranks, where dividing by N before the cast (Horovod's prescale) lost every value below 6e-5.
        """
        scales = self._compression_scales(groups, compression) if compression is not None else {}
        pending = []
        for group, tensors in groups.items():
            for i, bucket in enumerate(_buckets(tensors, BUCKET_BYTES)):
                flat = self._flat_buffer(f"{group}.{i}", bucket, compression)
                if compression is None:
                    torch.cat([g.reshape(-1) for g in bucket], out=flat)
                    op = "mean"
                else:
                    offset = 0
                    for g in bucket:
                        flat[offset:offset + g.numel()].copy_(g.reshape(-1) * scales[group])
                        offset += g.numel()
                    op = "sum"
                pending.append((group, bucket, flat, self.allreduce_async_(flat, op=op, name=f"{group}.{i}")))
        for group, bucket, flat, handle in pending:
            self.wait(handle)
            offset = 0
            for g in bucket:
                n = g.numel()
                if compression is None:
                    g.copy_(flat[offset:offset + n].view_as(g))
                else:
                    g.copy_(flat[offset:offset + n].view_as(g).to(g.dtype) / (scales[group] * self.size))  # the mean
                offset += n

    def _compression_scales(self, groups: dict[str, list[torch.Tensor]], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Each group's scale (a device scalar, no host sync) from its largest |g| over all ranks."""
        names = list(groups)
        device = next((t.device for ts in groups.values() for t in ts), torch.device("cpu"))
        amax = torch.stack([_abs_max(groups[n], device) for n in names]).float()
        self.allreduce_(amax, op="max", name="compression_scale")
        return {n: compression_scale(amax[i], self.size, dtype) for i, n in enumerate(names)}

    def _flat_buffer(self, key: str, bucket: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
        """The same buffer every step: a fresh 64 MiB tensor per step costs page faults on
        CPU (glibc maps large blocks anew each time): 105 ms against 20 ms to fill a kept
        one, for the CRF gradients on the 2-core VM (2026-11-23)."""
        n = sum(g.numel() for g in bucket)
        dtype = dtype or bucket[0].dtype
        buf = self._flat.get(key)
        if buf is None or buf.numel() != n or buf.dtype != dtype or buf.device != bucket[0].device:
            buf = self._flat[key] = torch.empty(n, dtype=dtype, device=bucket[0].device)
        return buf

    def broadcast_module(self, module: torch.nn.Module, root: int = 0) -> None:
        """Parameters and buffers (BatchNorm statistics included) from root."""
        if self.size == 1:
            return
        for name, t in module.state_dict().items():
            if t.is_floating_point() or t.dtype in (torch.int64, torch.int32):
                self.broadcast_(t, root=root, name=f"param.{name}")

    def run_on_root(self, work: Callable[[], Any] | None, root: int = 0, poll_s: float = 1.0) -> None:
        """Run `work` on root (slow file I/O: a large checkpoint written to a parallel file system, checkpoints
        hashed on resume) while every rank waits in one tiny allreduce per `poll_s`, never in one collective
        as long as the work: that would trip Horovod's stall shutdown or torch's collective timeout
        (jobs/env.sh sets both to 120 s). Other ranks pass None. An exception in `work` is raised on root
        after the wait; ends like a barrier: no rank leaves before root's work is done."""
        self.run_where_given(work if self.rank == root else None, poll_s)

    def run_where_given(self, work: Callable[[], Any] | None, poll_s: float = 1.0) -> None:
        """run_on_root for any set of ranks: each rank that passes `work` runs it (one copier per node for
        data.stage), the others pass None; every rank polls until all the work is done."""
        if self.size == 1:
            if work is not None:
                work()
            return
        failures: list[BaseException] = []
        thread = None
        if work is not None:
            def target() -> None:
                try:
                    work()
                except BaseException as e:  # raised again on this rank's main thread below
                    failures.append(e)
            thread = threading.Thread(target=target, name="hpcgan-rank-work", daemon=True)
            thread.start()
        while True:
            if thread is not None:
                thread.join(timeout=poll_s)
            if not self.any(thread is not None and thread.is_alive()):
                break
        if failures:
            raise failures[0]

    def broadcast_optimizer(self, optimizer: torch.optim.Optimizer, root: int = 0) -> None:
        if self.size == 1:
            return
        state = self.broadcast_object(optimizer.state_dict() if self.rank == root else None, root=root)
        if self.rank != root:
            optimizer.load_state_dict(state)

    def convert_sync_batchnorm(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def describe(self) -> str:
        return self.name

    def _to_comm_device(self, t: torch.Tensor) -> torch.Tensor:
        return t


def compression_scale(amax: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """What each rank multiplies its gradients by before the sum in `dtype`: 2**15 / (size * amax), so the
    sum of `size` values is at most 2**15 (fp16's largest is 65504). A
    non-finite amax never gets here: the step boundary's flags skip that step before the sync."""
    amax = amax.clamp_min(1e-20)  # all zero: a finite scale (the finfo tiny would give inf, and 0 * inf = nan)
    return (2.0 ** 15 / size) / amax


def _abs_max(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not tensors:
        return torch.zeros((), dtype=torch.float32, device=device)
    return torch.stack([t.detach().abs().max().float() for t in tensors]).max()


def _buckets(tensors: Sequence[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """Group same-dtype tensors into buckets of at most `limit` bytes (at least one tensor each)."""
    out: list[list[torch.Tensor]] = []
    by_dtype: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    for group in by_dtype.values():
        cur: list[torch.Tensor] = []
        size = 0
        for t in group:
            nbytes = t.numel() * t.element_size()
            if cur and size + nbytes > limit:
                out.append(cur)
                cur, size = [], 0
            cur.append(t)
            size += nbytes
        if cur:
            out.append(cur)
    return out


def _mpi_abort(code: int) -> None:
    """MPI_Abort when MPI is already initialised in this process; never initialises it."""
    mpi = sys.modules.get("mpi4py.MPI")
    try:
        if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
            mpi.COMM_WORLD.Abort(code)
    except Exception:
        pass


class LocalBackend(Backend):
    """One process: every collective is the identity."""

    name = "local"

    def __init__(self, info: ProcessInfo, device: torch.device):
        if info.size > 1:
            raise UserError(f"backend 'local' runs one process, but the launcher started {info.size} ranks "
                            "(use --backend horovod or torch)")
        super().__init__(info, device)

    def allreduce_(self, tensor, op="mean", name=""):
        return tensor

    def broadcast_(self, tensor, root=0, name=""):
        return tensor

    def allgather(self, tensor, name=""):
        return tensor.clone()

    def broadcast_object(self, obj, root=0):
        return obj

    def allgather_object(self, obj):
        return [obj]

    def barrier(self):
        pass


def horovod_importable() -> bool:
    return importlib.util.find_spec("horovod") is not None


def available_backends() -> list[str]:
    names = []
    if horovod_importable():
        names.append("horovod")
    if torch.distributed.is_available():
        names.append("torch")
    return names + ["local"]


def init_backend(name: str, info: ProcessInfo, device: torch.device) -> Backend:
    """Start the named backend ('auto': horovod when importable, else torch when distributed, else local)."""
    if name == "auto":
        name = "horovod" if horovod_importable() else ("torch" if info.size > 1 else "local")
    if name == "horovod":
        if not horovod_importable():
            raise UserError("backend 'horovod' asked for, but horovod is not installed in this Python "
                            "(run 'make env', or choose --backend torch)")
        from hpcgan.runtime.horovod_backend import HorovodBackend
        return HorovodBackend(info, device)
    if name == "torch":
        from hpcgan.runtime.torch_backend import TorchBackend
        return TorchBackend(info, device)
    if name == "local":
        return LocalBackend(info, device)
    raise UserError(f"backend {name!r}: expected one of auto, horovod, torch, local")
