"""Sweeps: points from grids and ranges, checked before submission, the array script, local runs, the report."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from hpcgan.errors import UserError
from hpcgan.train import sweep

from conftest import TINY, write_crf

CLI = [sys.executable, "-m", "hpcgan.cli.main"]


def test_grid_is_every_combination_first_key_slowest():
    points = sweep.grid_points(["train.lr_g=1e-4,2e-4", "loss.lambda_match=10,20,40"])
    assert len(points) == 6
    assert points[0] == ("train.lr_g=1e-4", "loss.lambda_match=10")
    assert points[-1] == ("train.lr_g=2e-4", "loss.lambda_match=40")
    assert len(set(points)) == 6


def test_random_points_are_seeded_and_inside_their_ranges():
    args = dict(ranges=["loss.lambda_match=5:50"], log_ranges=["train.lr_g=1e-5:1e-3"],
                choices=["train.batch_size=64,128"])
    a = sweep.random_points(200, seed=3, **args)
    assert a == sweep.random_points(200, seed=3, **args) and a != sweep.random_points(200, seed=4, **args)
    lam = [float(p[0].split("=")[1]) for p in a]
    lr = [float(p[1].split("=")[1]) for p in a]
    assert 5 <= min(lam) and max(lam) <= 50
    assert 1e-5 <= min(lr) and max(lr) <= 1e-3
    # log-uniform: about half the points below the geometric middle 1e-4 (uniform would put ~9 % there)
    assert 0.35 < sum(x < 1e-4 for x in lr) / len(lr) < 0.65
    assert {p[2] for p in a} == {"train.batch_size=64", "train.batch_size=128"}


@pytest.mark.parametrize("call,message", [
    (lambda: sweep.grid_points(["train.lr_g"]), "expected section.key=VALUES"),
    (lambda: sweep.random_points(2, log_ranges=["train.lr_g=0:1e-3"]), "a log range needs LOW > 0"),
    (lambda: sweep.random_points(2, ranges=["loss.lambda_match=5:x"]), "two numbers"),
    (lambda: sweep.random_points(2), "at least one --range"),
    (lambda: sweep.plan("lhc-small", [("train.lr_gg=1",)]), "sweep point 0 (train.lr_gg=1): config key train.lr_gg"),
    (lambda: sweep.plan("lhc-small", [("train.lr_g=1e-4",), ("train.lr_g=-1",)]), "sweep point 1"),
])
def test_bad_specs_are_one_clear_error(call, message):
    with pytest.raises(UserError) as e:
        call()
    assert message in str(e.value)


def test_dry_run_prints_the_array_script_and_writes_nothing(tmp_path):
    out = tmp_path / "sw"
    p = subprocess.run([*CLI, "sweep", "--config", "lhc-small", "--grid", "train.lr_g=1e-4,2e-4",
                        "loss.lambda_match=10,20", "--max-concurrent", "2", "--out", str(out), "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    script = p.stdout
    assert script.startswith("#!/bin/bash") and "#SBATCH --array=0-3%2" in script
    assert f"#SBATCH --output={out.resolve()}/logs/%x-%A_%a.out" in script
    assert 'train --config lhc-small run_dir="$HPCGAN_RUN_DIR" "${OVERRIDES[@]}"' in script
    assert "hpcgan_finish $?" in script and "--signal=USR2@120" in script and "--requeue" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert not out.exists()


def test_bad_grid_key_on_the_command_line_exits_2_with_one_line(tmp_path):
    p = subprocess.run([*CLI, "sweep", "--config", "lhc-small", "--grid", "train.lr_gg=1e-4", "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "config key train.lr_gg: unknown" in p.stderr


def test_existing_sweep_directory_with_another_plan_is_refused(tmp_path):
    points = sweep.plan("lhc-small", sweep.grid_points(["train.lr_g=1e-4,2e-4"]))
    sweep.write_sweep(tmp_path, "lhc-small", points)
    sweep.write_sweep(tmp_path, "lhc-small", points)  # the same plan again: a resubmission
    assert (tmp_path / "points" / "001.args").read_text() == "train.lr_g=2e-4\n"
    with pytest.raises(UserError, match="holds a different sweep"):
        sweep.write_sweep(tmp_path, "lhc-small", sweep.plan("lhc-small", sweep.grid_points(["train.lr_g=3e-4"])))


def _fake_run(run_dir, values):
    run_dir.mkdir(parents=True)
    lines = [json.dumps({"kind": "train", "step": 1, "g_loss": 1.0})]
    lines += [json.dumps({"kind": "val", "epoch": e + 1, "step": e, "l1": v}) for e, v in enumerate(values)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n{\"kind\": \"val\", \"l1\n")  # a cut last line


def test_report_ranks_points_by_best_validation_metric(tmp_path):
    points = sweep.plan("lhc-small", sweep.grid_points(["train.lr_g=1e-4,2e-4,3e-4"]))
    sweep.write_sweep(tmp_path, "lhc-small", points)
    _fake_run(tmp_path / "point-000", [0.5, 0.4, 0.45])
    _fake_run(tmp_path / "point-001", [0.3, 0.2, 0.25])
    # point 2 never wrote metrics (still queued)
    rows = sweep.report_rows(tmp_path, "l1")
    assert [r["point"] for r in rows] == [1, 0, 2]
    assert rows[0]["best"] == 0.2 and rows[0]["final"] == 0.25 and rows[0]["best_epoch"] == 2
    assert math.isnan(rows[2]["best"])
    assert [r["point"] for r in sweep.report_rows(tmp_path, "l1", maximize=True)] == [0, 1, 2]
    md = sweep.write_report(tmp_path, rows, "l1")
    assert "| 1 | 1 | `train.lr_g=2e-4` | 3 | 0.25 | 0.2 | 2 |" in md
    table = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert [t["point"] for t in table] == ["1", "0", "2"] and (tmp_path / "report.png").stat().st_size > 0
    with pytest.raises(UserError, match="no point has validation metric 'mse'"):
        sweep.report_rows(tmp_path, "mse")


@pytest.mark.timeout(300)
def test_local_sweep_trains_every_point_and_reports(tmp_path):
    """Without SLURM (--local) the points run one after another; the report reads their validation metrics."""
    train = write_crf(tmp_path / "train.h5", 32, seed=1)
    val = write_crf(tmp_path / "val.h5", 16, seed=2)
    out = tmp_path / "sweep"
    common = [o for o in TINY if not o.startswith("train.log_every")] + [
        f"data.path={train}", f"data.val_path={val}", "train.epochs=1", "train.batch_size=8", "backend=local"]
    # Shared overrides go before --grid (which takes every KEY=V1,V2 after it).
    p = subprocess.run([*CLI, "sweep", "--config", "crf-small", "--local", "--out", str(out), *common,
                        "--grid", "train.lr_g=1e-4,1e-3"], capture_output=True, text=True, timeout=280)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 finished, 0 failed" in p.stdout
    for i, lr in ((0, 1e-4), (1, 1e-3)):
        cfg = (out / f"point-{i:03d}" / "config.yaml").read_text()
        assert f"lr_g: {lr}" in cfg
    r = subprocess.run([*CLI, "sweep", "report", str(out), "--metric", "l1"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and "`" in ln]
    assert len(rows) == 2 and all(" 1 | " in ln for ln in rows)  # both finished their one epoch


def test_optuna_points_are_asked_once_told_once_and_reported(tmp_path):
    """--optuna: a point's values come from the study when it starts (again the same after a requeue), its best
    validation metric goes back once; TPE then has the finished points to learn from."""
    pytest.importorskip("optuna")
    from hpcgan.train import sweep_optuna

    spec = sweep_optuna.study_spec(3, "tpe", 5, "l1", False, log_ranges=["train.lr_g=1e-5:1e-3"],
                                   choices=["loss.lambda_match=10,20"])
    sweep.write_sweep(tmp_path, "lhc-small", sweep.plan("lhc-small", [()] * 3, ["train.epochs=2"]), spec)
    assert sorted(p.name for p in (tmp_path / "points").iterdir()) == []  # nothing asked yet
    first = sweep_optuna.ask(tmp_path, 0)
    assert first[0] == "train.epochs=2" and sweep_optuna.ask(tmp_path, 0) == first  # a requeue resumes the point
    lr = float(next(o for o in first if o.startswith("train.lr_g=")).split("=")[1])
    assert 1e-5 <= lr <= 1e-3 and any(o in first for o in ("loss.lambda_match=10", "loss.lambda_match=20"))
    _fake_run(tmp_path / "point-000", [0.5, 0.3, 0.4])
    assert sweep_optuna.tell(tmp_path, 0) == 0.3
    (tmp_path / "point-000" / "metrics.jsonl").write_text(json.dumps({"kind": "val", "epoch": 3, "l1": 0.1}) + "\n")
    # told already: the study keeps the first answer
    assert sweep_optuna.tell(tmp_path, 0) == 0.3
    assert sweep_optuna.ask(tmp_path, 1)[1:] != first[1:]  # each point asks from a fresh process: not the same draw
    assert sweep_optuna.tell(tmp_path, 1) is None  # no validation metric: a failed trial
    rows = sweep.report_rows(tmp_path, "l1")
    assert rows[0]["point"] == 0 and rows[0]["overrides"] == " ".join(first[1:])
    with pytest.raises(UserError, match="never asked"):
        sweep_optuna.tell(tmp_path, 2)
    with pytest.raises(UserError, match="holds a different sweep"):
        sweep.write_sweep(tmp_path, "lhc-small", sweep.plan("lhc-small", [()] * 3, ["train.epochs=2"]),
                          {**spec, "sampler": "random"})


def test_optuna_dry_run_asks_in_each_array_element(tmp_path):
    pytest.importorskip("optuna")
    p = subprocess.run([*CLI, "sweep", "--config", "lhc-small", "--optuna", "4", "--log-range", "train.lr_g=1e-5:1e-3",
                        "--out", str(tmp_path / "sw"), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "#SBATCH --array=0-3%4" in p.stdout and "sweep ask \"$SWEEP_DIR\" \"$SLURM_ARRAY_TASK_ID\"" in p.stdout
    assert "sweep tell" in p.stdout and not (tmp_path / "sw").exists()
    bad = subprocess.run([*CLI, "sweep", "--config", "lhc-small", "--optuna", "2", "--random", "2", "--range",
                          "loss.lambda_match=1:2", "--dry-run"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "hpcgan: error: hpcgan sweep: give one of --grid, --random and --optuna, not --random and --optuna"]


@pytest.mark.timeout(300)
def test_local_optuna_sweep_asks_trains_tells_and_reports(tmp_path):
    pytest.importorskip("optuna")
    from hpcgan.train import sweep_optuna

    train = write_crf(tmp_path / "train.h5", 32, seed=1)
    val = write_crf(tmp_path / "val.h5", 16, seed=2)
    out = tmp_path / "sweep"
    common = [o for o in TINY if not o.startswith("train.log_every")] + [
        f"data.path={train}", f"data.val_path={val}", "train.epochs=1", "train.batch_size=8", "backend=local"]
    p = subprocess.run([*CLI, "sweep", "--config", "crf-small", "--local", "--out", str(out), *common, "--optuna", "2",
                        "--sampler", "random", "--seed", "3", "--log-range", "train.lr_g=1e-4:1e-3"],
                       capture_output=True, text=True, timeout=280)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 finished, 0 failed" in p.stdout
    study = sweep_optuna._study(out, sweep.load_sweep(out)["optuna"])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].params != study.trials[1].params
    for i, t in enumerate(study.trials):
        lr = float(f"{t.params['train.lr_g']:.6g}")  # as the point's override wrote it
        assert f"lr_g: {lr}" in (out / f"point-{i:03d}" / "config.yaml").read_text()
    best = {r["point"]: r["best"] for r in sweep.report_rows(out, "l1")}
    assert [best[i] for i in range(2)] == [t.value for t in study.trials]
