"""DatasetWriter, read_attrs and validate: layout, streamed stats, atomic write, rejected input."""
import json

import h5py
import numpy as np
import pytest

from hpcgan.data.format import FORMAT_VERSION, ChannelStats, DatasetWriter, read_attrs, sample_chunk_rows, validate
from hpcgan.errors import UserError


def _write(path, x, y, dtype="float32", block=7, meta=None):
    spec = {"m": ((2,), "float32")} if meta is not None else {}
    with DatasetWriter(path, "crf", len(x), x.shape[1:], y.shape[1:], [f"i{c}" for c in range(x.shape[1])],
                       [f"o{c}" for c in range(y.shape[1])], meta_spec=spec, provenance={"seed": 3}, dtype=dtype) as w:
        for a in range(0, len(x), block):
            w.write(x[a:a + block], y[a:a + block], None if meta is None else {"m": meta[a:a + block]})


def test_roundtrip_layout_and_stats(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(30, 4, 5, 3)) * [[[[1]], [[10]], [[100]], [[0.1]]]] + 280).astype(np.float32)
    y = rng.random((30, 3, 5, 3)).astype(np.float32)
    meta = rng.random((30, 2)).astype(np.float32)
    p = tmp_path / "a.h5"
    _write(p, x, y, meta=meta)
    a = validate(p)
    assert a["format_version"] == FORMAT_VERSION and a["workload"] == "crf" and a["n"] == 30
    assert a["input_channels"] == ["i0", "i1", "i2", "i3"] and a["provenance"] == {"seed": 3}
    flat = x.transpose(1, 0, 2, 3).reshape(4, -1).astype(np.float64)
    np.testing.assert_allclose(a["input_stats"]["mean"], flat.mean(1), rtol=1e-12)
    np.testing.assert_allclose(a["input_stats"]["std"], flat.std(1), rtol=1e-9)
    np.testing.assert_array_equal(a["input_stats"]["min"], flat.min(1))
    np.testing.assert_array_equal(a["target_stats"]["max"], y.transpose(1, 0, 2, 3).reshape(3, -1).max(1))
    with h5py.File(p, "r") as f:
        assert f["inputs"].chunks == (30, 4, 5, 3) and f["targets"].chunks == (30, 3, 5, 3)  # small: grouped
        np.testing.assert_array_equal(f["inputs"][:], x)
        np.testing.assert_array_equal(f["meta/m"][:], meta)
        assert json.loads(f.attrs["provenance"]) == {"seed": 3}
    assert list(tmp_path.iterdir()) == [p]  # no temp file left


def test_float16_storage_stats_match_stored_values(tmp_path):
    x = np.linspace(0, 3, 10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3) + 0.0001
    p = tmp_path / "h.h5"
    _write(p, x, x[:, :1], dtype="float16")
    a = read_attrs(p)
    assert a["storage_dtype"] == "float16"
    stored = x.astype(np.float16).astype(np.float64)
    np.testing.assert_allclose(a["input_stats"]["mean"], stored.transpose(1, 0, 2).reshape(2, -1).mean(1), rtol=1e-12)


def test_chan_merge_equals_one_pass():
    rng = np.random.default_rng(1)
    x = rng.normal(300, 2, size=(50, 3, 4))
    whole, parts = ChannelStats(3), ChannelStats(3)
    whole.update(x)
    for a in (0, 5, 17, 40):
        parts.update(x[a:{0: 5, 5: 17, 17: 40, 40: 50}[a]])
    np.testing.assert_allclose(parts.mean, whole.mean, rtol=1e-13)
    np.testing.assert_allclose(parts.std, whole.std, rtol=1e-10)


