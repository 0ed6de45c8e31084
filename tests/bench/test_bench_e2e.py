"""The benchmarks run end to end at tiny sizes and their JSON has the fields the plots/projection read.

One module-scoped run of each driver (allreduce and scaling launch `mpirun -np 2`)
feeds the projection, plot and CLI tests. Timeouts: each driver is a subprocess
killed with its process group on timeout, and the failure prints every rank's output.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
HPCGAN = str(Path(PYTHON).parent / "hpcgan")
pytestmark = [pytest.mark.mpi]


@dataclass
class Job:
    command: list
    returncode: int
    output: str

    def describe(self) -> str:
        return f"$ {' '.join(self.command)}\nexit code {self.returncode}; output (driver and all ranks):\n{self.output}"


def run_single(command: list, timeout: float) -> Job:
    """Run in a new process group (mpirun and its ranks included); on timeout kill the group and fail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM_WORLD_", "PMI_", "PMIX_", "SLURM_"))}
    env.update(PYTHONPATH=str(REPO), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout:.0f} s\n{Job(command, -9, out).describe()}", pytrace=False)
    return Job(command, proc.returncode, out)


def _driver(module: str, args: list[str], timeout: float) -> Job:
    job = run_single([PYTHON, "-m", f"benchmarks.{module}", *args], timeout=timeout)
    if job.returncode != 0:
        pytest.fail(f"benchmark {module} failed\n{job.describe()}", pytrace=False)
    return job


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def allreduce_doc(results):
    _driver("allreduce", ["--ranks", "2", "--sizes", "4096,262144", "--warmup", "1", "--iters", "2",
                          "--fusion-workload", "lhc", "--out", str(results / "allreduce.json"), "--timeout", "150"], 200)
    return json.loads((results / "allreduce.json").read_text())


@pytest.fixture(scope="module")
def throughput_doc(results):
    _driver("throughput", ["--workloads", "lhc", "--devices", "cpu", "--quick", "--batch", "lhc=32",
                           "--out", str(results / "throughput.json")], 200)
    return json.loads((results / "throughput.json").read_text())


@pytest.fixture(scope="module")
def scaling_doc(results):
    _driver("scaling", ["--workloads", "lhc", "--backends", "horovod", "--ranks", "1,2", "--batch", "32",
                        "--iters", "1,2,1", "--out", str(results / "scaling.json"), "--timeout", "150"], 300)
    return json.loads((results / "scaling.json").read_text())


@pytest.mark.timeout(240)
def test_allreduce_json(allreduce_doc):
    assert allreduce_doc["kind"] == "allreduce"
    assert {"loadavg_1_5_15", "uptime"} <= set(allreduce_doc["env"]["load_start"])
    curves = {c["lib"]: c for c in allreduce_doc["results"]["curves"]}
    assert set(curves) == {"horovod", "mpi", "torch"}
    for c in curves.values():
        assert c["ranks"] == 2 and [r["bytes"] for r in c["rows"]] == [4096, 262144]
        for r in c["rows"]:
            assert r["busbw_GBps"] > 0 and r["time_s"]["n"] == 2 and r["time_s"]["median"] > 0
    modes = {f["mode"]: f for f in allreduce_doc["results"]["fusion"]}
    assert set(modes) == {"fusion-on", "fusion-off", "flat", "flat-fp16"}
    assert modes["fusion-off"]["fusion_threshold"] == "0"
    assert len({f["tensors"] for f in modes.values()}) == 1 and modes["flat"]["bytes"] > 0
    assert {r["lib"] for r in allreduce_doc["results"]["relative_to_mpi"]} == {"horovod", "torch"}


@pytest.mark.timeout(240)
def test_throughput_json(throughput_doc):
    res = throughput_doc["results"]
    variants = [r["variant"] for r in res["rows"]]
    assert variants == ["reference-style", "ours"]
    for r in res["rows"]:
        assert r["device"] == "cpu" and r["precision"] == "fp32"
        assert r["train"]["samples_per_s"]["median"] > 0 and r["generate"]["samples_per_s"]["median"] > 0
        assert r["achieved_tflops"]["train"] > 0 and 0 < r["peak_fraction"]["train"] < 5
    assert res["rows"][0]["batch"] == 64 and res["rows"][1]["batch"] == 32
    assert res["flops_per_sample"]["lhc"]["train"] > res["flops_per_sample"]["lhc"]["generate"] > 0
    assert res["peak"]["cpu"]["float32"] > 1e8
    assert res["speedup_vs_reference"][0]["train_speedup"] > 0


@pytest.mark.timeout(360)
def test_scaling_json(scaling_doc):
    res = scaling_doc["results"]
    assert res["skipped"] == [], res["skipped"]
    got = {(r["mode"], r["data"], r["ranks"]) for r in res["runs"]}
    assert got == {(m, d, n) for m in ("weak", "strong") for d in ("synthetic", "real") for n in (1, 2)}
    for r in res["runs"]:
        split = r["split_s"]
        assert r["step_s"]["median"] > 0 and min(split.values()) >= 0
        assert split["compute"] <= r["step_s"]["median"] + 1e-9
        assert r["per_rank_batch"] == (32 if r["mode"] == "weak" or r["ranks"] == 1 else 16)
        if r["ranks"] == 2:
            assert split["allreduce"] > 0  # the gradient sync is timed
        if r["data"] == "real":
            assert split["data"] > 0
    for e in res["efficiency"]:
        assert e["efficiency"] > 0
        if e["ranks"] == 1:
            assert e["efficiency"] == pytest.approx(1.0)


@pytest.mark.timeout(600)
def test_projection_and_plots(results, allreduce_doc, throughput_doc, scaling_doc):
    _driver("projection", ["--allreduce", str(results / "allreduce.json"), "--throughput",
                           str(results / "throughput.json"), "--scaling", str(results / "scaling.json"),
                           "--workloads", "lhc", "--out", str(results / "projection.json")], 120)
    doc = json.loads((results / "projection.json").read_text())
    res = doc["results"]
    assert {"horovod", "mpi", "torch"} <= set(res["calibration"])
    machines = {c["machine"] for c in res["curves"]}
    assert {"daint-p100-fp32", "daint-p100-fp16", "this-machine-cpu"} <= machines
    for c in res["curves"]:
        assert c["nodes"][0] == 1 and c["efficiency"][0] == 1.0 and 0 < c["efficiency"][-1] <= 1.0
    assert [c["ranks"] for c in res["check"]] == [2]
    assert (results / "projection.png").stat().st_size > 1000
    job = run_single([HPCGAN, "bench", "plot", "--results", str(results)], timeout=120)
    assert job.returncode == 0, job.describe()
    for kind in ("allreduce", "throughput", "scaling"):
        assert (results / f"{kind}.png").stat().st_size > 1000, kind


@pytest.mark.timeout(120)
def test_cli_errors_are_one_line(tmp_path):
    job = run_single([HPCGAN, "bench", "projection", "--out", str(tmp_path / "p.json"), "--allreduce",
                      str(tmp_path / "none.json")], timeout=100)
    assert job.returncode == 2 and "none.json: not found" in job.output and "Traceback" not in job.output
    job = run_single([HPCGAN, "bench", "allreduce", "--ranks", "1"], timeout=100)
    assert job.returncode == 2 and "at least 2 ranks" in job.output
