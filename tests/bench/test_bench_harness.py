"""Unit tests of the benchmark harness and the projection model (no launcher, seconds)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is at the repo root, not installed
from benchmarks import common, projection  # noqa: E402, projection
from benchmarks.allreduce import bus_bandwidth, relative_to  # noqa: E402
from hpcgan.errors import UserError  # noqa: E402
from hpcgan.runtime.backend import BUCKET_BYTES, _buckets  # noqa: E402


def test_stats_match_numpy():
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    st = common.Stats.of(values)
    assert st.median == pytest.approx(np.median(values))
    assert st.q25 == pytest.approx(np.quantile(values, 0.25))
    assert st.q75 == pytest.approx(np.quantile(values, 0.75))
    assert st.std == pytest.approx(np.std(values, ddof=1))
    assert st.ci95 == pytest.approx(1.96 * st.std)
    assert (st.min, st.max, st.n) == (1.0, 9.0, 6)
    with pytest.raises(ValueError):
        common.Stats.of([])


def test_time_batches_protocol_counts_calls_and_syncs():
    calls, syncs = [], []
    times = common.time_batches(lambda: calls.append(1), warmup=3, iters=4, batches_per_iter=5,
                                sync=lambda: syncs.append(1))
    assert len(calls) == 3 + 4 * 5
    assert len(times) == 4 and all(t >= 0 for t in times)
    assert len(syncs) == 1 + 4  # after warm-up, then after each timed iteration
    rates = common.rate_stats([0.5, 0.25], items_per_batch=10)
    assert (rates.min, rates.max) == (20.0, 40.0)
    with pytest.raises(ValueError):
        common.time_batches(lambda: None, warmup=0, iters=0)


def test_result_json_records_machine_load_and_versions(tmp_path):
    path = common.write_result(tmp_path / "x.json", "allreduce", {"a": 1}, {"stats": common.Stats.of([1.0, 2.0])})
    doc = json.loads(path.read_text())
    env = doc["env"]
    for key in ("host", "cpu", "cores", "date", "command", "torch", "horovod", "mpi4py", "load_start", "load_end"):
        assert key in env, key
    assert env["torch"] == torch.__version__
    assert len(env["load_start"]["loadavg_1_5_15"]) == 3 and "load average" in env["load_start"]["uptime"]
    assert doc["results"]["stats"]["median"] == 1.5
    assert common.read_result(path, "allreduce")["params"] == {"a": 1}
    with pytest.raises(UserError, match="expected 'scaling'"):
        common.read_result(path, "scaling")
    with pytest.raises(UserError, match="not found"):
        common.read_result(tmp_path / "missing.json")


def test_mpirun_command_marks_and_passes_env():
    cmd = common.mpirun_command(4, "allreduce", ["--worker", "mpi"], env={"HOROVOD_FUSION_THRESHOLD": "0"})
    assert cmd[:3] == ["mpirun", "-np", "4"] and "--oversubscribe" in cmd
    assert "HOROVOD_FUSION_THRESHOLD=0" in cmd and cmd[-3:] == ["benchmarks.allreduce", "--worker", "mpi"]
    assert common.oversubscribed(common.ncores() + 1) and not common.oversubscribed(1)


def test_bus_bandwidth_and_ratio():
    assert bus_bandwidth(1e6, 1e-3, 2) == pytest.approx(1e9)
    assert bus_bandwidth(1e6, 1e-3, 4) == pytest.approx(1.5e9)
    curves = [{"lib": "mpi", "ranks": 2, "rows": [{"bytes": 4096, "busbw_GBps": 2.0}]},
              {"lib": "horovod", "ranks": 2, "rows": [{"bytes": 4096, "busbw_GBps": 0.5}]}]
    assert relative_to(curves, "mpi") == [{"lib": "horovod", "ranks": 2, "bytes": 4096, "ratio": 0.25}]


def test_fit_recovers_alpha_beta():
    alpha, beta = 20e-6, 1 / 3e9
    pts = [(n, m, projection.ring_time(n, m, alpha, beta)) for n in (2, 4) for m in (4096, 2**20, 2**26)]
    a, b, rms = projection.fit_alpha_beta(pts)
    assert a == pytest.approx(alpha, rel=1e-6) and b == pytest.approx(beta, rel=1e-6) and rms < 1e-9
    # Noisy points: still close, and the reported error is not zero.
    noisy = [(n, m, t * (1.1 if i % 2 else 0.9)) for i, (n, m, t) in enumerate(pts)]
    a2, b2, rms2 = projection.fit_alpha_beta(noisy)
    assert 0.5 * alpha < a2 < 2 * alpha and 0.5 * beta < b2 < 2 * beta and rms2 > 0.05


def test_buckets_match_the_trainers_fusion():
    shapes = [(1000, 1000), (3000, 3000), (5000, 5000), (10,), (4000, 4000)]
    ours = projection.buckets(shapes)
    theirs = [sum(t.numel() * 4 for t in b) for b in _buckets([torch.empty(s, device="meta") for s in shapes],
                                                                BUCKET_BYTES)]
    assert ours == theirs and len(ours) > 1


def test_projection_efficiency_falls_with_nodes():
    phases = {"G": [2**24, 2**20], "D": [2**22]}
    o = projection.horovod_overhead(1.3e-6)
    comm = [projection.comm_per_step(n, phases, 1.3e-6, 1e-10, o) for n in projection.NODES]
    assert comm[0] == 0.0 and all(b > a for a, b in zip(comm[1:], comm[2:]))
    eff = [projection.efficiency(0.05, c) for c in comm]
    assert eff[0] == 1.0 and eff[-1] < eff[3] < 1.0
    # Large-n limit of the bandwidth term: 2 * bytes * beta per bucket.
    assert projection.ring_time(10**6, 1e9, 0.0, 1e-10) == pytest.approx(0.2, rel=1e-5)
    assert math.isclose(o(1), 0.0) and o(1024) == pytest.approx(0.5e-3 + 20 * 1.3e-6)
