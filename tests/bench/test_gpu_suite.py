"""The one command of a GPU visit (benchmarks/gpu_suite.sh OUT_DIR) and its paper-size CRF run
(benchmarks/gpu_crf_run.py) run as a CPU smoke test at tiny sizes, so neither can rot before a GPU is there."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # benchmarks/ is at the repo root, not installed
from benchmarks import gpu_crf_run  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_gpu_suite_smoke_on_cpu(tmp_path, run_single):
    out, work = tmp_path / "out", tmp_path / "work"
    job = run_single(["bash", REPO / "benchmarks" / "gpu_suite.sh", out], timeout=400,
                     env={"PYTHON": sys.executable, "GPU_SUITE_SMOKE": "1", "GPU_SUITE_WORK": str(work)})
    assert job.returncode == 0, job.stdout + job.stderr
    log = (out / "suite.log").read_text()
    first = log.splitlines()[:8]
    for what in ("GPU: ", "torch ", "compiler: ", "packages: "):  # what the machine has, before anything runs
        assert any(line.startswith(what) for line in first), first
    probe = json.loads((out / "probe.json").read_text())
    assert probe["packages"]["numpy"] and "c_builds" in probe["compiler"]

    check = json.loads((out / "gpu_check.json").read_text())["results"]
    assert check["complete"] and [s["status"] for s in check["sections"].values()] == ["ok", "ok"]

    data = json.loads((out / "crf" / "crf_data.json").read_text())["results"]
    assert data["complete"] and data["phases"]["data"]["status"] == "ok"
    assert data["phases"]["data"]["n_train_made"] == 48 and not data["phases"]["data"].get("reused")
    crf = json.loads((out / "crf" / "crf_run.json").read_text())["results"]
    assert crf["complete"], crf
    phases = crf["phases"]
    assert list(phases) == ["data", "train_gan", "eval_gan", "train_l1", "eval_l1", "compare"]
    assert all(p["status"] == "ok" for p in phases.values()), phases
    assert phases["data"]["reused"]  # made in the background while the check ran
    gan, l1 = phases["train_gan"], phases["train_l1"]
    assert gan["returncode"] == gpu_crf_run.EXIT_PREEMPTED and gan["stopped"] == "SIGTERM"  # the wall budget
    assert gan["checkpoint_step"] >= 1 and l1["checkpoint_step"] == gan["checkpoint_step"] and l1["same_steps_as_gan"]
    assert l1["returncode"] == 0  # L1-only stops at the GAN's step count
    assert isinstance(phases["compare"]["gan_high_band_closer"], bool)
    for run in ("gan", "l1"):
        rd = out / "crf" / run
        assert (rd / "metrics.jsonl").is_file() and (rd / "evaluation" / "summary.json").is_file()
        assert (rd / "checkpoints").is_symlink()  # checkpoints stay in the work folder, out of OUT_DIR
        assert any((rd / "checkpoints").glob("ckpt-*.pt"))
    for fig in phases["compare"]["figures"]:
        assert (out / "crf" / fig).is_file()
    md = (out / "crf" / "crf_run.md").read_text()
    assert ", complete" in md and "| train_gan | ok |" in md and "GAN high-band power closer" in md
    assert "gpu_suite done" in log and "CRF run exit 0" in log


def _run(tmp_path: Path, **kw) -> gpu_crf_run.Run:
    args = gpu_crf_run.parse_args(["--smoke", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w")])
    for k, v in kw.items():
        setattr(args, k, v)
    return gpu_crf_run.Run(args, time.monotonic())


def test_auto_training_share_leaves_room_for_l1_and_the_evaluations(tmp_path):
    run = _run(tmp_path, budget_s=300.0, eval_reserve_s=40.0, min_train_s=45.0, compare="auto")
    t = gpu_crf_run.auto_train_s(run)
    left = run.left()
    l1 = gpu_crf_run.STARTUP_S + gpu_crf_run.L1_STEP_COST * (t - gpu_crf_run.STARTUP_S)
    assert t + l1 + 3 * 40 == pytest.approx(left, abs=1.0)
    assert gpu_crf_run.auto_train_s(_run(tmp_path, budget_s=3000.0)) == gpu_crf_run.MAX_AUTO_TRAIN_S
    assert gpu_crf_run.auto_train_s(_run(tmp_path, budget_s=50.0, min_train_s=45.0)) == 45.0
    never = _run(tmp_path, budget_s=300.0, eval_reserve_s=40.0, compare="never")
    assert gpu_crf_run.auto_train_s(never) == pytest.approx(never.left() - 40, abs=1.0)


def test_data_shrinks_to_the_free_disk_and_says_so(tmp_path, monkeypatch):
    run = _run(tmp_path, size=256, n_train=3100, n_val=64, dtype="float16", disk_reserve_gb=4.0)
    per = gpu_crf_run.bytes_per_sample(256, "float16")
    assert per == (47 * 2 + 4) * 256 * 256  # 6.4 MB: 3100 samples are 20 GB
    free = 4 * 2**30 + 2064 * per
    monkeypatch.setattr(gpu_crf_run.shutil, "disk_usage", lambda p: argparse.Namespace(free=free))
    info: dict = {}
    assert gpu_crf_run.fit_to_disk(run, info) == 2000
    assert info["n_train_reduced"].startswith("3100 -> 2000")
    monkeypatch.setattr(gpu_crf_run.shutil, "disk_usage", lambda p: argparse.Namespace(free=2**30))
    with pytest.raises(RuntimeError, match="GB free"):
        gpu_crf_run.fit_to_disk(run, {})


def test_smoke_defaults_yield_to_the_command_line(tmp_path):
    a = gpu_crf_run.parse_args(["--smoke", "--out", str(tmp_path), "--budget-s", "77", "--train-s", "auto"])
    assert (a.budget_s, a.train_s, a.size, a.device) == (77.0, "auto", 32, "cpu")
    b = gpu_crf_run.parse_args(["--smoke", "--out", str(tmp_path)])
    assert b.train_s == 10.0 and b.budget_s == gpu_crf_run.SMOKE_DEFAULTS["budget_s"]
    with pytest.raises(SystemExit):
        gpu_crf_run.parse_args(["--smoke", "--out", str(tmp_path), "--train-s", "soon"])
