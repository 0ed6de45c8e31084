"""`hpcgan evaluate` streams: every workload's evaluation of a set split into uneven batches (as ranks and
batches split it) gives the numbers of one pass over the whole set, and what CRF sends to rank 0 does not
grow with the number of samples."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hpcgan.config import load_config
from hpcgan.workloads import get_workload
from hpcgan.workloads.evaluation import merge, merge_examples, take_examples

SPLIT = (3, 5, 1)  # then the rest: uneven, and one batch of a single sample


def _chunks(n: int):
    edges = np.cumsum((0, *SPLIT))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])] + [(int(edges[-1]), n)]


def streamed(wl, inputs, real, fake, meta, out_dir):
    parts, examples = [], []
    for a, b in _chunks(len(real)):
        sub = {k: v[a:b] for k, v in meta.items()}
        parts.append(wl.evaluation_batch(inputs[a:b], real[a:b], fake[a:b], sub))
        examples.append(take_examples(inputs[a:b], real[a:b], fake[a:b], sub, a, wl.eval_examples))
    # Two "ranks": the first three batches and the rest, merged per rank first as evaluate does.
    ranks = [merge(parts[:3]), merge(parts[3:])]
    return wl.evaluation_finish(merge(ranks), merge_examples(examples), out_dir)


def assert_same(a, b, path="summary"):
    """Equal structure; numbers equal to float rounding of a different summation order."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(a, bool):
        if math.isnan(a):
            assert math.isnan(b), path
        else:
            assert b == pytest.approx(a, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


def crf_case(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 16, 16)).astype(np.float32)
    real = (1 / (1 + np.exp(-x[:, :3]))).astype(np.float32)
    fake = np.clip(real + 0.05 * rng.standard_normal(real.shape), 0, 1).astype(np.float32)
    valid = (rng.random((n, 16, 16)) > 0.1).astype(np.uint8)
    wl = get_workload(load_config("crf-small", ["crf.size=16", "crf.in_channels=4", "crf.widths=[8,16]",
                                                "crf.d_widths=[8,16]"]))
    return wl, x, real, fake, {"valid": valid}


def test_crf_streamed_equals_one_pass_and_sends_no_images(tmp_path):
    wl, x, real, fake, meta = crf_case(23)
    whole = wl.evaluate(x, real, fake, meta, tmp_path / "whole")
    part = streamed(wl, x, real, fake, meta, tmp_path / "parts")
    assert_same(whole, part)
    assert {"l1", "spectral_distance", "coherence", "chroma"} <= whole.keys()
    # The sums are the same size for 8 samples as for 23: nothing image-sized reaches rank 0.
    small = wl.evaluation_batch(x[:8], real[:8], fake[:8], {"valid": meta["valid"][:8]})
    assert small.nbytes() == wl.evaluation_batch(x, real, fake, meta).nbytes() and not small.rows


def test_a_batch_evaluated_twice_is_not_the_one_pass(tmp_path):
    """The comparison can fail: merging one batch twice (a sample counted twice) changes the numbers."""
    wl, x, real, fake, meta = crf_case(23)
    whole = wl.evaluate(x, real, fake, meta, tmp_path / "whole")
    a = wl.evaluation_batch(x[:5], real[:5], fake[:5], {"valid": meta["valid"][:5]})
    b = wl.evaluation_batch(x[5:], real[5:], fake[5:], {"valid": meta["valid"][5:]})
    twice = wl.evaluation_finish(merge([a, a, b]), merge_examples([None]), tmp_path / "twice")
    with pytest.raises(AssertionError):
        assert_same(whole, twice)


def test_lhc_streamed_equals_one_pass(tmp_path):
    from hpcgan.workloads.lhc import synth

    parts = list(synth.generate(0, 300, 3))
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    meta = {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]}
    fake = y + 1e-3 * np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    wl = get_workload(load_config("lhc-small", []))
    assert_same(wl.evaluate(x, y, fake, meta, tmp_path / "whole"), streamed(wl, x, y, fake, meta, tmp_path / "parts"))


def test_fastsim_streamed_equals_one_pass(tmp_path):
    from hpcgan.workloads.lhc import synth_fastsim

    parts = list(synth_fastsim.generate(0, 400, 3))
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    meta = {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]}
    fake = y.copy()
    fake[:, :5] += 1e-3 * np.random.default_rng(0).standard_normal(fake[:, :5].shape).astype(np.float32)
    wl = get_workload(load_config("lhc-fastsim-small", []))
    assert_same(wl.evaluate(x, y, fake, meta, tmp_path / "whole"), streamed(wl, x, y, fake, meta, tmp_path / "parts"))


def test_galaxy_streamed_equals_one_pass(tmp_path):
    from hpcgan.data.format import DatasetWriter
    from hpcgan.workloads.galaxy import synth as sg

    opts = dict(size=(32, 32), z_range=(0.1, 0.2), p_empty=0.2, p_star=0.2, p_tidal=0.3, p_companion=0.3)
    x, y, m = next(iter(sg.generate(0, 14, 14, **opts)))
    sch = sg.schema(**opts)
    train = tmp_path / "train.h5"  # its provenance says which classes and redshifts training saw
    with DatasetWriter(train, "galaxy", len(x), sch["input_shape"], sch["target_shape"], sch["input_channels"],
                       sch["target_channels"], sch["meta_spec"],
                       provenance={"generator": "hpcgan.workloads.galaxy.synth", "options": opts}) as w:
        w.write(x, y, m)
    wl = get_workload(load_config(None, ["workload=galaxy", "galaxy.size=32", "galaxy.widths=[4,8]",
                                         "galaxy.d_widths=[8,16]", "data.normalize=false", f"data.path={train}",
                                         "galaxy.rl_iterations=5"]))
    fake = y + 0.01 * np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    whole = wl.evaluate(x, y, fake, m, tmp_path / "whole")
    assert whole["n_galaxies"] > 0 and "empty" in whole["hallucination"]
    assert_same(whole, streamed(wl, x, y, fake, m, tmp_path / "parts"))
