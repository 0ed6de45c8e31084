"""The one-shot GPU check (benchmarks/gpu_check.sh) runs as a CPU smoke test at tiny sizes, so it cannot rot
before a GPU is there to run it; killed part-way or out of budget it still leaves what it measured."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # benchmarks/ is at the repo root, not installed
from benchmarks import gpu_check  # noqa: E402

CHECK = REPO / "benchmarks" / "gpu_check.sh"
SMOKE = ["--devices", "cpu", "--tiny", "--steps", "4", "--crf-steps", "3"]


@pytest.mark.timeout(400)
def test_gpu_check_smoke_on_cpu(tmp_path, run_single):
    out = tmp_path / "gpu_check.json"
    job = run_single([CHECK, *SMOKE, "--compile-backend", "eager", "--out", out], timeout=360,
                     env={"PYTHON": sys.executable})
    assert job.returncode == 0, job.stdout + job.stderr
    doc = json.loads(out.read_text())
    assert doc["kind"] == "gpu_check"
    res = doc["results"]
    assert res["complete"] is True
    assert list(res["sections"]) == [s.name for s in gpu_check.SECTIONS]
    assert all(s["status"] == "ok" for s in res["sections"].values()), res["sections"]
    variants = {(r["workload"], r["variant"]) for r in res["rows"]}
    assert {("lhc", "off"), ("lhc", "bf16"), ("lhc", "fp16"), ("crf", "reference-style"), ("crf", "off"),
            ("crf", "bf16"), ("crf", "fp16"), ("crf", "bf16-nchw"), ("crf", "bf16-compile")} <= variants
    assert all(r["finite"] and "error" not in r for r in res["rows"]), res["rows"]
    assert next(r for r in res["rows"] if r["variant"] == "fp16")["loss_scale"] > 0
    gen = res["lhc_generation"]
    by_mode = {m: [(g["precision"], g["batch"]) for g in gen if g["mode"] == m] for m in ("eager", "compiled")}
    # eager twice on CPU: the trainer's generate path, then the CUDA-graph rows' code timed eagerly
    assert by_mode["eager"] == [("bf16", 256), ("bf16", 512), ("fp32", 256), ("fp32", 512)] * 2
    assert by_mode["compiled"] == [("bf16", 256), ("bf16", 512)]
    assert "CUDA graphs need a GPU" in res["sections"]["lhc_graph"]["graph_skipped"]
    for g in gen:
        assert g["tracks_per_s"] > 0 and g["flops_per_track"] > 0 and g["bytes_per_track"] > 0
        # A bf16 row cannot beat the measured bf16 peak. An fp32 row can on a CPU without bf16 units
        # (AMD EPYC with AVX2 only: bf16 matmuls are emulated, fp32 ones are not; 1.39 there, 2026-12-03).
        assert g["peak_bf16_fraction"] > 0 and 0 < g["bandwidth_fraction"] < 10
        if g["precision"] == "bf16":
            assert g["peak_bf16_fraction"] < 1, g
        assert g["bound"] in ("compute-bound", "memory-bound", "launch-bound", "under both peaks")
    assert res["torch_backend_job"]["ok"] and "torch.distributed (gloo)" in res["torch_backend_job"]["backend_line"]
    assert [r["row"] for r in res["compile_rows"]] == list(gpu_check.COMPILE_ROWS)
    assert all(r["returncode"] == 0 and "error" not in r for r in res["compile_rows"])
    c = res["checks"]
    assert c["ok"] and c["errors"] == [] and c["skipped"] == [] and c["all_finite"] is True
    assert c["crf_speedup_vs_reference"] > 0 and res["peak_bf16_flops"] > 0 and res["mem_bandwidth_bytes_per_s"] > 0
    assert res["probe"]["packages"]["numpy"] and "python_headers" in res["probe"]["compiler"]
    table = out.with_suffix(".md").read_text()
    assert "| crf | bf16 | bf16 |" in table and "tracks/s" in table and ", complete:" in table
    assert "| compile | ok |" in table


def _wait_for(path: Path, ready, proc: subprocess.Popen, timeout: float = 150) -> dict:
    """The check's JSON once `ready(results)` holds (it is rewritten atomically: always whole)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            pytest.fail(f"the check ended (exit {proc.returncode}) before the point to stop it at:\n"
                        + _output(path))
        if path.is_file():
            res = json.loads(path.read_text())["results"]
            if ready(res):
                return res
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{path}: not ready after {timeout:.0f} s")


