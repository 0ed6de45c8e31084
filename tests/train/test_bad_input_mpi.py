"""Bad input under `mpirun -np 2 hpcgan train`: one line from rank 0, exit code 2, no abort.

Every case here is an error every rank sees alike (config values, data files), so
the job must end cleanly in step: the ranks together print exactly one line
(rank 0's), nothing says "aborting", and mpirun reports no MPI_Abort. mpirun's own
untagged notice that a process exited non-zero is the launcher's, not ours: the
ranks cannot suppress it (`mpirun -q` does), so lines are counted per rank tag.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import TINY, write_crf

pytestmark = pytest.mark.mpi

HERE = Path(__file__).parent
TAG = re.compile(r"\[\d+,(\d+)\]<(stdout|stderr)>:")


def rank_lines(output: str) -> tuple[list[str], str]:
    """(the ranks' lines, each stream put back together; the launcher's untagged text).

    mpirun tags every line a rank writes, so a tagged chunk belongs to its rank up to
    its first newline; anything after that newline is the launcher's."""
    parts = TAG.split(output)
    streams: dict[tuple[str, str], str] = {}
    launcher = parts[0]
    for rank, stream, chunk in zip(parts[1::3], parts[2::3], parts[3::3]):
        own, newline, rest = chunk.partition("\n")
        streams[(rank, stream)] = streams.get((rank, stream), "") + own + newline
        launcher += rest
    lines = [f"[{r}/{s}] {line}" for (r, s), text in sorted(streams.items()) for line in text.splitlines()
             if line.strip()]
    return lines, launcher


