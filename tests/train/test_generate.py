"""`hpcgan generate` over 2 ranks: one output per input, a valid dataset, the rate printed; bad input -> exit 2."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hpcgan.data.format import read_attrs, validate
from hpcgan.data.reader import ShardedReader

from conftest import SHORT_TIMEOUTS, SLOW_ROOT_WORKER, write_crf

pytestmark = pytest.mark.mpi
HPCGAN = str(Path(sys.executable).parent / "hpcgan")


@pytest.fixture
def lhc_run(tmp_path, run_single):
    tmp = tmp_path / "gen"
    tmp.mkdir()
    data = tmp / "hits.h5"
    job = run_single([HPCGAN, "data", "synth", "lhc", "--n", "301", "--seed", "5", "--out", data], timeout=120)
    assert job.returncode == 0, job.describe()
    job = run_single([HPCGAN, "train", "--config", "lhc-small", "--backend", "local", f"data.path={data}",
                      "data.val_path=", "train.max_steps=2", "train.batch_size=32", f"run_dir={tmp / 'run'}"],
                     timeout=180)
    assert job.returncode == 0, job.describe()
    return tmp, data


@pytest.mark.timeout(300)
def test_generate_one_track_per_input(lhc_run, run_mpi):
    tmp, data = lhc_run
    out = tmp / "tracks.h5"
    before = sorted((tmp / "run" / "checkpoints").iterdir())
    job = run_mpi(2, [HPCGAN, "generate", "--config", "lhc", "--checkpoint", tmp / "run", "--data", data,
                      "--out", out, "--batch-size", "64", "seed=3"], timeout=180)
    assert sorted((tmp / "run" / "checkpoints").iterdir()) == before  # overrides write nothing next to it
    assert "tracks/s in the generator" in job.output
    validate(out)
    a, src = read_attrs(out), read_attrs(data)
    assert a["n"] == src["n"] == 301 and a["target_shape"] == src["target_shape"]
    got = ShardedReader(str(out), 0, 1, 1, 0, shuffle=False, normalize=False)
    ref = ShardedReader(str(data), 0, 1, 1, 0, shuffle=False, normalize=False)
    xg, yg = got.read_samples(np.arange(301))
    xr, yr = ref.read_samples(np.arange(301))
    np.testing.assert_array_equal(xg, xr)  # inputs copied in order: output i belongs to input i
    assert np.isfinite(yg).all() and not np.array_equal(yg, yr)
    np.testing.assert_array_equal(got.read_meta("true_params"), ref.read_meta("true_params"))
    assert not list(tmp.glob(".tracks.h5.part*")), "per-rank part files are cleaned up"


@pytest.mark.timeout(300)
def test_generate_rejects_wrong_workload_file(lhc_run, tmp_path, run_mpi):
    tmp, _ = lhc_run
    crf = write_crf(tmp_path / "crf.h5", 8)
    job = run_mpi(2, [HPCGAN, "generate", "--checkpoint", tmp / "run", "--data", crf, "--out", tmp_path / "o.h5"],
                  timeout=120, check=False)
    assert job.returncode == 2, job.describe()
    errors = [l for l in job.text.splitlines() if "hpcgan: error:" in l]
    assert len(errors) == 2 and all("crf.h5" in l and "'crf'" in l and "'lhc'" in l for l in errors), job.output
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_slow_work_on_rank_0_after_generation_does_not_end_the_job(lhc_run, tmp_path, run_mpi, command):
    """Rank 0 merges the output file (generate) or runs the science evaluation (evaluate) 8 s longer than
    the 4 s collective timeout and stall shutdown: the others wait in short polls and the command succeeds."""
    tmp, data = lhc_run
    args = (["merge", "8", "generate", "--checkpoint", tmp / "run", "--out", tmp_path / "t.h5"] if command == "generate"
            else ["evaluate", "8", "evaluate", tmp / "run", "--out", tmp_path / "eval", "--max-samples", "128"])
    job = run_mpi(2, [SLOW_ROOT_WORKER, *args, "--data", data, "--batch-size", "64"], timeout=200,
                  env=SHORT_TIMEOUTS)
    if command == "generate":
        assert "tracks/s in the generator" in job.output, job.describe()
        validate(tmp_path / "t.h5")
    else:
        assert (tmp_path / "eval" / "summary.json").exists(), job.describe()
