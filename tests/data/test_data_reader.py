"""ShardedReader in one process: partition, determinism, resume, multi-file, cache, errors, thread failures."""
import os
import time

import h5py
import numpy as np
import pytest
import torch

from hpcgan.data.reader import ShardedReader, continued_plan, epoch_order, plan_epoch
from hpcgan.errors import UserError


def _read_all(reader, epoch, start_step=0):
    """Global indices decoded from the data actually read (inputs[:, 0] == index when not normalised)."""
    out = []
    for x, y, _ in reader.epoch(epoch, start_step):
        assert x.dtype == torch.float32 and y.dtype == torch.float32
        idx = x[:, 0, 0, 0].numpy().astype(np.int64)
        np.testing.assert_array_equal(x[:, 2, 1, 1].numpy(), idx + 2000)
        np.testing.assert_array_equal(y[:, 1, 0, 1].numpy(), -idx)
        out.append(idx)
    return np.array(out)


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_every_sample_once_per_epoch(indexed, size, remainder):
    n, batch = 103, 4
    p = indexed(n)
    readers = [ShardedReader(p, r, size, batch, seed=5, remainder=remainder, normalize=False) for r in range(size)]
    for epoch in (0, 1):
        got = [_read_all(rd, epoch) for rd in readers]
        assert len({len(g) for g in got}) == 1  # same number of steps on every rank
        for g, rd in zip(got, readers):
            np.testing.assert_array_equal(g, rd.batch_indices(epoch))
        flat = np.concatenate([g.ravel() for g in got])
        unit = size * batch
        if remainder == "drop":
            assert len(flat) == n // unit * unit and len(set(flat)) == len(flat)
        else:
            assert set(flat) == set(range(n)) and len(flat) == -(-n // unit) * unit
            assert len(flat) - len(set(flat)) == len(flat) - n  # only the padding repeats


def test_deterministic_per_seed_and_epoch_and_differs_across_epochs(indexed):
    p = indexed(200)
    a = ShardedReader(p, 1, 2, 8, seed=11, normalize=False)
    b = ShardedReader(p, 1, 2, 8, seed=11, normalize=False)
    np.testing.assert_array_equal(_read_all(a, 3), _read_all(b, 3))
    assert not np.array_equal(a.batch_indices(3), a.batch_indices(4))
    assert not np.array_equal(a.batch_indices(3), ShardedReader(p, 1, 2, 8, seed=12, normalize=False).batch_indices(3))
    assert sorted(epoch_order(200, 11, 0, shuffle=True)) == list(range(200))
    np.testing.assert_array_equal(epoch_order(50, 1, 0, shuffle=False), np.arange(50))


def test_resume_mid_epoch_gives_the_remaining_sequence(indexed, monkeypatch):
    p = indexed(120)
    rd = ShardedReader(p, 0, 2, 5, seed=2, normalize=False)
    full = _read_all(rd, 1)
    reads = []
    orig = ShardedReader.read_sorted
    monkeypatch.setattr(ShardedReader, "read_sorted", lambda self, u, f, check=False: (reads.append(u.copy()), orig(self, u, f, check))[1])
    rest = _read_all(rd, 1, start_step=7)
    np.testing.assert_array_equal(rest, full[7:])
    skipped = set(full[:7].ravel())
    assert not skipped & set(np.concatenate(reads))  # skipped batches were not read
    assert len(rd.epoch(1, rd.steps_per_epoch)) == 0


def _runs(indices: np.ndarray, gap: int = 0) -> int:
    """Reads needed for these indices: runs of consecutive samples, merging gaps of at most `gap` samples."""
    u = np.unique(indices.ravel())
    return 1 + int(np.count_nonzero(np.diff(u) - 1 > gap))


@pytest.mark.parametrize("size,batch,long_runs,merged", [(2, 32, 10, 24), (8, 32, 30, 30), (64, 4, 4, 4)])
def test_reads_are_grouped_into_contiguous_runs(size, batch, long_runs, merged):
    """Each rank's slice of a global batch is a block-aligned span: one window of 8 blocks per global batch
    (size x batch >= 256) gives each rank runs of min(batch, block) samples; smaller global batches interleave
    near the slices' edges, which the reader's gap merging reads as one slab."""
    plan = plan_epoch(8192, size, batch, seed=0, epoch=0, shuffle=True, shuffle_block=32, remainder="drop")
    group = plan[0, :16]  # what one read group asks for
    assert group.size / _runs(group) >= long_runs  # long slabs, not single samples
    assert group.size / _runs(group, gap=32) >= merged  # nearly whole blocks once small gaps are read through
    assert len(np.unique(plan[0, 0])) > 1 and not np.all(np.diff(plan[0, 0]) == 1)  # yet batches are shuffled


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_global_batches_do_not_depend_on_the_rank_count(remainder):
    """Global batch k holds the same samples at 1 x 4b, 2 x 2b and 4 x b (and its one-rank order is the order
    of every rank's slice, concatenated by position)."""
    n, unit = 1000, 64
    one = plan_epoch(n, 1, unit, seed=4, epoch=2, shuffle=True, shuffle_block=8, remainder=remainder)[0]
    for size in (2, 4, 8):
        plan = plan_epoch(n, size, unit // size, seed=4, epoch=2, shuffle=True, shuffle_block=8, remainder=remainder)
        for k in range(len(one)):
            np.testing.assert_array_equal(np.sort(plan[:, k].ravel()), np.sort(one[k]))
            # each rank's slice keeps the one-rank batch's order
            for r in range(size):
                where = {int(v): i for i, v in enumerate(one[k])}
                assert all(np.diff([where[int(v)] for v in plan[r, k]]) > 0)


# plan_epoch(100, 1, 8, seed=3, epoch=1, shuffle_block=4)[0, :2] computed by the reader at 6b0497a.
RECORDED_ONE_RANK = [[87, 2, 38, 53, 80, 42, 10, 48], [49, 86, 0, 82, 54, 37, 81, 52]]


def test_one_rank_plan_matches_the_recorded_order():
    """The one-rank order is the one every earlier release trained on (pinned: 1-rank runs keep their weights)."""
    plan = plan_epoch(100, 1, 8, seed=3, epoch=1, shuffle=True, shuffle_block=4, remainder="drop")
    assert plan[0, :2].tolist() == RECORDED_ONE_RANK


def test_continued_epoch_reads_the_rest_once():
    """A checkpoint at 2 x 8 after 5 global batches, continued at 3 x 4 (another global batch): exactly the
    samples not yet consumed, each once; only a tail shorter than the new global batch is left out."""
    n = 400
    old = np.concatenate(list(plan_epoch(n, 2, 8, 1, 0, True, 8, "drop").transpose(1, 0, 2)))  # (steps*2, 8)
    consumed = set(old[:10].ravel().tolist())
    rest = set(old[10:].ravel().tolist())
    got = np.concatenate([continued_plan(n, r, 3, 4, 1, 0, True, 8, "drop", unit=16, consumed=5 * 16).ravel()
                          for r in range(3)])
    assert len(got) == len(set(got.tolist())) and not set(got.tolist()) & consumed
    assert len(rest) - len(got) < 12 and set(got.tolist()) <= rest


def test_multi_file_dataset_is_one_index_space(indexed, tmp_path):
    indexed(37, "m-0.h5", first=0)
    indexed(30, "m-1.h5", first=37)
    indexed(20, "m-2.h5", first=67)
    rd = ShardedReader(str(tmp_path / "m-*.h5"), 0, 1, 3, seed=0, remainder="pad", normalize=False)
    assert rd.num_samples == 87 and rd.attrs["n"] == 87
    got = _read_all(rd, 0)
    assert set(got.ravel()) == set(range(87))
    np.testing.assert_array_equal(rd.read_meta("index"), np.arange(87))
    x, y = rd.read_samples([86, 0, 37, 36])
    np.testing.assert_array_equal(x[:, 0, 0, 0], [86, 0, 37, 36])
    # stats merged over files equal the stats of the concatenation
    one = indexed(87, "one.h5")
    for k in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(rd.attrs["input_stats"][k], ShardedReader(one, 0, 1, 1, 0).attrs["input_stats"][k])


def test_normalised_inputs_use_stored_stats(indexed):
    p = indexed(40)
    rd = ShardedReader(p, 0, 1, 8, seed=0)
    st = rd.attrs["input_stats"]
    for (x, _, _), idx in zip(rd.epoch(0), rd.batch_indices(0)):
        raw = idx[:, None] + 1000.0 * np.arange(3)[None, :]
        np.testing.assert_allclose(x[:, :, 0, 0].numpy(), (raw - st["mean"]) / st["std"], rtol=1e-5, atol=1e-5)


def test_cache_keeps_a_fixed_shard_and_covers_every_sample(indexed):
    p = indexed(64)
    readers = [ShardedReader(p, r, 2, 4, seed=3, cache=True, normalize=False) for r in range(2)]
    shards = []
    for epoch in range(3):
        got = [_read_all(rd, epoch) for rd in readers]
        assert sorted(np.concatenate([g.ravel() for g in got])) == list(range(64))
        shards.append([set(g.ravel()) for g in got])
    assert shards[0] == shards[1] == shards[2]
    assert not np.array_equal(readers[0].batch_indices(0), readers[0].batch_indices(1))
    np.testing.assert_array_equal(_read_all(readers[0], 2, 3), readers[0].batch_indices(2, 3))


def test_unshuffled_reader_reads_in_order(indexed):
    """Unshuffled, global batch k is samples k*8..k*8+7 and rank 1 of 2 takes the second half of each."""
    rd = ShardedReader(indexed(32), 1, 2, 4, seed=0, shuffle=False, normalize=False)
    np.testing.assert_array_equal(_read_all(rd, 0), np.arange(32).reshape(4, 2, 4)[:, 1])


def test_float16_files_come_out_float32(indexed):
    rd = ShardedReader(indexed(20, dtype="float16"), 0, 1, 4, seed=0, normalize=False)
    assert set(_read_all(rd, 0).ravel()) == set(range(20))


def test_thread_error_reaches_the_consumer_without_hanging(indexed, tmp_path):
    p = indexed(64)
    rd = ShardedReader(p, 0, 1, 4, seed=0, check_finite="batch", prefetch=1, normalize=False)
    with h5py.File(p, "r+") as f:
        f["inputs"][rd.batch_indices(0)[5][2], 1, 0, 0] = np.nan
    t0 = time.time()
    with pytest.raises(UserError, match=rf"{p}: dataset 'inputs' sample {rd.batch_indices(0)[5][2]}: non-finite"):
        _read_all(rd, 0)
    os.remove(p)
    with pytest.raises(UserError, match="no such file"):
        next(iter(rd.epoch(0)))
    assert time.time() - t0 < 30


def test_breaking_out_early_stops_the_thread(indexed):
    rd = ShardedReader(indexed(200), 0, 1, 2, seed=0, prefetch=1)
    it = rd.epoch(0)
    next(it)
    it.close()
    assert not it._thread.is_alive()


def test_file_locking_off_by_default():
    assert os.environ.get("HDF5_USE_FILE_LOCKING") in ("FALSE", "TRUE", "BEST_EFFORT")


def _corrupt(path, case):
    with h5py.File(path, "r+") as f:
        if case == "missing_dataset":
            del f["targets"]
        elif case == "n_mismatch":
            del f["targets"]
            f["targets"] = np.zeros((9, 2, 2, 2), np.float32)
        elif case == "rank":
            del f["inputs"]
            f["inputs"] = np.zeros(10, np.float32)
        elif case == "version":
            f.attrs["format_version"] = 2
        elif case == "nan":
            f["targets"][7, 0, 0, 0] = np.nan


@pytest.mark.parametrize("case,message", [
    ("missing_dataset", "dataset 'targets' missing"),
    ("n_mismatch", "dataset 'targets' has 9 samples but dataset 'inputs' has 10"),
    ("rank", "dataset 'inputs' has rank 1"),
    ("version", "format version 2 not supported"),
    ("nan", "dataset 'targets' sample 7: non-finite value"),
])
def test_bad_files_name_file_dataset_index(indexed, case, message):
    p = indexed(10)
    _corrupt(p, case)
    with pytest.raises(UserError, match=message) as e:
        ShardedReader(p, 0, 1, 2, seed=0, check_finite="open")
    assert str(p) in str(e.value)


def test_other_bad_inputs(indexed, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        ShardedReader(tmp_path / "none.h5", 0, 1, 2, 0)
    with pytest.raises(UserError, match="no file matches this glob"):
        ShardedReader(str(tmp_path / "none-*.h5"), 0, 1, 2, 0)
    p = indexed(10)
    with pytest.raises(UserError, match="cannot fill one batch of 4 on each of 3 ranks"):
        ShardedReader(p, 0, 3, 4, 0).epoch(0)
    with pytest.raises(UserError, match=r"dataset 'meta/nope' missing \(available meta: index\)"):
        ShardedReader(p, 0, 1, 2, 0).read_meta("nope")
    other = tmp_path / "other"
    other.mkdir()
    from datahelp import write_indexed
    from hpcgan.data.format import DatasetWriter
    with DatasetWriter(other / "b.h5", "test", 4, (3, 2, 3), (2, 2, 2), ["a", "b", "c"], ["x", "y"]) as w:
        w.write(np.zeros((4, 3, 2, 3), np.float32), np.zeros((4, 2, 2, 2), np.float32))
    write_indexed(other / "a.h5", 4)
    with pytest.raises(UserError, match=r"b.h5: dataset 'inputs' sample shape \(3, 2, 3\) differs"):
        ShardedReader(str(other / "*.h5"), 0, 1, 2, 0)


def test_nan_found_per_batch_in_large_mode(indexed):
    p = indexed(30)
    _corrupt(p, "nan")
    rd = ShardedReader(p, 0, 1, 30, seed=0, check_finite="batch")  # opens fine
    with pytest.raises(UserError, match="sample 7: non-finite"):
        next(iter(rd.epoch(0)))
    rd = ShardedReader(p, 0, 1, 30, seed=0, check_finite="off")
    assert torch.isnan(next(iter(rd.epoch(0)))[1]).any()


def test_shuffled_epoch_is_read_in_long_slabs(indexed, monkeypatch):
    rd = ShardedReader(indexed(1000), 1, 2, 8, seed=4, shuffle_block=32, normalize=False)
    runs = []
    orig = ShardedReader._slabs

    def spy(self, uniq, fidx):
        runs.append(len(orig(self, uniq, fidx)))
        return orig(self, uniq, fidx)

    monkeypatch.setattr(ShardedReader, "_slabs", spy)
    got = _read_all(rd, 0)
    assert len(got) * 8 / sum(runs) >= 16  # samples per slab read


@pytest.mark.parametrize("n,limit", [(2999, 0), (2999, 1001)])
def test_evaluation_shares_at_1024_ranks_read_each_sample_once(indexed, n, limit):
    """Validation at any rank count (eval_batches): uneven shares, short last batches and ranks without samples
    still read every evaluated sample exactly once, so sample-weighted sums equal a 1-rank evaluation's.
    With a limit, the evaluated samples are spread evenly over the file."""
    from hpcgan.data.reader import eval_share

    p = indexed(n)
    batch, size = 4, 1024
    evaluated = limit or n

    def read(rank: int, ranks: int) -> list[np.ndarray]:
        with ShardedReader(p, rank, ranks, batch, seed=0, normalize=False, check_finite="off") as rd:
            return [x[:, 0, 0, 0].numpy().astype(np.int64) for x, _, _ in rd.eval_batches(limit)]

    shares = [read(r, size) for r in range(size)]
    sizes = [sum(len(b) for b in s) for s in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes[0] >= 1
    assert all(len(b) <= batch for s in shares for b in s)
    assert [eval_share(evaluated, r, size) for r in (0, size - 1)] == [
        (0, sizes[0]), (evaluated - sizes[-1], evaluated)]
    seen = np.concatenate([b for s in shares for b in s])
    one = np.concatenate(read(0, 1))
    assert len(seen) == evaluated and np.array_equal(seen, np.arange(evaluated) * n // evaluated)  # evenly spaced
    assert np.array_equal(seen, one)  # rank order = file order: the 1-rank evaluation's samples
    # Per-rank means averaged over ranks (the old reduction) weigh samples unevenly; the weighted sum does not.
    assert seen.astype(np.float64).sum() / len(seen) == pytest.approx(one.mean(), rel=1e-12)


def test_finite_scan_is_split_over_ranks_and_done_once_per_data_set(indexed, monkeypatch):
    """check_finite=open: rank r of 3 scans its third (the data set is read once in all, not once per rank),
    a pass is remembered in the process (the trainer does not scan again after preflight), and a file
    rewritten in place since is scanned again."""
    from hpcgan.data import reader as reader_module
    from hpcgan.data.reader import mark_scanned

    p = indexed(50)
    calls = []
    orig = reader_module.find_nonfinite
    monkeypatch.setattr(reader_module, "find_nonfinite",
                        lambda f, path, name, a=0, b=None: (calls.append((name, a, b)), orig(f, path, name, a, b))[1])
    readers = [ShardedReader(p, r, 3, 4, seed=0, normalize=False, check_finite="open", defer_scan=True)
               for r in range(3)]
    assert calls == []
    for r, rd in enumerate(readers):
        rd.scan_finite(r, 3)
    assert sorted((a, b) for name, a, b in calls if name == "inputs") == [(0, 17), (17, 34), (34, 50)]
    mark_scanned(readers[0])  # what the caller does once every rank's share passed
    calls.clear()
    ShardedReader(p, 0, 1, 4, seed=0, normalize=False, check_finite="open")
    assert calls == []
    time.sleep(0.05)
    with h5py.File(p, "r+") as f:
        f["inputs"][3, 0, 0, 0] = np.nan
    with pytest.raises(UserError, match="sample 3: non-finite"):
        ShardedReader(p, 0, 1, 4, seed=0, normalize=False, check_finite="open")