def assert_one_line(job, message: str) -> None:
    lines, _ = rank_lines(job.output)
    assert job.returncode == 2, job.describe()
    assert len(lines) == 1, f"expected one line from the ranks, got {len(lines)}\n{job.describe()}"
    assert lines[0].startswith("[0/stderr] hpcgan: error: "), job.describe()
    assert re.search(message, lines[0]), f"{message!r} not in {lines[0]!r}\n{job.describe()}"
    for noise in ("MPI_ABORT", "ORTE_ERROR_LOG", "aborting job", "Traceback"):
        assert noise not in job.output, job.describe()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    """One small damaged file per kind of damage, from an 8-sample 16x16 CRF dataset."""
    d = tmp_path_factory.mktemp("bad")
    good = write_crf(d / "good.h5", 8)
    raw = Path(good).read_bytes()

    def copy(name: str) -> Path:
        p = d / name
        p.write_bytes(raw)
        return p

    (d / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    (d / "text.h5").write_text("not an HDF5 file\n")
    (d / "adir.h5").mkdir()
    with h5py.File(copy("no-targets.h5"), "r+") as f:
        del f["targets"]
    with h5py.File(copy("short-targets.h5"), "r+") as f:
        f["targets"].resize(6, axis=0)
    with h5py.File(copy("int-inputs.h5"), "r+") as f:
        x = f["inputs"][:]
        del f["inputs"]
        f.create_dataset("inputs", data=x.astype(np.int32), chunks=(1, *x.shape[1:]))
    with h5py.File(copy("nan.h5"), "r+") as f:
        f["inputs"][5, 2, 3, 4] = np.nan
    return {p.name: str(p) for p in d.iterdir()} | {"dir": str(d)}


CASES = [  # (name, overrides, what rank 0's one line must match); files under the bad_files folder
    ("missing file", ["data.path={d}/missing.h5"], r"missing\.h5: no such file$"),
    ("empty glob", ["data.path={d}/nomatch-*.h5"], r"nomatch-\*\.h5: no file matches this glob$"),
    ("directory", ["data.path={d}/adir.h5"], r"adir\.h5: is a directory, expected an HDF5 file$"),
    ("not HDF5", ["data.path={d}/text.h5"], r"text\.h5: cannot open as HDF5 \("),
    ("truncated", ["data.path={d}/truncated.h5"], r"truncated\.h5: cannot open as HDF5 \("),
    ("missing dataset", ["data.path={d}/no-targets.h5"], r"no-targets\.h5: dataset 'targets' missing"),
    ("sample counts", ["data.path={d}/short-targets.h5"],
     r"short-targets\.h5: dataset 'targets' has 6 samples but dataset 'inputs' has 8$"),
    ("dtype", ["data.path={d}/int-inputs.h5"], r"int-inputs\.h5: dataset 'inputs' has dtype int32, expected float32"),
    # Each rank scans its share (samples 4..7 are rank 1's): the data set is read once, not once per rank.
    ("NaN sample", ["data.path={d}/nan.h5"],
     r"nan\.h5: dataset 'inputs' sample 5: non-finite value \(NaN or Inf\) \(rank 1 of 2\)$"),
    ("bad validation file", ["data.path={d}/good.h5", "data.val_path={d}/text.h5"], r"text\.h5: cannot open as HDF5"),
    ("too few samples", ["data.path={d}/good.h5", "train.batch_size=8"],
     r"good\.h5: 8 samples cannot fill one batch of 8 on each of 2 ranks"),
    ("NaN LR", ["data.path={d}/good.h5", "train.lr_g=.nan"],
     r"config key train\.lr_g: expected a finite number > 0, got nan$"),
    ("negative LR", ["data.path={d}/good.h5", "train.lr_d=-1e-4"],
     r"config key train\.lr_d: expected a finite number > 0, got -0\.0001$"),
    ("beta", ["data.path={d}/good.h5", "train.betas=[0.5, 1.0]"],
     r"config key train\.betas\[1\]: expected a number in \[0, 1\), got 1\.0$"),
    ("dropout", ["data.path={d}/good.h5", "crf.dropout=.inf"],
     r"config key crf\.dropout: expected a number in \[0, 1\), got inf$"),
    # Seen by rank 0 alone (it reads checkpoints): still one line, naming the rank, and a clean exit.
    ("resume path", ["data.path={d}/good.h5", "--resume", "{d}/nope.pt"],
     r"--resume .*nope\.pt: no such checkpoint file or run directory \(rank 0 of 2\)$"),
]


def train_args(tmp_path, *extra: str) -> list[str]:
    return ["train", "--config", "crf-small", *TINY, "data.val_path=", f"run_dir={tmp_path / 'run'}",
            "train.epochs=1", "train.batch_size=2", *extra]


@pytest.mark.timeout(300)
def test_every_bad_input_is_one_line_from_rank_0(bad_files, tmp_path, run_mpi):
    """All cases in one job of two ranks, through the CLI's entry point (see bad_input_worker.py)."""
    d = bad_files["dir"]
    cases = [(name, train_args(tmp_path, *(a.format(d=d) for a in args))) for name, args, _ in CASES]
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    job = run_mpi(2, [HERE / "bad_input_worker.py", spec], timeout=240)
    records = [json.loads(line) for line in job.text.splitlines() if line.startswith("{")]
    by_case = {(r["case"], r["rank"]): r for r in records}
    assert len(by_case) == 2 * len(CASES), job.describe()
    for name, _, message in CASES:
        root, other = by_case[(name, 0)], by_case[(name, 1)]
        assert root["code"] == other["code"] == 2, f"{name}: {root} {other}"
        assert other["stderr"] == "", f"{name}: rank 1 printed {other['stderr']!r}"
        lines = root["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("hpcgan: error: "), f"{name}: {root['stderr']!r}"
        assert re.search(message, lines[0]), f"{name}: {message!r} not in {lines[0]!r}"
    assert "aborting job" not in job.output and "MPI_ABORT" not in job.output, job.describe()


# The real command, start to exit: one tagged line in all, exit code 2, no abort.
@pytest.mark.timeout(200)
@pytest.mark.parametrize("backend,extra,message", [
    ("horovod", ["data.path={d}/missing.h5"], r"missing\.h5: no such file$"),
    ("torch", ["data.path={d}/nan.h5"], r"nan\.h5: dataset 'inputs' sample 5: non-finite value"),
    ("horovod", ["data.path={d}/good.h5", "train.lr_g=.nan"], r"config key train\.lr_g: expected a finite number"),
], ids=["missing-file-horovod", "nan-torch", "config-nan-lr"])
def test_hpcgan_train_job_ends_with_one_line(backend, extra, message, bad_files, tmp_path, run_mpi, hpcgan):
    args = train_args(tmp_path, "--backend", backend, *(a.format(d=bad_files["dir"]) for a in extra))
    assert_one_line(run_mpi(2, hpcgan + args, timeout=120, check=False), message)