def _start(out: Path, *extra: str) -> subprocess.Popen:
    with open(out.with_suffix(".log"), "w") as log:
        return subprocess.Popen(["bash", str(CHECK), *SMOKE, "--out", str(out), *extra], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHON": sys.executable})


def _output(out: Path) -> str:
    return out.with_suffix(".log").read_text()


@pytest.mark.timeout(200)
def test_gpu_check_killed_part_way_keeps_the_rows_so_far(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = _start(out, "--sections", "probe,train_lhc,lhc_eager,torch_job")
    _wait_for(out, lambda r: len(r["rows"]) >= 2, proc)
    proc.send_signal(signal.SIGKILL)  # the device's time limit: no handler runs
    proc.wait(timeout=30)
    res = json.loads(out.read_text())["results"]
    assert res["complete"] is False and "interrupted" not in res
    assert res["sections"]["probe"]["status"] == "ok"
    assert res["sections"]["train_lhc"]["status"] in ("running", "ok")
    rows = res["rows"]
    assert len(rows) >= 2 and all(r["workload"] == "lhc" and r["finite"] for r in rows)
    assert [r["variant"] for r in rows] == ["off", "bf16", "fp16"][:len(rows)]
    assert "INCOMPLETE (written while running)" in out.with_suffix(".md").read_text()


@pytest.mark.timeout(200)
def test_gpu_check_sigterm_records_the_interruption(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = _start(out, "--sections", "probe,peak,torch_job")
    _wait_for(out, lambda r: r["sections"].get("torch_job", {}).get("status") == "running", proc)
    proc.send_signal(signal.SIGTERM)  # `timeout`'s first signal: the check writes what it has, then exits
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM, _output(out)
    res = json.loads(out.read_text())["results"]
    assert res["complete"] is False and res["interrupted"] == "SIGTERM"
    assert res["sections"]["torch_job"]["status"] == "interrupted"
    assert res["sections"]["peak"]["status"] == "ok" and res["peak_bf16_flops"] > 0
    assert "interrupted by SIGTERM" in out.with_suffix(".md").read_text()


@pytest.mark.timeout(120)
def test_gpu_check_out_of_budget_skips_with_the_reason(tmp_path, run_single):
    out = tmp_path / "gpu_check.json"
    job = run_single([CHECK, *SMOKE, "--budget-s", "0.5", "--sections", "probe,peak,train_lhc,compile",
                      "--out", out], timeout=100, env={"PYTHON": sys.executable})
    assert job.returncode == 0, job.stdout + job.stderr  # skips are not failures
    res = json.loads(out.read_text())["results"]
    assert res["complete"] is True and res["sections"]["probe"]["status"] == "ok"
    for name in ("peak", "train_lhc", "compile"):
        assert res["sections"][name]["status"] == "skipped"
        assert res["sections"][name]["reason"].startswith("budget: 0 s left of --budget-s 0")
    assert len(res["checks"]["skipped"]) == 3 and res["checks"]["errors"] == []
    assert res["checks"]["all_finite"] is None  # nothing trained: not a pass, not a failure


# --- pieces, in process ------------------------------------------------------------------------------------------

def test_compiler_probe_without_compilers_skips_compile_rows(tmp_path):
    probe = gpu_check.compiler_probe({"PATH": str(tmp_path)})
    assert probe["c"] is None and probe["cxx"] is None and not probe["c_builds"]
    assert gpu_check.compile_skip_reason(probe, "cuda").startswith("no C compiler")
    assert gpu_check.compile_skip_reason(probe, "cpu").startswith("no C++ compiler")
    assert gpu_check.compile_skip_reason(probe, "cuda", compile_backend="eager") is None
    named = gpu_check.compiler_probe({"PATH": os.environ["PATH"], "CC": str(tmp_path / "no-such-cc")})
    assert named["c"] is None  # $CC set is what triton uses: no fallback to another compiler
    no_headers = {**named, "c": "/usr/bin/cc", "python_headers": False}
    assert gpu_check.compile_skip_reason(no_headers, "cuda").startswith("no Python headers")


def test_compiler_probe_builds_against_python_h_here():
    probe = gpu_check.compiler_probe()
    if not (probe["c"] and probe["python_headers"]):
        pytest.skip("no C compiler or Python headers on this machine")
    assert probe["c_builds"], probe
    assert gpu_check.compile_skip_reason(probe, "cuda") is None
    lines = gpu_check.probe_lines({**gpu_check.probe(), "compiler": probe})
    assert lines[0].startswith("GPU: ") and "builds against Python.h" in lines[2]


def test_bound_names_the_limit_the_numbers_point_to():
    assert gpu_check.bound(0.7, 0.2, 300.0) == "compute-bound"
    assert gpu_check.bound(0.1, 0.8, 300.0) == "memory-bound"
    assert gpu_check.bound(0.01, 0.2, 4.0) == "launch-bound"  # ops as short as their launch
    assert gpu_check.bound(0.01, 0.2, 300.0) == "under both peaks"
    assert gpu_check.bound(None, 0.2, 4.0).startswith("unknown")


def test_closed_form_solve_matches_linalg_solve():
    # linear_seed's normal equations: weights (r / sigma)^2 ~ 1e10, basis (1, 1/r, r/2): a wide dynamic range
    g = torch.Generator().manual_seed(0)
    r = torch.linspace(32.0, 1000.0, 10)
    w = (r / 0.01) ** 2 * torch.rand(64, 10, generator=g).gt(0.2)
    basis = torch.stack([torch.ones(10), 1 / r, r / 2], dim=-1)
    a = torch.einsum("nl,li,lj->nij", w, basis, basis) + 1e-9 * torch.eye(3)
    b = torch.einsum("nl,li,nl->ni", w, basis, torch.randn(64, 10, generator=g) * 1e-3)
    want = torch.linalg.solve(a.double(), b.double())
    got = gpu_check._solve3(a, b).double()
    assert torch.allclose(got, want, rtol=1e-2, atol=1e-9 * want.abs().max())
    with gpu_check.solve_patch("linalg.solve_ex"):
        assert torch.allclose(torch.linalg.solve(a, b), torch.linalg.solve_ex(a, b)[0])
    assert torch.linalg.solve is not gpu_check._solve3


def test_generator_runs_alike_with_each_way_of_solving():
    """The ways the CUDA-graph rows may replace linear_seed's solve give the trainer's tracks (same noise)."""
    from benchmarks.common import workload_config
    from hpcgan.workloads import get_workload

    cfg = workload_config("lhc", gpu_check.TINY["lhc"])
    workload = get_workload(cfg)
    G = workload.build_generator().eval()
    x, y = gpu_check.sample_pool("lhc", cfg, 64)
    cond, _ = workload.prepare(x, y, torch.device("cpu"))

    def tracks():
        torch.manual_seed(3)
        with torch.no_grad():
            return G(cond)

    want = tracks()
    with gpu_check.solve_patch("linalg.solve_ex"):  # the same factorisation, without the host check
        assert torch.equal(tracks(), want)
    with gpu_check.solve_patch("closed-form-3x3"):  # float32 Cramer: a few 1e-3 where LU has a few 1e-4
        assert torch.allclose(tracks(), want, rtol=1e-2, atol=5e-3)
    assert set(gpu_check.SOLVES) == {"linalg.solve_ex", "closed-form-3x3"}


def test_traffic_counts_kernels_and_bytes_not_views():
    x, y = torch.ones(1000), torch.ones(1000)
    with gpu_check._Traffic() as t:
        z = x + y  # reads 2, writes 1
        z.view(10, 100).t()  # views: no kernel, no traffic
        z.mul_(2)  # in place: one kernel reading and writing z
    assert t.ops == 2
    assert t.bytes == 4 * 1000 * (3 + 2)


def test_markdown_of_partial_results_tells_errors_from_non_finite():
    res = {"complete": False, "sections": {"train_lhc": {"status": "running"}},
           "rows": [{"workload": "lhc", "variant": "off", "device": "cuda", "batch": 512, "finite": None,
                     "error": "RuntimeError: no C compiler found"},
                    {"workload": "lhc", "variant": "bf16", "device": "cuda", "batch": 512, "finite": None,
                     "skipped": "budget: 3 s left"}],
           "lhc_generation": []}
    env = {"cpu": "x", "date": "d", "torch": "t", "command": "c"}
    md = gpu_check.markdown(res, env, {"device": "cuda", "tiny": False, "budget_s": 420})
    assert "INCOMPLETE (written while running)" in md
    assert "| n/a | | | | ERROR: RuntimeError: no C compiler found |" in md
    assert "skipped: budget: 3 s left" in md
    assert "NO" not in md.replace("INCOMPLETE", "")  # an error is not "losses finite: NO"
    c = gpu_check.checks(res)
    assert c["all_finite"] is None and not c["ok"] and len(c["errors"]) == 1 and len(c["skipped"]) == 1
