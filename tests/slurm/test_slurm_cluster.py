"""The local cluster itself: ranks, local ranks and nodes as hpcgan sees them under srun --mpi=pmix."""
from __future__ import annotations

import re

import pytest

from slurm_helpers import REPO, Cluster

pytestmark = [pytest.mark.slurm]

LINE = re.compile(r"rank (\d+)/(\d+) local (\d+)/(\d+) node (\d+)/(\d+) host \S+ launcher (\S+) backend (\w+)")


def rank_lines(log: str) -> dict[int, tuple]:
    return {int(m.group(1)): m.groups() for m in LINE.finditer(log)}


@pytest.mark.timeout(180)
def test_info_on_one_node_and_on_two_nodes(slurm: Cluster) -> None:
    """2 ranks on node c1, and 1 rank on each of n1, n2 (two slurmds on this host, one TmpFS each), at the same time."""
    script = REPO / "tests" / "slurm" / "info_job.sh"
    one = slurm.sbatch(script, sbatch_args=("-N", "1", "--ntasks-per-node=2"))
    two = slurm.sbatch(script, sbatch_args=("-p", "multi", "-N", "2", "--ntasks-per-node=1"))
    for job in (one, two):
        slurm.wait(job, timeout=150)
        assert job.state == "COMPLETED" and job.exit_code == 0, job.log()
    r1, r2 = rank_lines(one.log()), rank_lines(two.log())
    # rank, size, local, local size, node, nodes, launcher, backend
    assert r1 == {0: ("0", "2", "0", "2", "0", "1", "slurm", "horovod"),
                  1: ("1", "2", "1", "2", "0", "1", "slurm", "horovod")}, one.log()
    assert r2 == {0: ("0", "2", "0", "1", "0", "2", "slurm", "horovod"),
                  1: ("1", "2", "0", "1", "1", "2", "slurm", "horovod")}, two.log()
    assert "summary: 2 rank(s) on 2 node(s)" in two.log()


@pytest.mark.timeout(120)
def test_nodes_sharing_this_host_do_not_share_open_mpi_files(slurm: Cluster) -> None:
    """n1 and n2 are one host: each task gets its node's own Open MPI session and shared-memory directory
    (scripts/slurm_local.sh, TaskProlog), as separate machines would have. Without it both ranks of a
    two-node step (same host name, job id, local rank 0) name the same /dev/shm/vader_segment file; a
    two-node step crashed once in MPI init (segfault, CI 2026-11-30), likely from that."""
    probe = slurm.workdir / "ompi_dirs.sh"
    probe.write_text('#!/bin/bash\nsrun --mpi=pmix sh -c \'echo "task $SLURMD_NODENAME '
                     '$OMPI_MCA_orte_tmpdir_base $OMPI_MCA_btl_vader_backing_directory"\'\n')
    job = slurm.sbatch(probe, sbatch_args=("-p", "multi", "-N", "2", "--ntasks-per-node=1", "-o", "ompi-dirs-%j.out"))
    slurm.wait(job, timeout=100)
    assert job.state == "COMPLETED", job.log()
    dirs = {line.split()[1]: line.split()[2:] for line in job.log().splitlines() if line.startswith("task ")}
    assert sorted(dirs) == ["n1", "n2"], job.log()
    for node, (session, shm) in dirs.items():
        assert session == shm and session.endswith(f"/tmp/{node}/ompi"), job.log()
