"""The shipped job scripts on the local cluster: train, preempt + requeue + resume, two nodes, benchmark.

All training tests share one tiny LHC config (slurm_helpers.TINY: 24 steps on 2 ranks) and compare their
final weights with the uninterrupted single-node run (`reference_run`), bit for bit (CPU, fixed seed).
"""
from __future__ import annotations

import json
import os
import random
import time

import pytest

from slurm_helpers import REPO, TINY, TINY_STEPS, Cluster, Job, assert_same_weights, final_weights
from test_slurm_cluster import rank_lines

pytestmark = [pytest.mark.slurm]
TRAIN = REPO / "jobs" / "train_lhc.sh"


def _metrics_step(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


@pytest.mark.timeout(300)
def test_sbatch_train_lhc_leaves_checkpoints_metrics_figures(reference_run) -> None:
    job, run_dir = reference_run
    log = job.log()
    assert job.state == "COMPLETED" and job.exit_code == 0, log
    assert "2 task(s) on 1 node(s)" in log and "2 rank(s), backend horovod" in log, log
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*.pt"))
    assert ckpts == ["ckpt-00000012.pt", f"ckpt-{TINY_STEPS:08d}.pt"], log
    assert final_weights(run_dir)["global_step"] == TINY_STEPS
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records if r.get("kind") == "train"} >= set(range(2, TINY_STEPS + 1, 2))
    assert sorted(p.name for p in (run_dir / "figures").glob("*.png")), "no figures"
    assert (run_dir / "config.yaml").exists() and (run_dir / "environment.json").exists()
    assert not (run_dir / "interruptions.jsonl").exists()


def _train_until_step(slurm: Cluster, run_dir, at_step: int, sbatch_args: tuple[str, ...] = (), **env: str) -> Job:
    """sbatch the tiny run and return once it has trained past `at_step`, still running. Rank 0 straggles
    (0.25 s a step, weights unchanged): the tiny run otherwise ends (24 steps in ~2 s) before a signal lands."""
    job = slurm.sbatch(TRAIN, sbatch_args=sbatch_args, HPCGAN_OVERRIDES=TINY, HPCGAN_FAULT="0:1:slow", **env)
    slurm.wait(job, timeout=180, until=lambda j: _metrics_step(run_dir) >= at_step or j.state not in ("PENDING", "RUNNING"))
    assert job.state == "RUNNING", f"job {job.state} before step {at_step}:\n{job.log()}"
    return job


@pytest.mark.timeout(420)
def test_preempted_job_checkpoints_requeues_resumes_and_matches(slurm: Cluster, tiny_data, reference_run) -> None:
    """scancel --signal=USR2 at a random step -> checkpoint, exit 75, scontrol requeue, resume, same weights."""
    at_step = random.Random(os.environ.get("HPCGAN_TEST_SEED", time.time_ns())).randint(3, 15)
    print(f"signalling once training has passed step {at_step}")
    run_dir = slurm.workdir / "runs" / "preempted"
    job = _train_until_step(slurm, run_dir, at_step, HPCGAN_RUN_DIR=str(run_dir))
    t_signal = time.time()
    slurm.scancel(job, "--signal=USR2")
    slurm.wait(job, timeout=120, until=lambda j: int(j.fields.get("Restarts", 0)) >= 1 and j.state == "RUNNING")
    t_running = time.time()
    slurm.wait(job, timeout=240)
    log = job.log()
    print(f"measured: signal -> requeued job RUNNING {t_running - t_signal:.1f} s (cred_expire 20 s on this cluster)")
    assert job.state == "COMPLETED" and job.exit_code == 0, log
    assert job.fields.get("Restarts") == "1", log
    interruptions = [json.loads(line) for line in (run_dir / "interruptions.jsonl").read_text().splitlines()]
    assert len(interruptions) == 1, interruptions
    rec = interruptions[0]
    assert rec["signal"] == "SIGUSR2" and rec["slurm_job_id"] == job.id and rec["slurm_restart_count"] in (None, "0")
    assert at_step <= rec["global_step"] < TINY_STEPS, rec
    print(f"measured: signal -> checkpoint written by step {rec['global_step']}: "
          f"{rec['received_at'] - t_signal:.2f} s to deliver")
    assert f"preempted (SIGUSR2): checkpoint at step {rec['global_step']} written; exiting 75" in log
    assert "requeue 1 of at most 3" in log and "restart 1," in log
    assert f"global step {rec['global_step']}" in log  # "resumed from ...: ..., global step N"
    assert_same_weights(final_weights(run_dir), final_weights(reference_run[1]))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("to", ["ranks", "whole-job"])
def test_term_preemption_requeues_and_matches(slurm: Cluster, tiny_data, reference_run, to: str) -> None:
    """SIGTERM as a preemption sends it, after the epoch-1 checkpoint (step 12). `ranks`: to the step's ranks
    (`scancel --signal=TERM`, what slurmctld sends at the start of a preemption GraceTime): they checkpoint and
    exit 75. `whole-job`: to every process, the batch shell and srun included (`--full`): srun answers TERM by
    killing its ranks before they can checkpoint, and the batch script, which trapped TERM, requeues anyway.
    Either way the job requeues, resumes and ends with the weights of the uninterrupted run."""
    run_dir = slurm.workdir / "runs" / f"term-{to}"
    job = _train_until_step(slurm, run_dir, 14, HPCGAN_RUN_DIR=str(run_dir))
    slurm.scancel(job, "--signal=TERM", *(["--full"] if to == "whole-job" else []))
    slurm.wait(job, timeout=120, until=lambda j: int(j.fields.get("Restarts", 0)) >= 1 and j.state == "RUNNING")
    slurm.wait(job, timeout=180)
    log = job.log()
    assert job.state == "COMPLETED" and job.exit_code == 0, log
    assert job.fields.get("Restarts") == "1" and "requeue 1 of at most 3" in log, log
    if to == "ranks":
        recs = [json.loads(line) for line in (run_dir / "interruptions.jsonl").read_text().splitlines()]
        rec = recs[-1]
        assert len(recs) == 1 and rec["signal"] == "SIGTERM" and rec["global_step"] >= 14, recs
        assert f"resumed from {run_dir}/checkpoints/ckpt-{rec['global_step']:08d}.pt" in log, log
    else:
        assert "SIGTERM to the batch script" in log and "ended (exit" in log and "on SIGTERM before" in log, log
        assert f"resumed from {run_dir}/checkpoints/ckpt-" in log, log
    assert_same_weights(final_weights(run_dir), final_weights(reference_run[1]))


