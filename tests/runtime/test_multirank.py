"""Real multi-rank jobs for every backend: collectives, data-parallel equivalence, failure ends the job.

Launchers: horovod over MPI (`mpirun`), horovod over Gloo (`horovodrun --gloo`),
torch.distributed gloo (`mpirun`). Each job runs under mpirun's own timeout and
ours (conftest.run_mpi), and a failure shows every rank's output.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
CHECKS_PER_RANK = 33  # every check in collectives_worker.py: none may be skipped silently

# id -> (launcher, backend)
SETUPS = {
    "horovod-mpi": ("mpirun", "horovod"),
    "horovod-gloo": ("horovodrun", "horovod"),
    "torch-gloo": ("mpirun", "torch"),
}


def _setup(name: str) -> tuple[str, str]:
    launcher, backend = SETUPS[name]
    if backend == "horovod" and importlib.util.find_spec("horovod") is None:
        pytest.fail("horovod is not installed: run the tests through 'make test' (it builds the environment)",
                    pytrace=False)
    return launcher, backend


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.parametrize("setup,np", [("horovod-mpi", 2), ("horovod-mpi", 4), ("horovod-gloo", 2), ("torch-gloo", 2)])
def test_collectives(setup, np, tmp_path, run_mpi):
    launcher, backend = _setup(setup)
    job = run_mpi(np, [HERE / "collectives_worker.py", backend, tmp_path], timeout=240, launcher=launcher)
    passed = dict(re.findall(r"rank (\d+)/\d+ .*: (\d+) checks passed", job.text))
    assert passed == {str(r): str(CHECKS_PER_RANK) for r in range(np)}, job.describe()


def _load_dp_worker():
    spec = importlib.util.spec_from_file_location("dp_worker", HERE / "dp_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.parametrize("setup,np", [("horovod-mpi", 2), ("horovod-gloo", 2), ("torch-gloo", 2), ("horovod-mpi", 4)])
def test_data_parallel_equals_one_process(setup, np, tmp_path, run_mpi):
    """N ranks x batch b, gradients averaged by sync_gradients == one process x batch N*b (Adam, K steps)."""
    launcher, backend = _setup(setup)
    job = run_mpi(np, [HERE / "dp_worker.py", backend, tmp_path], timeout=240, launcher=launcher)

    from hpcgan.runtime.backend import LocalBackend
    from hpcgan.runtime.env import ProcessInfo

    dp = _load_dp_worker()
    reference = dp.train(LocalBackend(ProcessInfo(), torch.device("cpu")), dp.PER_RANK_BATCH * np)
    torch.manual_seed(1000)
    initial = torch.nn.Sequential(torch.nn.Linear(dp.D_IN, dp.HIDDEN), torch.nn.Tanh(),
                                  torch.nn.Linear(dp.HIDDEN, dp.D_OUT)).state_dict()
    moved = max((reference[k] - initial[k]).abs().max().item() for k in reference)
    assert moved > 1e-2, "the reference run barely trained: the comparison would prove nothing"

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(np)]
    for r, saved in enumerate(ranks):
        assert saved["size"] == np, job.describe()
        for k, want in reference.items():
            got = saved["weights"][k]
            assert torch.equal(got, ranks[0]["weights"][k]), f"rank {r} differs from rank 0 in {k}\n{job.describe()}"
            err = (got - want).abs().max().item()
            assert err < 1e-5, f"rank {r} {k}: max |distributed - one process| = {err:.2e}\n{job.describe()}"


# (setup, mode): every way a rank can fail, for each backend.
FAULTS = [("horovod-mpi", "user"), ("horovod-mpi", "raise"), ("horovod-mpi", "script"), ("horovod-mpi", "exit"),
          ("horovod-gloo", "raise"), ("torch-gloo", "user"), ("torch-gloo", "raise"), ("torch-gloo", "script")]
FAULT_BOUND_S = 30  # from the failure to the end of the whole job (start-up excluded: it varies with load)


@pytest.mark.mpi
@pytest.mark.timeout(240)
@pytest.mark.parametrize("setup,mode", FAULTS)
def test_rank_failure_ends_job(setup, mode, run_mpi):
    """Rank 1 fails while rank 0 waits in an allreduce: the job ends non-zero, fast, saying why."""
    launcher, backend = _setup(setup)
    job = run_mpi(2, [HERE / "fault_worker.py", backend, mode], timeout=180, launcher=launcher, check=False)
    failed_at = re.search(r"rank 1: failing at ([\d.]+)", job.text)
    assert failed_at, job.describe()
    took = job.ended - float(failed_at.group(1))
    print(f"{setup} {mode}: exit code {job.returncode}, job ended {took:.1f} s after the failure "
          f"({job.elapsed:.1f} s in all)")
    assert job.returncode != 0, job.describe()
    assert took < FAULT_BOUND_S, f"the job took {took:.0f} s to end after the failure\n{job.describe()}"
    assert job.text.count("first allreduce [2.0, 2.0, 2.0]") == 2, job.describe()
    assert "second allreduce returned" not in job.text, job.describe()
    if mode == "user":
        assert "[rank 1] hpcgan: error: data file shard-1.h5: truncated" in job.text, job.describe()
        if launcher == "mpirun":
            assert job.returncode == 2, job.describe()
    elif mode == "exit":
        assert "RuntimeError" not in job.text and "hpcgan: error" not in job.text, job.describe()
    else:
        assert "RuntimeError: injected failure on rank 1" in job.text, job.describe()


# Shorter than slow_root_worker.SLOW_S: what jobs/env.sh sets to 120 s, scaled down.
SHORT_TIMEOUTS = {"HPCGAN_COLLECTIVE_TIMEOUT": "4", "HOROVOD_STALL_CHECK_TIME_SECONDS": "1",
                  "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "4"}


@pytest.mark.mpi
@pytest.mark.timeout(300)
@pytest.mark.parametrize("setup", ["horovod-mpi", "torch-gloo"])
def test_slow_work_on_rank_0_does_not_trip_a_timeout(setup, tmp_path, run_mpi):
    """Rank 0 works 8 s (a checkpoint on a slow file system) with a 4 s collective timeout / stall shutdown:
    in one barrier the job dies (control), with run_on_root's short polls it carries on."""
    launcher, backend = _setup(setup)
    worker = HERE / "slow_root_worker.py"
    (tmp_path / "poll").mkdir()
    (tmp_path / "barrier").mkdir()
    job = run_mpi(2, [worker, backend, "poll", tmp_path / "poll"], timeout=120, launcher=launcher,
                  env=SHORT_TIMEOUTS)
    assert job.text.count("carried on after rank 0's 8 s of work (2 ranks)") == 2, job.describe()
    control = run_mpi(2, [worker, backend, "barrier", tmp_path / "barrier"], timeout=120, launcher=launcher,
                      env=SHORT_TIMEOUTS, check=False)
    assert control.returncode != 0 and "carried on" not in control.text, control.describe()
