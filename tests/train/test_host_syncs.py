"""Collectives and host synchronisations per training step, counted on CPU so they cannot creep back.

A step on a GPU is ~2 ms for LHC: every `.item()`/`float(tensor)` waits for the device. The loop reads
one control vector per step (non-finite loss, non-finite gradients, preemption: one collective) and
leaves the statistics on the device until the logging interval.

Counting: a backend that reports two ranks but reduces nothing (so the gradient sync runs its real
bucketing code) counts collectives; wrappers on the Tensor methods that copy a value to the host count
the host syncs hpcgan's own code makes (torch's CPU Adam reads its CPU step counter with .item(), which
is no device sync; the fused CUDA Adam keeps it on the device. fp16 adds GradScaler's own inf check). Per-step numbers are the difference between a 2-step and a 6-step run with no logging step
in between, so set-up and the final checkpoint cancel out.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import hpcgan

from hpcgan.runtime import signals
from hpcgan.runtime.backend import Backend
from hpcgan.runtime.env import ProcessInfo
from hpcgan.train.trainer import train

from conftest import tiny_config

PACKAGE = str(Path(hpcgan.__file__).parent)
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy")


class CountingBackend(Backend):
    """Two ranks as far as the trainer can tell; every collective is the identity and is counted."""

    name = "counting"

    def __init__(self):
        super().__init__(ProcessInfo(rank=0, size=2, local_size=2), torch.device("cpu"))
        self.calls: list[str] = []

    def allreduce_(self, tensor, op="mean", name=""):
        self.calls.append(f"allreduce:{name}")
        return tensor

    def allreduce_async_(self, tensor, op="mean", name=""):
        self.calls.append(f"allreduce:{name}")
        return name

    def wait(self, handle):
        if handle is not None:
            self.calls.append(f"wait:{handle}")

    def broadcast_(self, tensor, root=0, name=""):
        self.calls.append("broadcast")
        return tensor

    def allgather(self, tensor, name=""):
        self.calls.append("allgather")
        return tensor.clone()

    def broadcast_object(self, obj, root=0):
        self.calls.append("broadcast_object")
        return obj

    def allgather_object(self, obj):
        self.calls.append("allgather_object")
        return [obj, obj]

    def barrier(self):
        self.calls.append("barrier")


@pytest.fixture
def host_reads(monkeypatch):
    counts = {"n": 0}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            if sys._getframe(1).f_code.co_filename.startswith(PACKAGE):
                counts["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    yield counts
    signals.uninstall()
    signals.reset()


def run(tmp_path, data: str, steps: int, host_reads: dict, *extra: str) -> tuple[list[str], int]:
    cfg = tiny_config(tmp_path / f"s{steps}", data, "train.epochs=10", "train.batch_size=2",
                      f"train.max_steps={steps}", "train.log_every=1000", *extra)
    backend = CountingBackend()
    before = host_reads["n"]
    assert train(cfg, backend, resume="never") == 0
    return backend.calls, host_reads["n"] - before


@pytest.mark.timeout(300)
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_one_control_collective_and_one_host_sync_per_step(tmp_path, crf_data, host_reads, amp):
    short, reads_short = run(tmp_path, crf_data, 2, host_reads, f"train.amp={amp}")
    long, reads_long = run(tmp_path, crf_data, 6, host_reads, f"train.amp={amp}")
    per_step = [c for c in long if c not in short or long.count(c) > short.count(c)]
    extra = {c: (long.count(c) - short.count(c)) / 4 for c in set(per_step)}
    # One control allreduce, and the gradients: one fused bucket per phase for this tiny model, both
    # issued before the host waits for either.
    assert extra == {"allreduce:control": 1, "allreduce:G.0": 1, "allreduce:D.0": 1, "wait:G.0": 1, "wait:D.0": 1}, extra
    i = long.index("allreduce:G.0")
    assert long[i:i + 4] == ["allreduce:G.0", "allreduce:D.0", "wait:G.0", "wait:D.0"], long[i - 1:i + 5]
    assert (reads_long - reads_short) / 4 == 1, (reads_short, reads_long)
