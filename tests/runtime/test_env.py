"""Rank/size/locality detection from every launcher's variables, nested launchers, SLURM list parsing."""
from __future__ import annotations

import pytest

from hpcgan.runtime.env import ProcessInfo, _tasks_on_node, detect_process, expand_nodelist


def fields(info: ProcessInfo) -> tuple:
    return (info.rank, info.size, info.local_rank, info.local_size, info.node_rank, info.num_nodes, info.launcher)


def test_no_launcher_is_one_process():
    info = detect_process({"PATH": "/usr/bin", "HOME": "/root"})
    assert fields(info) == (0, 1, 0, 1, 0, 1, "none")
    assert not info.distributed and info.hostname


def test_torchrun():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1",
           "MASTER_ADDR": "n0", "MASTER_PORT": "29500"}
    assert fields(detect_process(env)) == (5, 8, 1, 4, 1, 2, "torchrun")


def test_horovodrun_gloo():
    # The variables `horovodrun -np 2 --gloo` really sets (checked with horovod 0.28.1).
    env = {"HOROVOD_RANK": "3", "HOROVOD_SIZE": "4", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2",
           "HOROVOD_CROSS_RANK": "1", "HOROVOD_CROSS_SIZE": "2", "HOROVOD_CONTROLLER": "gloo"}
    assert fields(detect_process(env)) == (3, 4, 1, 2, 1, 2, "horovodrun")


def test_open_mpi_by_slot():
    env = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    assert fields(detect_process(env)) == (5, 8, 1, 4, 1, 2, "openmpi")


def test_open_mpi_one_node_oversubscribed():
    env = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "3",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    assert fields(detect_process(env)) == (3, 4, 3, 4, 0, 1, "openmpi")


def test_pmi_hydra():
    env = {"PMI_RANK": "6", "PMI_SIZE": "8", "MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "4"}
    assert fields(detect_process(env)) == (6, 8, 2, 4, 1, 2, "pmi")


def test_pmi_without_locality_assumes_one_node():
    # All ranks on one node: local rank = rank, so each picks its own GPU.
    assert fields(detect_process({"PMI_RANK": "1", "PMI_SIZE": "3"})) == (1, 3, 1, 3, 0, 1, "pmi")


def srun_env(**extra: str) -> dict[str, str]:
    """What `srun -N 3 -n 7` sets for task 4 (node 1 holds tasks 3, 4, 5)."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "4", "SLURM_NTASKS": "7",
           "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_NUM_NODES": "3", "SLURM_NNODES": "3",
           "SLURM_STEP_TASKS_PER_NODE": "3(x2),1", "SLURM_TASKS_PER_NODE": "3(x2),1",
           "SLURM_STEP_NODELIST": "nid[00012-00013,00020]"}
    env.update(extra)
    return env


def test_srun():
    assert fields(detect_process(srun_env())) == (4, 7, 1, 3, 1, 3, "slurm")


def test_srun_last_node_has_fewer_tasks():
    env = srun_env(SLURM_PROCID="6", SLURM_LOCALID="0", SLURM_NODEID="2")
    assert fields(detect_process(env)) == (6, 7, 0, 1, 2, 3, "slurm")


def test_srun_step_tasks_per_node_wins_over_the_job_s():
    # sbatch -N 2 --ntasks-per-node=4, then `srun -n 2` (one task per node): the step's layout counts.
    env = srun_env(SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_NODEID="1",
                   SLURM_STEP_NUM_NODES="2", SLURM_TASKS_PER_NODE="4(x2)", SLURM_STEP_TASKS_PER_NODE="1(x2)")
    assert fields(detect_process(env)) == (1, 2, 0, 1, 1, 2, "slurm")


def test_sbatch_script_itself_is_one_process():
    # The batch shell has SLURM_PROCID=0 and SLURM_NTASKS=N but is no step: not rank 0 of N.
    env = srun_env(SLURM_PROCID="0")
    del env["SLURM_STEP_ID"]
    assert fields(detect_process(env)) == (0, 1, 0, 1, 0, 1, "none")


@pytest.mark.parametrize("outer,inner,expected", [
    # mpirun inside an sbatch allocation: Open MPI's view, not the allocation's
    (srun_env(SLURM_PROCID="0", SLURM_NTASKS="1"),
     {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "2",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, (2, 4, 2, 4, 0, 1, "openmpi")),
    # torchrun started by srun (one agent per node): torchrun's ranks
    (srun_env(SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_NODEID="1"),
     {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"},
     (3, 4, 1, 2, 1, 2, "torchrun")),
    # horovodrun --gloo inside an allocation
    (srun_env(), {"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1", "HOROVOD_LOCAL_SIZE": "2",
                  "HOROVOD_CROSS_RANK": "0", "HOROVOD_CROSS_SIZE": "1"}, (1, 2, 1, 2, 0, 1, "horovodrun")),
    # MPICH hydra inside an allocation launches one proxy per node through srun: PMI counts the ranks
    (srun_env(SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_NODEID="1", SLURM_STEP_NUM_NODES="2",
              SLURM_STEP_TASKS_PER_NODE="1(x2)"),
     {"PMI_RANK": "5", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "4"}, (5, 8, 1, 4, 1, 2, "pmi")),
    # srun --mpi=pmi2 sets PMI_RANK/PMI_SIZE equal to SLURM's: SLURM's fuller locality is kept
    (srun_env(), {"PMI_RANK": "4", "PMI_SIZE": "7"}, (4, 7, 1, 3, 1, 3, "slurm")),
])
def test_nested_launchers_trust_the_innermost(outer, inner, expected):
    assert fields(detect_process({**outer, **inner})) == expected


def test_detect_reads_os_environ(monkeypatch):
    for k in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID", "RANK", "HOROVOD_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert (detect_process().rank, detect_process().size) == (1, 2)


@pytest.mark.parametrize("spec,node,expected", [
    ("4", 0, 4), ("2(x3),1", 0, 2), ("2(x3),1", 2, 2), ("2(x3),1", 3, 1), ("1,3,2", 1, 3),
    ("8(x128)", 127, 8), ("", 0, 1), ("2(x2)", 5, 1), ("garbage", 0, 1),
])
def test_tasks_per_node(spec, node, expected):
    assert _tasks_on_node(spec, node) == expected


@pytest.mark.parametrize("nodelist,expected", [
    ("nid[00012-00014,00020]", ["nid00012", "nid00013", "nid00014", "nid00020"]),
    ("login1", ["login1"]),
    ("a,b", ["a", "b"]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[08-11]", ["n08", "n09", "n10", "n11"]),
    ("nid[00012-00013],login1,gpu[7]", ["nid00012", "nid00013", "login1", "gpu7"]),
    ("node1.cluster.org", ["node1.cluster.org"]),
    ("", []),
])
def test_expand_nodelist(nodelist, expected):
    assert expand_nodelist(nodelist) == expected
