"""data.stage on the two-node partition: 2 ranks on each of n1 and n2 (each node with its own TmpFS), one copy
per node made by its local rank 0, training reads it, and nothing is left once the job ends."""
from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from slurm_helpers import REPO, TINY, Cluster, final_weights
from test_slurm_cluster import rank_lines

pytestmark = [pytest.mark.slurm]


def _node_tmpfs() -> str:
    """The cluster's TmpFS template (scripts/slurm_local.sh: $STATE/tmp/%n), with %n for the node name."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    return re.search(r"^TmpFS\s*=\s*(\S+)", out, re.M).group(1)


def _staged(tmpfs: str, node: str) -> dict[str, list[str]]:
    root = Path(tmpfs.replace("%n", node))
    return {d.name: sorted(f.name for f in d.iterdir()) for d in root.glob("hpcgan-stage-*")} if root.is_dir() else {}


@pytest.mark.timeout(240)
def test_two_nodes_stage_once_per_node_train_and_clean_up(slurm: Cluster, tiny_data) -> None:
    tmpfs = _node_tmpfs()
    run_dir = slurm.workdir / "runs" / "staged"
    # data.stage_dir is expanded on each rank: the node's own TmpFS. 4 ranks x batch 32 = the usual global batch.
    # A straggling rank 0 (0.25 s a step) keeps the copies in place long enough to be seen from outside.
    job = slurm.sbatch(REPO / "tests" / "slurm" / "stage_job.sh", "data.stage=true",
                       f"data.stage_dir={tmpfs.replace('%n', '$SLURMD_NODENAME')}", "train.batch_size=32",
                       sbatch_args=("-p", "multi", "-N", "2", "-n", "4", "--overcommit"),
                       HPCGAN_OVERRIDES=TINY, HPCGAN_RUN_DIR=str(run_dir), HPCGAN_FAULT="0:1:slow",
                       # Open MPI's shared-memory transport crashed in Horovod's start (MPI_Comm_dup) with two
                       # ranks on each of two "nodes" that are one host: TCP between all ranks.
                       OMPI_MCA_btl="self,tcp")
    seen: dict[str, dict] = {}
    t0 = time.time()
    while time.time() - t0 < 200:
        slurm.refresh(job)
        if job.state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            break
        for node in ("n1", "n2"):
            now = _staged(tmpfs, node)
            if now and len(now[next(iter(now))]) == 2:  # both files copied (the copy may still be in progress)
                seen.setdefault(node, now)
        time.sleep(0.2)
    slurm.wait(job, timeout=30)
    log = job.log()
    assert job.state == "COMPLETED" and job.exit_code == 0, log
    # ranks 0, 1 on node 0 (n1) and 2, 3 on node 1 (n2): local ranks 0 and 1 on each
    assert {r: (g[2], g[4]) for r, g in rank_lines(log).items()} == {0: ("0", "0"), 1: ("1", "0"), 2: ("0", "1"),
                                                                      3: ("1", "1")}, log
    assert "data.stage: 2 file(s), " in log and "on each of 2 node(s)" in log, log
    assert f"(node 0: {tmpfs.replace('%n', 'n1')}/hpcgan-stage-" in log, log
    assert "read the data in place" not in log, log
    # one staging directory per node, in that node's own TmpFS, holding the training and validation files
    for node in ("n1", "n2"):
        assert node in seen, f"no staged copy seen in {tmpfs.replace('%n', node)}; log:\n{log}"
        (files,) = seen[node].values()
        assert sorted(f.split("-", 1)[1] for f in files) == ["tiny-train.h5", "tiny-val.h5"], seen
        assert _staged(tmpfs, node) == {}, f"left behind on {node}: {_staged(tmpfs, node)}"
    assert final_weights(run_dir)["global_step"] == 24
