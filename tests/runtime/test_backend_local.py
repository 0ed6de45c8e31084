"""One-process parts of the runtime: local backend, gradient buckets, backend choice, device, rendezvous."""
from __future__ import annotations

import sys

import pytest
import torch

import hpcgan.runtime.backend as backend_mod
from hpcgan.errors import AgreedError, UserError
from hpcgan.runtime import session
from hpcgan.runtime.backend import LocalBackend, _buckets, available_backends, init_backend
from hpcgan.runtime.device import cores_per_rank, select_device
from hpcgan.runtime.env import ProcessInfo
from hpcgan.runtime.torch_backend import rendezvous

CPU = torch.device("cpu")


def test_local_backend_collectives_are_identities():
    b = LocalBackend(ProcessInfo(), CPU)
    t = torch.arange(4.0)
    assert b.allreduce_(t, op="sum") is t and torch.equal(t, torch.arange(4.0))
    assert torch.equal(b.allreduce(t, op="max"), t)
    assert torch.equal(b.allgather(t), t) and b.allgather(t) is not t
    assert b.broadcast_object({"a": 1}) == {"a": 1} and b.allgather_object(3) == [3]
    assert b.allreduce_scalars({"loss": 2, "acc": 0.5}) == {"loss": 2.0, "acc": 0.5}
    assert b.any(True) is True and b.any(False) is False
    b.barrier()
    assert (b.rank, b.size, b.is_root, b.describe()) == (0, 1, True, "local")


def test_agree_returns_the_result_or_raises_an_agreed_error():
    b = LocalBackend(ProcessInfo(), CPU)
    assert b.agree(lambda: 42) == 42

    def bad():
        raise UserError("data.h5: no such file")

    with pytest.raises(AgreedError) as info:
        b.agree(bad)
    assert info.value.lines == ["data.h5: no such file"]  # every rank saw it: no rank list
    with pytest.raises(ZeroDivisionError):  # a bug stays itself (the CLI prints its traceback)
        b.agree(lambda: 1 / 0)


def test_local_backend_leaves_gradients_and_state_alone():
    b = LocalBackend(ProcessInfo(), CPU)
    model = torch.nn.Linear(3, 2)
    model(torch.ones(1, 3)).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    b.sync_gradients(model.parameters())
    b.broadcast_module(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    b.broadcast_optimizer(opt)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


def test_local_backend_refuses_several_ranks():
    with pytest.raises(UserError, match="backend 'local' runs one process, but the launcher started 2 ranks"):
        LocalBackend(ProcessInfo(rank=1, size=2), CPU)


def test_buckets_respect_limit_dtype_and_order():
    ts = [torch.zeros(10), torch.zeros(10), torch.zeros(3, dtype=torch.float64), torch.zeros(30), torch.zeros(5),
          torch.zeros(2, dtype=torch.float64)]
    buckets = _buckets(ts, limit=80)  # 20 float32 or 10 float64 per bucket
    assert [[t.numel() for t in b] for b in buckets] == [[10, 10], [30], [5], [3, 2]]
    assert all(len({t.dtype for t in b}) == 1 for b in buckets)
    flat = [t for b in buckets for t in b]
    assert sorted(map(id, flat)) == sorted(map(id, ts)) and len(flat) == len(ts)
    assert _buckets([], 80) == []
    assert len(_buckets(ts, backend_mod.BUCKET_BYTES)) == 2  # one per dtype at the default size


def test_backend_choice_and_errors(monkeypatch):
    assert available_backends()[-1] == "local"
    assert init_backend("local", ProcessInfo(), CPU).name == "local"
    with pytest.raises(UserError, match="backend 'mpi': expected one of auto, horovod, torch, local"):
        init_backend("mpi", ProcessInfo(), CPU)
    monkeypatch.setattr(backend_mod, "horovod_importable", lambda: False)
    assert "horovod" not in available_backends()
    with pytest.raises(UserError, match="backend 'horovod' asked for, but horovod is not installed"):
        init_backend("horovod", ProcessInfo(), CPU)
    assert init_backend("auto", ProcessInfo(), CPU).name == "local"


def test_session_start_is_idempotent_and_stops():
    try:
        b = session.start("local", "cpu")
        assert session.start("local", "cpu") is b and session.current_backend() is b
        assert not getattr(sys.excepthook, "_hpcgan_aborts", False)  # one process: nothing to abort
    finally:
        session.stop()
    assert session.current_backend() is None


def test_rank_local_errors_mark_the_exception():
    assert session.errors_are_collective()
    with pytest.raises(UserError) as info:
        with session.rank_local_errors():
            assert not session.errors_are_collective()
            raise UserError("shard 3: truncated")
    assert session.errors_are_collective()  # the block is left...
    assert not session.errors_are_collective(info.value)  # ...but the error still says it was rank-local
    assert session.errors_are_collective(UserError("config key x: unknown"))


def test_cpu_device_and_threads(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        assert select_device(ProcessInfo(local_size=1), "cpu") == CPU
        assert torch.get_num_threads() == cores_per_rank(ProcessInfo(local_size=1)) >= 1
        assert cores_per_rank(ProcessInfo(local_size=1000)) == 1
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
        assert cores_per_rank(ProcessInfo(local_size=4)) == 3
    finally:
        torch.set_num_threads(threads)


def test_device_errors():
    with pytest.raises(UserError, match="device 'tpu': expected auto, cpu or cuda"):
        select_device(ProcessInfo(), "tpu", set_threads=False)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="device 'cuda' asked for, but torch sees no CUDA device"):
            select_device(ProcessInfo(), "cuda", set_threads=False)
        assert select_device(ProcessInfo(), "auto", set_threads=False) == CPU


def test_torch_rendezvous_from_environment(monkeypatch):
    for k in ("MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_JOB_ID", "SLURM_STEP_ID"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_STEP_NODELIST", "nid[00012-00014,00020]")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    monkeypatch.setenv("SLURM_STEP_ID", "2")
    slurm = ProcessInfo(rank=3, size=4, launcher="slurm", num_nodes=4)
    addr, port = rendezvous(slurm)
    assert addr == "nid00012" and 20000 <= port < 60000
    assert rendezvous(slurm) == (addr, port)  # every rank computes the same address
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")
    monkeypatch.setenv("MASTER_PORT", "29555")
    assert rendezvous(slurm) == ("10.0.0.7", 29555)


def test_torch_rendezvous_alone_needs_no_fixed_port(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    addr, port = rendezvous(ProcessInfo())
    assert addr == "127.0.0.1" and port != 29500 and port > 0  # two one-process jobs on a host must not collide


def test_slurm_rendezvous_ports_of_nearby_jobs_and_steps_differ():
    from hpcgan.runtime.torch_backend import slurm_rendezvous_port

    ports = {(j, s): slurm_rendezvous_port(j, s) for j in range(1000, 1300) for s in range(100)}
    assert len(set(ports.values())) == len(ports)  # 30 000 (job, step) pairs, no two on one port
    assert all(20000 <= p < 60000 for p in ports.values())
