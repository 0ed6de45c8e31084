"""Tiny CRF-shaped datasets and configs for trainer tests (16x16, a handful of channels' worth of work)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpcgan.config import load_config
from hpcgan.data.format import DatasetWriter


def write_crf(path, n: int, size: int = 16, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 44, size, size)).astype("float32")
    y = (1 / (1 + np.exp(-x[:, :3] - 0.5 * x[:, 3:6]))).astype("float32")
    with DatasetWriter(path, "crf", n, (44, size, size), (3, size, size), [f"c{i}" for i in range(44)],
                       ["R", "G", "B"]) as w:
        w.write(x, y)
    return str(path)


# Exact-arithmetic settings: no batch statistics (instance norm), no dropout, no noise, no LR scaling, the
# reference rgb output (with crf-small's pooled chroma at 16x16, Adam lifts rounding noise in one of 2048 D
# weights to 5e-5 between batch splits; the wrapper itself is batch-independent, test_crf_colour.py).
TINY = ["workload=crf", "crf.size=16", "crf.widths=[8,16]", "crf.d_widths=[8,16]", "crf.d_scales=2",
        "crf.dropout=0.0", "crf.norm=instance", "crf.noise_channels=0", "crf.colour=rgb", "train.lr_scaling=none",
        "train.figures=false", "train.log_every=1", "data.shuffle_block=4", "seed=7"]


# Rank 0's slow file work (slow_rank0_worker.py) against timeouts that jobs/env.sh sets to 120 s, scaled down:
# 4 s against work that takes 8 s longer.
SLOW_ROOT_WORKER = Path(__file__).parent / "slow_rank0_worker.py"
SHORT_TIMEOUTS = {"HPCGAN_COLLECTIVE_TIMEOUT": "4", "HOROVOD_STALL_CHECK_TIME_SECONDS": "1",
                  "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "4"}


def tiny_config(tmp_path, data: str, *extra: str):
    return load_config("crf-small", TINY + [f"data.path={data}", "data.val_path=", f"run_dir={tmp_path / 'run'}",
                                            *extra])


@pytest.fixture
def crf_data(tmp_path):
    return write_crf(tmp_path / "crf.h5", 32)


def write_synth(path, workload: str, module, n: int, seed: int) -> str:
    """A workload's synthetic data as `hpcgan data synth WORKLOAD` writes it (in-process: the CLI's MPI start
    runs once a process); `module` is its generator (schema, generate)."""
    s = module.schema()
    parts = list(module.generate(0, n, seed))
    with DatasetWriter(path, workload, n, s["input_shape"], s["target_shape"], s["input_channels"],
                       s["target_channels"]) as w:
        w.write(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return str(path)


def write_lhc(path, n: int, seed: int = 1) -> str:
    """Synthetic tracks (hits -> fitted track)."""
    from hpcgan.workloads.lhc import synth

    return write_synth(path, "lhc", synth, n, seed)


def write_fastsim(path, n: int, seed: int = 5) -> str:
    """True particles and full-chain tracks (the fast simulation)."""
    from hpcgan.workloads.lhc import synth_fastsim

    return write_synth(path, "lhc-fastsim", synth_fastsim, n, seed)


def write_shaped(path, workload: str, n: int, input_shape: tuple, target_shape: tuple) -> str:
    """A dataset of n samples whose samples are never written: HDF5 allocates no chunk for them, so even
    the full CRF preset's 3100 x 44 x 256 x 256 stays a few hundred kB. For plans (sizes, shapes), not for
    reading (unwritten samples read as zeros)."""
    import h5py

    from hpcgan.data.format import ChannelStats, write_attrs

    stats_in, stats_out = ChannelStats(input_shape[0]), ChannelStats(target_shape[0])
    stats_in.update(np.zeros((1, *input_shape), np.float32))
    stats_out.update(np.zeros((1, *target_shape), np.float32))
    with h5py.File(path, "w") as f:
        for name, shape in (("inputs", input_shape), ("targets", target_shape)):
            f.create_dataset(name, shape=(n, *shape), dtype="float32", chunks=(1, *shape))
        write_attrs(f, workload=workload, n=n, dtype="float32",
                    input_channels=[f"c{i}" for i in range(input_shape[0])],
                    target_channels=[f"t{i}" for i in range(target_shape[0])],
                    input_stats=stats_in, target_stats=stats_out, provenance={"test": "write_shaped"})
    return str(path)


@pytest.fixture
def clean_signals():
    """Trainer tests in this process: the preemption handlers the trainer installs are removed after each."""
    from hpcgan.runtime import signals

    yield
    signals.uninstall()
    signals.reset()


def local():
    """The one-process backend on CPU."""
    import torch

    from hpcgan.runtime.backend import LocalBackend
    from hpcgan.runtime.env import ProcessInfo

    return LocalBackend(ProcessInfo(), torch.device("cpu"))
