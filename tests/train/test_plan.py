"""The plan at N ranks (hpcgan/train/plan.py) and `hpcgan train --dry-run --world-size N`, from 1 to 1024 ranks
in one process, for every preset on files of the presets' real shapes and sizes (never written: a few kB)."""
from __future__ import annotations

import math
import re

import pytest
import torch

from hpcgan.cli.main import main
from hpcgan.config import load_config, preset_names
from hpcgan.train.plan import make_plan
from hpcgan.train.schedule import lr_factor

from conftest import write_shaped

SIZES = (1, 16, 128, 1024)
# Per preset: (train samples, validation samples, input shape, target shape), as the presets' comments give them.
DATA = {
    "crf": (3100, 600, (44, 256, 256), (3, 256, 256)),
    "crf-small": (1024, 256, (44, 32, 32), (3, 32, 32)),
    "crf-clouds-dist": (3100, 600, (44, 256, 256), (3, 256, 256)),
    "lhc": (1048576, 65536, (4, 10), (35,)),
    "lhc-small": (40960, 8192, (4, 10), (35,)),
    "lhc-fastsim": (1048576, 65536, (5,), (6,)),
    "lhc-fastsim-small": (65536, 16384, (5,), (6,)),
    "galaxy": (4096, 454, (3, 424, 424), (3, 424, 424)),
    "galaxy-small": (1024, 256, (3, 64, 64), (3, 64, 64)),
}
# The rank counts at which a preset's training set cannot fill one batch per rank (the job would stop).
TOO_FEW = {"crf": {1024}, "crf-small": {1024}, "crf-clouds-dist": {1024}, "lhc": set(), "lhc-small": {1024}, "lhc-fastsim": set(),
           "lhc-fastsim-small": {1024}, "galaxy": set(), "galaxy-small": {1024}}


def test_every_preset_is_covered():
    assert sorted(DATA) == preset_names()


@pytest.fixture(scope="module")
def preset_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-data")
    out = {}
    for name, (n_train, n_val, xs, ys) in DATA.items():
        workload = load_config(name).workload
        out[name] = (write_shaped(root / f"{name}-train.h5", workload, n_train, xs, ys),
                     write_shaped(root / f"{name}-val.h5", workload, n_val, xs, ys))
    return out


def blocks(stdout: str) -> dict[int, str]:
    """The dry run's output cut into one plan per rank count."""
    parts = re.split(r"^plan at (\d+) rank\(s\)", stdout, flags=re.M)
    return {int(n): text for n, text in zip(parts[1::2], parts[2::2])}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("preset", sorted(DATA))
def test_dry_run_at_1_to_1024_ranks(preset, preset_files, capsys):
    train, val = preset_files[preset]
    code = main(["train", "--config", preset, "--backend", "local", "--dry-run", "--world-size",
                 ",".join(map(str, SIZES)), f"data.path={train}", f"data.val_path={val}", "data.check_finite=off"])
    out, err = capsys.readouterr()
    cfg = load_config(preset)
    n_train, n_val = DATA[preset][:2]
    plans = blocks(out)
    assert sorted(plans) == list(SIZES), out
    for n, text in plans.items():
        batch = cfg.train.batch_size
        assert f"global batch     {batch * n * cfg.train.accumulation} = {n} rank(s)" in text
        scale = {"sqrt": math.sqrt(n), "linear": n, "none": 1}[cfg.train.lr_scaling]
        assert f"x {scale:.4g} (lr_scaling {cfg.train.lr_scaling}" in text
        assert re.search(r"warm-up +(none|\d+ steps = \d+ samples = [\d.]+% of the run)", text)
        evaluated = min(n_val, cfg.train.val_batches * batch) if cfg.train.val_batches else n_val
        assert f"validation       {evaluated} of {n_val} samples per epoch" in text
        if n in TOO_FEW[preset]:
            assert "per-rank shard" not in text and f"at {n} ranks: data.path {train}: {n_train} samples cannot " \
                   f"fill one batch of {batch} on each of {n} ranks" in err
        else:
            steps = n_train // (n * batch)
            assert f"steps            {steps} per epoch x {cfg.train.epochs} epoch(s)" in text
            assert f"per-rank shard   {steps} batches of {batch} = {steps * batch} samples per epoch" in text
            assert f"at {n} ranks:" not in err
    assert code == (2 if any(TOO_FEW[preset]) else 0), (out, err)
    for line in err.splitlines():
        assert line.startswith("hpcgan: error: at ")


