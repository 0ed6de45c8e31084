"""Every Backend collective checked on every rank against values the rank computes by itself.

Launched by test_multirank.py: `mpirun -np N python collectives_worker.py BACKEND SHARED_DIR`.
Each rank builds its inputs from its rank number, so the expected result of every
collective is known locally without trusting another collective. A failed check
raises (the job ends non-zero); the last line per rank counts the checks passed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import hpcgan.runtime.backend as backend_mod
from hpcgan.runtime import session

CHECKS: list[str] = []


def check(name: str, ok: bool, detail: object = "") -> None:
    if not ok:
        raise AssertionError(f"rank {B.rank}: check {name} failed: {detail}")
    CHECKS.append(name)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a, b, atol=atol)


def rank_tensor(r: int, dtype=torch.float32) -> torch.Tensor:
    return (torch.arange(6, dtype=dtype).reshape(2, 3) + 1) * (r + 1)


def check_allreduce(n: int) -> None:
    for dtype in (torch.float32, torch.float64):
        every = torch.stack([rank_tensor(r, dtype) for r in range(n)])
        for op, expected in (("sum", every.sum(0)), ("mean", every.mean(0)), ("max", every.max(0).values)):
            t = rank_tensor(B.rank, dtype)
            out = B.allreduce_(t, op=op, name=f"ar.{op}.{dtype}")
            check(f"allreduce_ {op} {dtype}", close(t, expected) and out.data_ptr() == t.data_ptr(), (t, expected))
        t = rank_tensor(B.rank, dtype)
        out = B.allreduce(t, op="sum", name=f"ar.copy.{dtype}")
        check(f"allreduce copy {dtype}", close(out, every.sum(0)) and close(t, rank_tensor(B.rank, dtype)), (out, t))


def check_scalars_and_any(n: int) -> None:
    vals = {"loss": float(B.rank), "acc": 2.0 * B.rank + 1}
    got = B.allreduce_scalars(vals)
    want = {"loss": sum(range(n)) / n, "acc": sum(2.0 * r + 1 for r in range(n)) / n}
    check("allreduce_scalars mean", got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-9 for k in want),
          (got, want))
    got = B.allreduce_scalars(vals, op="sum")
    check("allreduce_scalars sum", abs(got["loss"] - sum(range(n))) < 1e-9, got)
    got = B.allreduce_scalars(vals, op="max")
    check("allreduce_scalars max", abs(got["acc"] - (2.0 * (n - 1) + 1)) < 1e-9, got)
    check("any one rank", B.any(B.rank == n - 1) is True)
    check("any no rank", B.any(False) is False)
    check("any all ranks", B.any(True) is True)


def check_broadcast(n: int) -> None:
    for root in sorted({0, n - 1}):
        t = torch.full((3, 2), float(B.rank)) + torch.arange(2.0)
        B.broadcast_(t, root=root, name=f"bc.{root}")
        check(f"broadcast_ root {root}", close(t, torch.full((3, 2), float(root)) + torch.arange(2.0)), t)
        obj = B.broadcast_object({"rank": B.rank, "payload": list(range(B.rank + 3)), "s": "x" * B.rank}, root=root)
        check(f"broadcast_object root {root}",
              obj == {"rank": root, "payload": list(range(root + 3)), "s": "x" * root}, obj)


def check_allgather(n: int) -> None:
    # Ragged along dim 0, rank 0 contributes nothing (a validation remainder can be empty on some ranks).
    for dtype in (torch.float32, torch.int64):
        t = torch.full((B.rank, 2), B.rank, dtype=dtype) + torch.arange(2, dtype=dtype)
        out = B.allgather(t, name=f"ag.{dtype}")
        want = torch.cat([torch.full((r, 2), r, dtype=dtype) + torch.arange(2, dtype=dtype) for r in range(n)])
        check(f"allgather ragged {dtype}", out.shape == want.shape and torch.equal(out, want), (out, want))
    t = torch.full((B.rank + 1, 3), float(B.rank))
    out = B.allgather(t, name="ag.nonempty")
    want = torch.cat([torch.full((r + 1, 3), float(r)) for r in range(n)])
    check("allgather ragged nonempty", torch.equal(out, want), out)
    objs = B.allgather_object({"rank": B.rank, "name": f"r{B.rank}"})
    check("allgather_object", objs == [{"rank": r, "name": f"r{r}"} for r in range(n)], objs)


def check_barrier(n: int, shared: Path) -> None:
    # Rank 0 writes late; nobody may pass the barrier before its file exists.
    if B.rank == 0:
        time.sleep(1.0)
    (shared / f"barrier-{B.rank}").write_text("x")
    B.barrier()
    missing = [r for r in range(n) if not (shared / f"barrier-{r}").exists()]
    check("barrier", not missing, f"files of ranks {missing} missing after the barrier")


def bn_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    m.train()
    for i in range(seed % 3 + 1):  # rank-dependent running stats and num_batches_tracked
        m(torch.randn(8, 4, generator=torch.Generator().manual_seed(seed * 10 + i)) * (seed + 1))
    return m


def check_broadcast_module() -> None:
    for root in sorted({0, B.size - 1}):
        model = bn_model(seed=B.rank)
        B.broadcast_module(model, root=root)
        want = bn_model(seed=root).state_dict()
        got = model.state_dict()
        bad = [k for k in want if not torch.equal(got[k], want[k])]
        check(f"broadcast_module root {root} (BatchNorm buffers included)", not bad, f"differs: {bad}")


def check_average_buffers(n: int) -> None:
    """BatchNorm running statistics become the mean over ranks; parameters and integer buffers stay."""
    model = bn_model(seed=B.rank)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    B.average_buffers(model, group="bn")
    models = [bn_model(seed=r).state_dict() for r in range(n)]
    got = model.state_dict()
    for k in ("1.running_mean", "1.running_var"):
        want = torch.stack([m[k] for m in models]).mean(0)
        check(f"average_buffers {k}", close(got[k], want, atol=1e-5), (got[k], want))
    kept = [k for k in before if not k.endswith(("running_mean", "running_var")) and torch.equal(got[k], before[k])]
    check("average_buffers leaves the rest", len(kept) == len(before) - 2, kept)


def adam_after_step(seed: int, lr: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.99))
    for i in range(seed + 1):  # rank-dependent step count and moments
        opt.zero_grad()
        model(torch.randn(4, 3, generator=torch.Generator().manual_seed(seed + 100 * i))).pow(2).sum().backward()
        opt.step()
    return model, opt


def check_broadcast_optimizer() -> None:
    root = B.size - 1
    _, opt = adam_after_step(B.rank, lr=0.1 * (B.rank + 1))
    B.broadcast_optimizer(opt, root=root)
    _, ref = adam_after_step(root, lr=0.1 * (root + 1))
    got, want = opt.state_dict(), ref.state_dict()
    same_groups = [g["lr"] for g in got["param_groups"]] == [g["lr"] for g in want["param_groups"]]
    same_state = all(torch.equal(torch.as_tensor(got["state"][i][k]), torch.as_tensor(want["state"][i][k]))
                     for i in want["state"] for k in want["state"][i])
    check(f"broadcast_optimizer root {root}", same_groups and same_state, (got, want))


def grads_for(rank: int, shapes: list[tuple[tuple[int, ...], torch.dtype]]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(rank)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(d) for s, d in shapes]


def check_sync_gradients(n: int) -> None:
    shapes = [((7, 5), torch.float32), ((5,), torch.float32), ((3, 3, 2), torch.float64), ((40,), torch.float32),
              ((2,), torch.float64), ((9, 4), torch.float32)]
    params = [torch.nn.Parameter(torch.zeros(s, dtype=d)) for s, d in shapes]
    frozen = torch.nn.Parameter(torch.zeros(3))  # no grad: skipped on every rank alike
    for p, g in zip(params, grads_for(B.rank, shapes)):
        p.grad = g.clone()
    backend_mod.BUCKET_BYTES = 96  # several buckets per dtype, some holding one tensor larger than the limit
    n_buckets = len(backend_mod._buckets([p.grad for p in params], backend_mod.BUCKET_BYTES))
    B.sync_gradients(params + [frozen], group="test")
    every = [grads_for(r, shapes) for r in range(n)]
    want = [torch.stack([e[i] for e in every]).mean(0) for i in range(len(shapes))]
    bad = [i for i, (p, w) in enumerate(zip(params, want)) if not close(p.grad, w, atol=1e-6)]
    check(f"sync_gradients over {n_buckets} buckets", n_buckets >= 4 and not bad and frozen.grad is None,
          f"buckets {n_buckets}, wrong grads {bad}")


def check_compressed_sync(n: int) -> None:
    """train.grad_compression: buffers travel in fp16/bf16 and still give the mean, to their precision."""
    shapes = [((7, 5), torch.float32), ((40,), torch.float32), ((9, 4), torch.float32)]
    every = [grads_for(r, shapes) for r in range(n)]
    want = [torch.stack([e[i] for e in every]).mean(0) for i in range(len(shapes))]
    for dtype, rel in ((torch.float16, 2 ** -10), (torch.bfloat16, 2 ** -7)):
        if not B.supports_compression({torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]):
            check(f"{B.name} declares no {dtype} allreduce", B.name == "horovod" and dtype == torch.bfloat16)
            continue
        params = [torch.nn.Parameter(torch.zeros(s, dtype=d)) for s, d in shapes]
        for p, g in zip(params, grads_for(B.rank, shapes)):
            p.grad = g.clone()
        B.sync_gradients(params, group=f"compressed-{dtype}", compression=dtype)
        # Each rank's value is rounded once and every partial sum again: error ~ n roundings of the largest value.
        scale = max(float(torch.stack([e[i] for e in every]).abs().max()) for i in range(len(shapes)))
        err = max(float((p.grad - w).abs().max()) for p, w in zip(params, want)) / scale
        check(f"sync_gradients compressed to {dtype}", err < n * rel and all(p.grad.dtype == torch.float32
                                                                           for p in params), f"rel error {err}")


def main() -> None:
    global B
    backend_name, shared = sys.argv[1], Path(sys.argv[2])
    B = session.start(backend_name, "cpu")
    n = B.size
    check(f"backend {backend_name} size", B.name == backend_name and n > 1, (B.name, n))
    check_allreduce(n)
    check_scalars_and_any(n)
    check_broadcast(n)
    check_allgather(n)
    check_barrier(n, shared)
    check_broadcast_module()
    check_average_buffers(n)
    check_broadcast_optimizer()
    check_sync_gradients(n)
    check_compressed_sync(n)
    B.barrier()
    print(f"rank {B.rank}/{n} {B.describe()}: {len(CHECKS)} checks passed", flush=True)
    session.stop()


if __name__ == "__main__":
    main()
