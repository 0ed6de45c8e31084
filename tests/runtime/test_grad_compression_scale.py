"""train.grad_compression=fp16 at a simulated 1024 ranks: the fp16 sum of scaled gradients neither overflows
(a mean above 65504) nor underflows (gradients below 6e-5, which dividing by N before the cast lost)."""
from __future__ import annotations

import pytest
import torch

from hpcgan.runtime.backend import LocalBackend
from hpcgan.runtime.env import ProcessInfo


class SimulatedRanks(LocalBackend):
    """N ranks that all hold this process's gradients (the worst case for overflow): a sum is the sum of N
    equal values, computed in the buffer's dtype as a ring allreduce would, a max is the identity."""

    def __init__(self, size: int):
        super().__init__(ProcessInfo(), torch.device("cpu"))
        self.simulated = size
        self.sums: list[torch.dtype] = []

    @property
    def size(self) -> int:
        return self.simulated

    def allreduce_(self, tensor, op="mean", name=""):
        if op == "sum":
            self.sums.append(tensor.dtype)
            tensor.copy_(sum_of_equal(tensor, self.simulated))
        return tensor


def sum_of_equal(x: torch.Tensor, n: int) -> torch.Tensor:
    """n (a power of two) equal summands added in x's dtype, pairwise as a ring or tree allreduce does."""
    for _ in range(n.bit_length() - 1):
        x = x + x
    return x


@pytest.mark.parametrize("amax", [1e-3, 1.0, 1e5])  # 1e5: the mean is beyond fp16's 65504
def test_fp16_sum_at_1024_ranks_is_finite_and_keeps_small_gradients(amax):
    ranks = SimulatedRanks(1024)
    grad = torch.logspace(-6, 0, 200) * amax  # six decades below the largest, in one tensor
    grad[::2] *= -1
    p = torch.nn.Parameter(torch.zeros(200))
    p.grad = grad.clone()
    ranks.sync_gradients([p], compression=torch.float16)
    assert ranks.sums == [torch.float16], "the buckets travelled in fp16"
    assert torch.isfinite(p.grad).all()
    rel = ((p.grad - grad).abs() / grad.abs())
    assert float(rel.max()) < 5e-3, f"worst relative error {float(rel.max()):.2e}"
    # What dividing by N before the cast gave: the small gradients lost (1e-3) or an Inf mean (1e5).
    prescaled = sum_of_equal((grad / 1024).half(), 1024).float() / 1024
    if amax != 1.0:
        assert not torch.isfinite(prescaled).all() or float(((prescaled - grad).abs() / grad.abs()).max()) > 0.1


def test_all_zero_gradients_stay_zero():
    ranks = SimulatedRanks(8)
    p = torch.nn.Parameter(torch.zeros(5))
    p.grad = torch.zeros(5)
    ranks.sync_gradients([p], compression=torch.float16)
    assert torch.equal(p.grad, torch.zeros(5))
