"""The one-shot GPU check (benchmarks/gpu_check.sh) runs as a CPU smoke test at tiny sizes, so it cannot rot
before a GPU is there to run it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_gpu_check_smoke_on_cpu(tmp_path, run_single):
    out = tmp_path / "gpu_check.json"
    job = run_single([REPO / "benchmarks" / "gpu_check.sh", "--devices", "cpu", "--tiny", "--steps", "4",
                      "--crf-steps", "3", "--out", out], timeout=360, env={"PYTHON": sys.executable})
    assert job.returncode == 0, job.stdout + job.stderr
    doc = json.loads(out.read_text())
    assert doc["kind"] == "gpu_check"
    res = doc["results"]
    variants = {(r["workload"], r["variant"]) for r in res["rows"]}
    assert {("lhc", "off"), ("lhc", "bf16"), ("lhc", "fp16"), ("crf", "reference-style"), ("crf", "off"),
            ("crf", "bf16"), ("crf", "fp16"), ("crf", "bf16-nchw")} <= variants
    assert all(r["finite"] and "error" not in r for r in res["rows"]), res["rows"]
    assert next(r for r in res["rows"] if r["variant"] == "fp16")["loss_scale"] > 0
    assert [g["batch"] for g in res["lhc_generation"]] == [256, 512]
    assert res["torch_backend_job"]["ok"] and "torch.distributed (gloo)" in res["torch_backend_job"]["backend_line"]
    assert res["checks"]["crf_speedup_vs_reference"] > 0 and res["peak_bf16_flops"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| crf | bf16 | bf16 |" in table and "tracks/s" in table