@pytest.mark.timeout(300)
def test_resubmitted_job_resumes_in_its_run_dir_which_one_live_job_holds(slurm: Cluster, tiny_data,
                                                                         reference_run) -> None:
    """The default run directory is runs/<job name>: a job submitted again under the same name (a new job id)
    resumes there. While the first one runs, a second one under that name stops with one line (exit 2).
    scancel is not turned into a requeue, and a lock naming a job that has ended does not block the
    resubmission."""
    name = f"resubmit-{time.strftime('%H%M%S')}"
    run_dir = slurm.workdir / "runs" / name
    first = _train_until_step(slurm, run_dir, 14, sbatch_args=("-J", name))
    assert f"run dir runs/{name}," in first.log(), first.log()

    clash = slurm.sbatch(TRAIN, sbatch_args=("-J", name, "-p", "multi", "-N", "2", "--ntasks-per-node=1"),
                         HPCGAN_OVERRIDES=TINY)
    slurm.wait(clash, timeout=120)
    assert clash.state == "FAILED" and clash.exit_code == 2, clash.log()
    assert f"hpcgan job: run directory runs/{name} is in use by job {first.id} (RUNNING)" in clash.log()

    slurm.scancel(first)
    slurm.wait(first, timeout=120, until=lambda j: "not requeueing" in j.log())  # 60 s was too few on a loaded VM
    slurm.wait(first, timeout=60)
    assert first.state == "CANCELLED" and first.fields.get("Restarts") == "0", first.log()
    assert not (run_dir / "job.lock").exists()  # released by the batch script
    (run_dir / "job.lock").write_text(f"{first.id}\n")  # what a batch shell killed outright leaves: stale

    again = slurm.sbatch(TRAIN, sbatch_args=("-J", name), HPCGAN_OVERRIDES=TINY)
    slurm.wait(again, timeout=180)
    log = again.log()
    assert again.state == "COMPLETED" and again.exit_code == 0, log
    assert f"resumed from runs/{name}/checkpoints/ckpt-" in log, log
    assert_same_weights(final_weights(run_dir), final_weights(reference_run[1]))
    assert not (run_dir / "job.lock").exists()


@pytest.mark.timeout(300)
def test_two_nodes_train_with_correct_ranks_and_match_one_node(slurm: Cluster, two_node_job, reference_run) -> None:
    """sbatch -N 2 --ntasks-per-node=1 on nodes n1, n2 (two slurmds): same weights as 2 ranks on one node."""
    job, run_dir = two_node_job  # submitted beside the reference run (fixture)
    slurm.wait(job, timeout=280)
    log = job.log()
    assert job.state == "COMPLETED" and job.exit_code == 0, log
    assert job.fields.get("NodeList") == "n[1-2]", job.fields
    assert rank_lines(log) == {0: ("0", "2", "0", "1", "0", "2", "slurm", "horovod"),
                               1: ("1", "2", "0", "1", "1", "2", "slurm", "horovod")}, log
    assert_same_weights(final_weights(run_dir), final_weights(reference_run[1]))


@pytest.mark.timeout(300)
def test_bench_scaling_runs_one_and_two_ranks_on_two_nodes_through_srun(slurm: Cluster) -> None:
    """jobs/bench_scaling.sh on nodes n1 and n2, each with its own /tmp: every rank count is an srun step, and
    the HDF5 file of the real-data rows lies beside the results, where both nodes read it."""
    bench_dir = slurm.workdir / "results" / "scaling"
    script = REPO / "jobs" / "bench_scaling.sh"
    assert "mpirun" not in script.read_text()
    job = slurm.sbatch(script, sbatch_args=("-p", "multi", "-N", "2", "--ntasks-per-node=1"),
                       HPCGAN_BENCH_DIR=str(bench_dir), HPCGAN_BENCH_BACKENDS="horovod",
                       HPCGAN_BENCH_ARGS="--modes weak --data-kinds real --batch 64 --iters 1,2,1")
    slurm.wait(job, timeout=280)
    log = job.log()
    assert job.state == "COMPLETED" and job.exit_code == 0, log
    assert f"samples to {bench_dir}/.scaling-work-" in log and "lhc horovod x 2 rank(s) by srun" in log, log
    doc = json.loads((bench_dir / "scaling.json").read_text())
    runs = doc["results"]["runs"]
    assert sorted((r["ranks"], r["nodes"], r["data"]) for r in runs) == [(1, 1, "real"), (2, 2, "real")], runs
    assert all(r["samples_per_s"]["mean"] > 0 for r in runs), runs
    assert (bench_dir / "scaling.png").stat().st_size > 0
    assert not list(bench_dir.glob(".scaling-work-*"))
