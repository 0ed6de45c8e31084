"""Real mpirun: exactly-once coverage over 1-4 ranks, CLI errors under mpirun without a hang, parallel synth/stats."""
import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from datahelp import hpcgan, run, show, write_indexed
from hpcgan.data.format import read_attrs

pytestmark = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed")
WORKER = Path(__file__).with_name("mpi_reader_worker.py")


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_exactly_once_across_real_ranks(tmp_path, size):
    # uneven N over two files: 61 + 40 = 101 samples, batch 3
    write_indexed(tmp_path / "d-0.h5", 61)
    write_indexed(tmp_path / "d-1.h5", 40, first=61)
    out = tmp_path / "out"
    out.mkdir()
    p = run([sys.executable, str(WORKER), str(tmp_path / "d-*.h5"), str(out), "3"], np_ranks=size, timeout=180)
    assert p.returncode == 0, show(p)
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(size)]
    assert all(r["size"] == size for r in ranks), show(p)
    n, unit = 101, size * 3
    for epoch in ("0", "1"):
        drop = np.concatenate([np.ravel(r["drop"][epoch]) for r in ranks])
        assert len(drop) == n // unit * unit and len(set(drop)) == len(drop)
        pad = np.concatenate([np.ravel(r["pad"][epoch]) for r in ranks])
        assert set(pad) == set(range(n)) and len(pad) == -(-n // unit) * unit
        assert len({len(r["pad"][epoch]) for r in ranks}) == 1  # equal steps on every rank
    for r in ranks:
        assert r["drop"]["0"] != r["drop"]["1"]
        assert r["drop"]["resumed"] == r["drop"]["1"][2:] and r["pad"]["resumed"] == r["pad"]["1"][2:]


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_cli_errors_under_mpirun_exit_2_without_hang(tmp_path):
    p = hpcgan("data", "stats", str(tmp_path / "missing.h5"), np_ranks=2, timeout=150)
    assert p.returncode == 2, show(p)
    assert "missing.h5: no such file" in p.stderr, show(p)
    # A NaN only in rank 1's half: rank 0 must not wait in the allreduce.
    d = write_indexed(tmp_path / "nan.h5", 40)
    with h5py.File(d, "r+") as f:
        f["inputs"][35, 1, 0, 0] = np.nan
    p = hpcgan("data", "stats", str(d), np_ranks=2, timeout=150)
    assert p.returncode == 2, show(p)
    assert "nan.h5: dataset 'inputs' sample 35: non-finite value (NaN or Inf) (rank 1 of 2)" in p.stderr, show(p)
    assert p.stderr.count("non-finite") == 1, show(p)  # rank 0 reports it once, for both ranks


@pytest.mark.mpi
@pytest.mark.timeout(400)
def test_synth_identical_for_1_and_2_writer_ranks_and_parallel_stats(tmp_path):
    args = ["data", "synth", "crf", "--n", "1100", "--size", "8", "8", "--seed", "4", "--quiet"]
    p1 = hpcgan(*args, "--out", str(tmp_path / "one.h5"), "--backend", "local", timeout=200)
    assert p1.returncode == 0, show(p1)
    p2 = hpcgan(*args, "--out", str(tmp_path / "two.h5"), np_ranks=2, timeout=200)
    assert p2.returncode == 0, show(p2)
    parts = [tmp_path / "two-00000-of-00002.h5", tmp_path / "two-00001-of-00002.h5"]
    assert [read_attrs(x)["n"] for x in parts] == [1024, 76]
    with h5py.File(tmp_path / "one.h5", "r") as f:
        one = {k: f[k][:] for k in ("inputs", "targets", "meta/tau")}
    for k, v in one.items():
        two = []
        for x in parts:
            with h5py.File(x, "r") as f:
                two.append(f[k][:])
        np.testing.assert_array_equal(np.concatenate(two), v)
    # stats from 2 ranks (allreduce) equal the writer's streamed stats
    before = read_attrs(tmp_path / "one.h5")
    p = hpcgan("data", "stats", str(tmp_path / "one.h5"), np_ranks=2, timeout=200)
    assert p.returncode == 0 and "by 2 rank(s)" in p.stdout, show(p)
    after = read_attrs(tmp_path / "one.h5")
    for kind in ("input_stats", "target_stats"):
        for k in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(after[kind][k], before[kind][k], rtol=1e-6, atol=1e-9)
