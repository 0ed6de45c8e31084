"""Rank, size and locality from whichever launcher started us.

Order matters: srun inside an mpirun allocation, or mpirun inside SLURM, both
set several families of variables; the innermost launcher's are trusted first
(torchrun, Horovod's own gloo launcher, Open MPI, PMI, then SLURM).
"""
from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    node_rank: int = 0
    num_nodes: int = 1
    launcher: str = "none"  # torchrun | horovodrun | openmpi | pmi | slurm | none
    hostname: str = ""

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int | None:
    for n in names:
        v = env.get(n)
        if v not in (None, ""):
            try:
                return int(v)
            except ValueError:
                pass
    return default


def detect_process(env: Mapping[str, str] | None = None) -> ProcessInfo:
    env = os.environ if env is None else env
    host = socket.gethostname()
    if "RANK" in env and "WORLD_SIZE" in env and "LOCAL_RANK" in env:  # torchrun
        local_size = _int(env, "LOCAL_WORLD_SIZE", default=1)
        return ProcessInfo(
            rank=int(env["RANK"]), size=int(env["WORLD_SIZE"]), local_rank=int(env["LOCAL_RANK"]),
            local_size=local_size, node_rank=_int(env, "GROUP_RANK", default=0),
            num_nodes=max(1, int(env["WORLD_SIZE"]) // max(local_size, 1)), launcher="torchrun", hostname=host)
    if "HOROVOD_RANK" in env and "HOROVOD_SIZE" in env:  # horovodrun --gloo
        return ProcessInfo(
            rank=int(env["HOROVOD_RANK"]), size=int(env["HOROVOD_SIZE"]),
            local_rank=_int(env, "HOROVOD_LOCAL_RANK", default=0), local_size=_int(env, "HOROVOD_LOCAL_SIZE", default=1),
            node_rank=_int(env, "HOROVOD_CROSS_RANK", default=0), num_nodes=_int(env, "HOROVOD_CROSS_SIZE", default=1),
            launcher="horovodrun", hostname=host)
    if "OMPI_COMM_WORLD_RANK" in env:  # Open MPI's mpirun
        size = int(env["OMPI_COMM_WORLD_SIZE"])
        local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", default=1)
        return ProcessInfo(
            rank=int(env["OMPI_COMM_WORLD_RANK"]), size=size,
            local_rank=_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", default=0), local_size=local_size,
            node_rank=int(env["OMPI_COMM_WORLD_RANK"]) // max(local_size, 1),  # by-slot mapping (mpirun's default)
            num_nodes=max(1, -(-size // max(local_size, 1))), launcher="openmpi", hostname=host)
    # MPICH/Intel hydra inside an allocation starts one proxy per node with srun: SLURM's numbers then
    # count proxies, and PMI's (a different world size) count the ranks.
    pmi_differs = "PMI_RANK" in env and env.get("PMI_SIZE") != env.get("SLURM_NTASKS")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and "SLURM_STEP_ID" in env and not pmi_differs:  # srun
        return ProcessInfo(
            rank=int(env["SLURM_PROCID"]), size=int(env["SLURM_NTASKS"]),
            local_rank=_int(env, "SLURM_LOCALID", default=0),
            local_size=_tasks_on_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", ""),
                                      _int(env, "SLURM_NODEID", default=0)),
            node_rank=_int(env, "SLURM_NODEID", default=0),
            num_nodes=_int(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES", default=1),
            launcher="slurm", hostname=host)
    if "PMI_RANK" in env and "PMI_SIZE" in env:  # MPICH hydra / Cray PMI
        size = int(env["PMI_SIZE"])
        local_size = _int(env, "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE", default=size)
        return ProcessInfo(
            rank=int(env["PMI_RANK"]), size=size,
            local_rank=_int(env, "MPI_LOCALRANKID", "PMI_LOCAL_RANK", default=int(env["PMI_RANK"]) % max(local_size, 1)),
            local_size=local_size, node_rank=int(env["PMI_RANK"]) // max(local_size, 1),
            num_nodes=max(1, -(-size // max(local_size, 1))), launcher="pmi", hostname=host)
    return ProcessInfo(hostname=host)


def _tasks_on_node(spec: str, node: int) -> int:
    """Parse SLURM's tasks-per-node list, e.g. '2(x3),1' -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in filter(None, spec.split(",")):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            return 1
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts[node] if node < len(counts) else 1


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM node list ('nid[00012-00014,00020],login1') into host names."""
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist):
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            hosts.append(prefix)
            continue
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            hi = hi or lo
            hosts += [f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1)]
    return hosts