def test_dry_run_lhc_small_at_128_ranks(preset_files, capsys):
    """The issue's acceptance command: the plan includes validation and warm-up, and exits 0."""
    train, val = preset_files["lhc-small"]
    code = main(["train", "--config", "lhc-small", "--backend", "local", "--dry-run", "--world-size", "128",
                 f"data.path={train}", f"data.val_path={val}", "data.check_finite=off"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "warm-up          none" in out
    assert "validation       1024 of 8192 samples per epoch" in out and "8 per rank in at most 1 batch(es)" in out
    assert out.strip().endswith("dry run ok at 128 rank(s)")


def test_dry_run_lists_every_error(preset_files, capsys, tmp_path):
    """A missing validation file and a too-small training set are both reported, each on its own line."""
    train, _ = preset_files["lhc-small"]
    code = main(["train", "--config", "lhc-small", "--backend", "local", "--dry-run", "--world-size", "1024",
                 f"data.path={train}", f"data.val_path={tmp_path / 'nope.h5'}", "data.check_finite=off"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(err) == 2, err
    assert err[0] == f"hpcgan: error: data.val_path: {tmp_path / 'nope.h5'}: no such file"
    assert err[1].startswith(f"hpcgan: error: data.path {train}: 40960 samples cannot fill one batch of 128 on each "
                             "of 1024 ranks")


def test_world_size_needs_dry_run(capsys):
    assert main(["train", "--config", "lhc-small", "--backend", "local", "--world-size", "4"]) == 2
    assert "--world-size plans a job without starting it" in capsys.readouterr().err


# --- the schedule means the same at any rank count -----------------------------------------------------

def test_warmup_is_the_same_share_of_the_run_at_any_rank_count():
    """crf: the old 500-step warm-up was the whole run at 16 ranks (32 steps/epoch x 15 epochs = 480)."""
    cfg = load_config("crf")
    shares = [make_plan(cfg, n, 3100, 600).warmup_fraction for n in (1, 16, 128)]
    assert all(0.05 < s < 0.08 for s in shares), shares
    assert not any("warm-up" in m and "as long as the run" in m for m in make_plan(cfg, 16, 3100).notices)


def test_sqrt_scaling_for_adam_presets_and_accumulation_counts():
    for preset in ("crf", "lhc"):
        cfg = load_config(preset)
        assert cfg.train.lr_scaling == "sqrt"
        assert make_plan(cfg, 16, 10**6).lr_g == pytest.approx(4 * cfg.train.lr_g)
    cfg = load_config("lhc", ["train.accumulation=4", "train.warmup_samples=0"])
    assert lr_factor(cfg, 4, step=0) == pytest.approx(4.0)  # sqrt(4 ranks x 4 micro-batches)
    assert make_plan(cfg, 4, 10**6).global_batch == 4 * 4 * 512


def test_warmup_in_samples_then_scaled_rate():
    cfg = load_config("lhc", ["train.warmup_samples=4096", "train.batch_size=512"])
    # 4 ranks: global batch 2048, so 2 warm-up steps from 1 to sqrt(4) = 2.
    assert [lr_factor(cfg, 4, s) for s in (0, 1, 2, 100)] == pytest.approx([1.0, 1.5, 2.0, 2.0])
    # 1 rank: 8 steps of 512 samples cover the same 4096 samples.
    assert make_plan(cfg, 1, 10**6).warmup_steps == 8


def test_a_warmup_that_does_nothing_is_a_notice():
    old = load_config("lhc", ["train.lr_scaling=none", "train.warmup_samples=1000"])
    assert any("warm-up does nothing: lr_scaling is none" in m for m in make_plan(old, 16, 10**6).notices)
    long = load_config("lhc", ["train.warmup_samples=100000000"])
    assert any("as long as the run" in m for m in make_plan(long, 16, 10**6).notices)
    steps = load_config("lhc", ["train.warmup_samples=0", "train.warmup_steps=100"])
    assert any("train.warmup_steps counts optimizer steps" in m for m in make_plan(steps, 16, 10**6).notices)
    for preset in preset_names():  # the shipped presets hold no such setting at 16 ranks
        cfg = load_config(preset)
        assert not [m for m in make_plan(cfg, 16, 10**6, 1000).notices if "warm-up" in m], preset


def test_accumulation_larger_than_the_shard_is_an_error():
    cfg = load_config("lhc-small", ["train.accumulation=4"])
    plan = make_plan(cfg, 128, 40960)
    assert plan.steps_per_epoch == 0 and plan.errors[0].startswith("train.accumulation 4: each of 128 ranks reads 2")


def test_validation_plan_when_ranks_outnumber_samples():
    cfg = load_config("crf")
    plan = make_plan(cfg, 1024, 10**5, 600)
    assert plan.val_evaluated == 600 and not plan.errors
    assert any("424 rank(s) evaluate none" in m for m in plan.notices)


@pytest.mark.timeout(300)
def test_dry_run_previews_the_resume(tmp_path, crf_data, capsys):
    """With a checkpoint in the run directory the dry run says what resuming would do: continue exactly,
    continue the interrupted epoch with the samples not yet consumed (other batch size or rank count),
    restart it (another seed: its order is another), or stop (other training data)."""
    from hpcgan.runtime import signals
    from hpcgan.runtime.backend import LocalBackend
    from hpcgan.runtime.env import ProcessInfo
    from hpcgan.train.trainer import train

    from conftest import TINY, tiny_config, write_crf

    cfg = tiny_config(tmp_path, crf_data, "train.batch_size=4", "train.max_steps=3")
    try:
        assert train(cfg, LocalBackend(ProcessInfo(), torch.device("cpu"))) == 0
    finally:
        signals.uninstall()
        signals.reset()
    base = ["train", "--config", "crf-small", "--backend", "local", *TINY, "data.val_path=", f"run_dir={cfg.run_dir}",
            "--dry-run", "--world-size", "1,2"]
    assert main(base + [f"data.path={crf_data}", "train.batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert out.count("step 3; ") == 2 and "epoch 1, step 3; continues exactly" in out
    assert ("ranks 1 -> 2: epoch 1 continues with the 20 samples not yet consumed (12 of 32 trained, 3 global "
            "batches of 1 rank(s)) in 2 steps of 8; 4 left out (no whole global batch)") in out
    assert main(base + [f"data.path={crf_data}", "train.batch_size=2"]) == 0
    out = capsys.readouterr().out
    assert "train.batch_size 4 -> 2: epoch 1 continues with the 20 samples not yet consumed" in out
    assert "ranks 1 -> 2; train.batch_size 4 -> 2: epoch 1 continues" in out and "in 5 steps of 4" in out
    assert main(base + [f"data.path={crf_data}", "train.batch_size=4", "seed=99"]) == 0
    assert "restarts from its first step" in capsys.readouterr().out
    other = write_crf(tmp_path / "other.h5", 24)
    assert main(base + [f"data.path={other}", "train.batch_size=4"]) == 2
    assert "resume needs the same training data" in capsys.readouterr().err


def test_warmup_counts_samples_so_a_rank_change_does_not_jump_the_lr():
    """At a fixed rank count the sample-counted factor is exactly the step-counted one; a run at 2 ranks
    resumed at 4 continues the warm-up at the same fraction (counting its old steps at 4 ranks would
    have put it past the end)."""
    from hpcgan.train import schedule

    cfg = load_config("lhc-small", ["train.warmup_samples=4096", "train.batch_size=32", "train.lr_scaling=linear"])
    for ws in (1, 2, 8):
        g = cfg.global_batch(ws)
        assert all(schedule.lr_factor(cfg, ws, s) == schedule.lr_factor_at(cfg, ws, s * g) for s in range(300))
    samples = 40 * cfg.global_batch(2)
    steps = schedule.equivalent_steps(cfg, 4, samples)
    assert steps == 20

    def progress(ws: int, step: int) -> float:
        return (schedule.lr_factor(cfg, ws, step) - 1) / (schedule.lr_scale(cfg, ws) - 1)

    assert progress(4, steps) == pytest.approx(progress(2, 40)) == pytest.approx(0.625)
    assert progress(4, 40) == 1.0  # what keeping the step count would have done


def test_two_resumes_at_other_rank_counts_read_every_sample_once():
    """1 x 4 for 3 steps, then 2 x 4 for 1 step (a checkpoint inside the continued epoch), then 1 x 4 to the
    end: resume_point and consumed_at chain, and the reader's plans for each part read each sample once."""
    import numpy as np

    from hpcgan.data.reader import continued_plan, rank_plan
    from hpcgan.train.resume import consumed_at, resume_point

    n = 48

    cfg = load_config("lhc-small", ["train.batch_size=4", "data.shuffle_block=4", "seed=3",
                                    "data.cache=false"])  # the preset caches a shard per rank
    first = rank_plan(n, 0, 1, 4, 3, 0, True, 4, "drop")[:3]
    meta = {"epoch": 0, "step_in_epoch": 3, "world_size": 1, "config": cfg.to_dict(),
            "epoch_order": {"unit": 4, "consumed": 12}}
    point = resume_point(meta, cfg, 2, n, steps_per_epoch=6)
    assert point.continuation is not None and point.step_in_epoch == 2 and "ranks 1 -> 2" in point.line
    c = point.continuation
    second = [continued_plan(n, r, 2, 4, 3, 0, True, 4, "drop", c.unit, c.consumed)[:1] for r in range(2)]
    unit, consumed = consumed_at(0, point.step_in_epoch + 1, c, cfg, 2)
    assert (unit, consumed) == (4, 20)
    meta = {**meta, "step_in_epoch": 3, "world_size": 2, "epoch_order": {"unit": unit, "consumed": consumed}}
    back = resume_point(meta, cfg, 1, n, steps_per_epoch=12)
    assert back.continuation is None and back.step_in_epoch == 5  # the same unit: at global batch 5
    third = rank_plan(n, 0, 1, 4, 3, 0, True, 4, "drop")[5:]
    got = np.concatenate([first.ravel(), *(s.ravel() for s in second), third.ravel()])
    np.testing.assert_array_equal(np.sort(got), np.arange(n))
