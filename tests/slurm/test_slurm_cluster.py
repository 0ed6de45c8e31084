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
