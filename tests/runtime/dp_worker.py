"""Data-parallel equivalence: K Adam steps of a small MLP on N ranks == one process with batch N*b.

`mpirun -np N python dp_worker.py BACKEND OUT_DIR` writes each rank's final weights to
OUT_DIR/rank<r>.pt; test_multirank.py compares them with `train(local backend)` run
in the test process on the same global batches. Each rank starts from different
weights (broadcast_module must fix that) and takes its contiguous slice of every
global batch; gradients are averaged only through Backend.sync_gradients.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import hpcgan.runtime.backend as backend_mod
from hpcgan.runtime.backend import Backend

STEPS = 5
PER_RANK_BATCH = 3
D_IN, HIDDEN, D_OUT = 6, 16, 3


def global_batch(step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + step)
    x = torch.randn(n, D_IN, generator=g)
    return x, torch.sin(x[:, :D_OUT] * 3) + 0.1 * torch.randn(n, D_OUT, generator=g)


def train(backend: Backend, global_size: int) -> dict[str, torch.Tensor]:
    """Final weights after STEPS steps over batches of global_size samples split across backend's ranks."""
    torch.manual_seed(1000 + backend.rank)  # rank-dependent init: only broadcast_module makes ranks agree
    model = torch.nn.Sequential(torch.nn.Linear(D_IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, D_OUT))
    backend.broadcast_module(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    local = global_size // backend.size
    for step in range(STEPS):
        x, y = global_batch(step, global_size)
        x, y = x[backend.rank * local:(backend.rank + 1) * local], y[backend.rank * local:(backend.rank + 1) * local]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        backend.sync_gradients(model.parameters(), group="mlp")
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def main() -> None:
    from hpcgan.runtime import session

    backend_name, out = sys.argv[1], Path(sys.argv[2])
    backend_mod.BUCKET_BYTES = 256  # force several fused buckets (the MLP has ~700 bytes of weights per layer)
    backend = session.start(backend_name, "cpu")
    weights = train(backend, PER_RANK_BATCH * backend.size)
    torch.save({"size": backend.size, "backend": backend.describe(), "weights": weights}, out / f"rank{backend.rank}.pt")
    print(f"rank {backend.rank}/{backend.size} {backend.describe()}: trained {STEPS} steps", flush=True)
    session.stop()


if __name__ == "__main__":
    main()