def test_failed_write_leaves_nothing(tmp_path):
    p = tmp_path / "f.h5"
    x = np.zeros((4, 1, 2), np.float32)
    with pytest.raises(RuntimeError):
        with DatasetWriter(p, "t", 4, (1, 2), (1, 2), ["a"], ["b"]) as w:
            w.write(x[:2], x[:2])
            raise RuntimeError("boom")
    with pytest.raises(UserError, match="2 samples written, 4 declared"):
        with DatasetWriter(p, "t", 4, (1, 2), (1, 2), ["a"], ["b"]) as w:
            w.write(x[:2], x[:2])
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_blocks(tmp_path):
    x = np.zeros((4, 1, 2), np.float32)
    with DatasetWriter(tmp_path / "g.h5", "t", 4, (1, 2), (1, 2), ["a"], ["b"], exact=False) as w:
        bad = x.copy()
        bad[1, 0, 1] = np.nan
        with pytest.raises(UserError, match=r"dataset 'inputs' sample 1: non-finite"):
            w.write(bad, x)
        with pytest.raises(UserError, match="block shapes"):
            w.write(x[:, :, :1], x)
        w.write(x[:3], x[:3])
    assert read_attrs(tmp_path / "g.h5")["n"] == 3  # exact=False: shrunk to what was written


def test_chunks_hold_whole_samples_of_about_64_kib(tmp_path):
    """A million one-sample chunks cost GBs of HDF5 bookkeeping per reader: small samples are grouped,
    an image larger than 64 KiB stays one sample per chunk (no rank reads a neighbour's pixels)."""
    assert sample_chunk_rows((5,), np.float32) == 3276 and sample_chunk_rows((44, 256, 256), np.float32) == 1
    assert sample_chunk_rows((3, 64, 64), np.float16) == 2 and sample_chunk_rows((1, 128, 128), np.float32) == 1
    rng = np.random.default_rng(1)
    x, y = rng.random((5000, 5)).astype(np.float32), rng.random((5000, 3, 2048)).astype(np.float32)
    p = tmp_path / "c.h5"
    _write(p, x, y, block=999)
    validate(p)
    with h5py.File(p, "r") as f:
        assert f["inputs"].chunks == (3276, 5) and f["targets"].chunks == (2, 3, 2048)
        np.testing.assert_array_equal(f["inputs"][:], x)
        np.testing.assert_array_equal(f["targets"][4321:4400], y[4321:4400])


@pytest.mark.parametrize("case,message", [
    ("version", "format version 99 not supported"),
    ("no_version", "attribute 'format_version' missing"),
    ("missing", "dataset 'targets' missing"),
    ("rank", "dataset 'inputs' has rank 1"),
    ("count", "dataset 'targets' has 5 samples but dataset 'inputs' has 6"),
    ("chunks", "expected whole samples per chunk"),
    ("big_chunks", "expected at most 1048576"),
    ("nan", "dataset 'targets' sample 4: non-finite value"),
    ("stats", "per-channel statistics missing"),
])
def test_validate_names_the_problem(tmp_path, case, message):
    p = tmp_path / f"{case}.h5"
    _write(p, np.ones((6, 2, 3), np.float32), np.ones((6, 1, 3), np.float32))
    with h5py.File(p, "r+") as f:
        if case == "version":
            f.attrs["format_version"] = 99
        elif case == "no_version":
            del f.attrs["format_version"]
        elif case == "missing":
            del f["targets"]
        elif case == "rank":
            del f["inputs"]
            f["inputs"] = np.ones(6, np.float32)
        elif case == "count":
            del f["targets"]
            f["targets"] = np.ones((5, 1, 3), np.float32)
        elif case == "chunks":
            del f["inputs"]
            f.create_dataset("inputs", data=np.ones((6, 2, 3), np.float32), chunks=(3, 1, 3))
        elif case == "big_chunks":  # 3 samples of 400 KB in one chunk: the reader would read 1.2 MB per sample
            del f["inputs"]
            f.create_dataset("inputs", data=np.ones((6, 2, 50000), np.float32), chunks=(3, 2, 50000))
        elif case == "nan":
            f["targets"][4, 0, 1] = np.inf
        elif case == "stats":
            del f.attrs["input_mean"]
    with pytest.raises(UserError, match=message) as e:
        validate(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_missing_and_non_hdf5(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_attrs(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(UserError, match="cannot open as HDF5"):
        read_attrs(tmp_path / "text.h5")
