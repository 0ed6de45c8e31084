"""`hpcgan info`: one process with each backend, every rank's line under mpirun, clean errors."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(150)


def rank_lines(output: str) -> dict[str, str]:
    """{rank: its report line} from info's output (mpirun tags are ignored)."""
    return {m.group(1): m.group(0) for m in re.finditer(r"rank (\d+)/(\d+) local .*", output)}


@pytest.mark.parametrize("backend,described", [
    ("local", "backend local"), ("torch", r"backend torch\.distributed \(gloo\)"), ("auto", "backend (horovod|local)"),
])
def test_info_one_process(backend, described, run_single, hpcgan):
    job = run_single(hpcgan + ["info", "--backend", backend], timeout=120)
    assert job.returncode == 0 and job.stderr == "", job.describe()
    out = job.stdout
    assert re.search(r"^torch \S+\s+horovod \S+\s+mpi4py \S+\s+h5py \S+", out, re.M), out
    assert re.search(r"^MPI library: ", out, re.M) and re.search(r"^backends available: .*local$", out, re.M), out
    assert re.search(r"^CUDA devices: ", out, re.M), out
    lines = rank_lines(out)
    assert list(lines) == ["0"], out
    assert re.search(rf"rank 0/1 local 0/1 node 0/1 host \S+ launcher none {described}.* device (cpu|cuda:0) "
                     r"threads \d+", lines["0"]), out
    assert re.search(r"^summary: 1 rank\(s\) on 1 node\(s\), backend \w+$", out, re.M), out


@pytest.mark.mpi
def test_info_two_ranks_under_mpirun(run_mpi, hpcgan):
    job = run_mpi(2, hpcgan + ["info"], timeout=120)
    lines = rank_lines(job.text)
    assert sorted(lines) == ["0", "1"], job.describe()
    for r, line in lines.items():
        assert re.search(rf"rank {r}/2 local {r}/2 node 0/1 .*launcher openmpi backend horovod \(mpi\)", line), line
    assert job.text.count("summary: 2 rank(s) on 1 node(s), backend horovod") == 1, job.describe()
    assert job.text.count("MPI library: Open MPI") == 1, job.describe()  # rank 0 alone prints the header


@pytest.mark.mpi
def test_info_local_backend_under_mpirun_is_a_clean_error(run_mpi, hpcgan):
    job = run_mpi(2, hpcgan + ["info", "--backend", "local"], timeout=120, check=False)
    assert job.returncode == 2, job.describe()
    # Raised before any backend started, the same on every rank: rank 0 alone reports it.
    errors = re.findall(r"(?m)^.*hpcgan: error: .*$", job.text)
    assert errors == ["hpcgan: error: backend 'local' runs one process, but the launcher started 2 ranks "
                      "(use --backend horovod or torch)"], job.describe()
    assert "Traceback" not in job.text and "summary:" not in job.text, job.describe()


def test_info_cuda_without_gpu_is_a_clean_error(run_single, hpcgan):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    job = run_single(hpcgan + ["info", "--backend", "local", "--device", "cuda"], timeout=120)
    assert job.returncode == 2 and job.stdout == "", job.describe()
    assert job.stderr == ("hpcgan: error: device 'cuda' asked for, but torch sees no CUDA device "
                          "(check the torch build and CUDA_VISIBLE_DEVICES)\n"), job.describe()


def test_help_and_usage_errors(run_single, hpcgan):
    job = run_single(hpcgan + ["--help"], timeout=60)
    assert job.returncode == 0 and re.search(r"^\s+info\s", job.stdout, re.M), job.describe()
    job = run_single(hpcgan + ["info", "--backend", "mpi"], timeout=60)
    assert job.returncode == 2 and "invalid choice: 'mpi'" in job.stderr, job.describe()


@pytest.mark.timeout(60)
def test_a_native_crash_prints_the_python_stack(tmp_path):
    """A segfault inside native code (as in MPI init under srun, CI 2026-11-30) shows where Python was, on
    descriptor 2 even when sys.stderr is replaced."""
    code = ("import io, sys, ctypes\nfrom hpcgan.cli import main as m\nsys.stderr = io.StringIO()\n"
            "m._crash_tracebacks()\n\ndef native_call():\n    ctypes.string_at(0)\n\nnative_call()\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert p.returncode == -11, (p.returncode, p.stderr)
    assert "Segmentation fault" in p.stderr and "in native_call" in p.stderr, p.stderr
