"""`hpcgan data ...`: the happy path and every bad-input case as one line + exit code 2."""
import h5py
import numpy as np
import pytest

from datahelp import hpcgan, show, write_indexed
from hpcgan.cli.cmd_data import shard_paths, synth_ranges
from hpcgan.cli.main import main
from hpcgan.data.format import read_attrs


def test_synth_stats_inspect_validate(tmp_path, capsys):
    out = tmp_path / "crf.h5"
    assert main(["data", "synth", "crf", "--n", "20", "--size", "8", "12", "--seed", "3", "--out", str(out),
                 "--backend", "local", "--quiet", "--opt", "beta=2.5"]) == 0
    a = read_attrs(out)
    assert a["n"] == 20 and a["input_shape"] == (44, 8, 12)
    assert a["provenance"]["generator"] == "hpcgan.workloads.crf.synth" and a["provenance"]["seed"] == 3
    assert a["provenance"]["options"] == {"beta": 2.5, "size": [8, 12]}
    with h5py.File(out, "r+") as f:  # wipe the stats, recompute them
        for k in ("mean", "std", "min", "max"):
            f.attrs[f"input_{k}"] = np.zeros(44)
    assert main(["data", "stats", str(out), "--backend", "local"]) == 0
    np.testing.assert_allclose(read_attrs(out)["input_stats"]["mean"], a["input_stats"]["mean"], rtol=1e-9)
    capsys.readouterr()
    assert main(["data", "inspect", str(out), "--plot", str(tmp_path / "s.png")]) == 0
    text = capsys.readouterr().out
    for piece in ("workload 'crf'", "chunks (3, 44, 8, 12)", "RH_200", "reflectance_443", "provenance", "meta/tau"):
        assert piece in text
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert main(["data", "validate", str(out)]) == 0


def test_shard_naming_and_block_aligned_ranges():
    assert synth_ranges(3000, 2, 1024) == [(0, 1024), (1024, 3000)]
    assert synth_ranges(100, 4, 1024) == [(0, 100)]
    assert synth_ranges(5000, 3, 1024) == [(0, 1024), (1024, 3072), (3072, 5000)]
    assert shard_paths("d/crf.h5", 2) == ["d/crf-00000-of-00002.h5", "d/crf-00001-of-00002.h5"]
    assert shard_paths("d/crf.h5", 1) == ["d/crf.h5"]


def _bad(tmp_path, case):
    p = write_indexed(tmp_path / f"{case}.h5", 10)
    with h5py.File(p, "r+") as f:
        if case == "missing_dataset":
            del f["inputs"]
        elif case == "n_mismatch":
            del f["targets"]
            f["targets"] = np.zeros((11, 2, 2, 2), np.float32)
        elif case == "rank":
            del f["targets"]
            f["targets"] = np.zeros((10,), np.float32)
        elif case == "version":
            f.attrs["format_version"] = 0
        elif case == "nan":
            f["inputs"][6, 0, 1, 1] = np.inf
    return p


def test_inspect_warns_about_nonfinite_values(tmp_path, capsys):
    path = write_indexed(tmp_path / "d.h5", 20)
    assert main(["data", "inspect", str(path)]) == 0
    assert capsys.readouterr().err == ""  # a clean file: no warning
    with h5py.File(path, "r+") as f:
        f["inputs"][7, 0, 1, 1] = np.nan
        f["inputs"][12, 2, 0, 0] = np.inf
        f["inputs"][12, 1, 0, 0] = -np.inf
    assert main(["data", "inspect", str(path)]) == 0  # inspect describes; validate rejects
    out = capsys.readouterr()
    assert "samples 20" in out.out
    assert out.err == (f"hpcgan: warning: {path}: dataset 'inputs': 3 non-finite value(s) (NaN or Inf) in 2 "
                       "sample(s), first at sample 7\n"), out.err
    from hpcgan.data.inspect import nonfinite_warnings
    assert nonfinite_warnings(str(path), limit_bytes=1000)[0].startswith(f"note: {path}: values not checked")


CASES = [
    ("no_file", "no such file"),
    ("glob", "no file matches this glob"),
    ("missing_dataset", "dataset 'inputs' missing"),
    ("n_mismatch", "dataset 'targets' has 11 samples but dataset 'inputs' has 10"),
    ("rank", "dataset 'targets' has rank 1"),
    ("version", "format version 0 not supported"),
    ("nan", "dataset 'inputs' sample 6: non-finite value"),
    ("shapes", "sample shape (3, 2, 3) differs"),
]


def _path_for(tmp_path, case):
    if case == "no_file":
        return str(tmp_path / "absent.h5")
    if case == "glob":
        return str(tmp_path / "absent-*.h5")
    if case == "shapes":
        from hpcgan.data.format import DatasetWriter
        write_indexed(tmp_path / "s-0.h5", 4)
        with DatasetWriter(tmp_path / "s-1.h5", "test", 2, (3, 2, 3), (2, 2, 2), ["a", "b", "c"], ["x", "y"]) as w:
            w.write(np.zeros((2, 3, 2, 3), np.float32), np.zeros((2, 2, 2, 2), np.float32))
        return str(tmp_path / "s-*.h5")
    return str(_bad(tmp_path, case))


@pytest.mark.parametrize("case,message", CASES)
def test_bad_input_one_line_exit_2(tmp_path, capsys, case, message):
    path = _path_for(tmp_path, case)
    command = "stats" if case in ("nan",) else "validate"
    code = main(["data", command, path] + (["--backend", "local"] if command == "stats" else []))
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and err.startswith("hpcgan: error: ")
    assert (path.split("*")[0] if case in ("glob", "shapes") else path) in err


@pytest.mark.timeout(300)
def test_real_process_exit_code(tmp_path):
    p = hpcgan("data", "inspect", str(tmp_path / "absent.h5"), timeout=120)
    assert p.returncode == 2, show(p)
    assert p.stderr.strip() == f"hpcgan: error: {tmp_path / 'absent.h5'}: no such file", show(p)
    p = hpcgan("data", "synth", "crf", "--n", "3", "--out", str(tmp_path / "x.h5"), "--opt", "bogus=1",
               "--backend", "local", timeout=120)
    assert p.returncode == 2 and "unknown option(s) bogus" in p.stderr, show(p)
