"""data.stage across ranks: the per-node decision (integers), and real 2-rank runs under mpirun: a staged
run ends with the weights of an unstaged one and leaves nothing behind; a node without usable storage reads
in place with a notice; an explicit data.stage_dir that is not writable is one line and exit 2; an error
during training still removes the copies."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from hpcgan.train import checkpoint as ckpt
from hpcgan.train.staging import node_decisions

from conftest import TINY, write_crf

HPCGAN = str(Path(sys.executable).parent / "hpcgan")


def test_each_node_decides_alone():
    # (node, copier, sees the copies) per rank: node 0 fine, node 1's second rank cannot see them
    reports = [(0, True, True), (0, False, True), (1, True, True), (1, False, False)]
    assert node_decisions(reports) == {0: True, 1: False}
    assert node_decisions([(0, True, False), (0, False, False)]) == {0: False}  # the copier fell back
    assert node_decisions([(0, True, True)] * 2) == {0: False}  # two copiers: the launcher misreports nodes
    assert node_decisions([(0, False, True), (1, True, True)]) == {0: False, 1: True}  # no copier on node 0


def _weights(run_dir: Path) -> dict:
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir / "checkpoints")[-1])
    return {**{f"G.{k}": v for k, v in state["G"].items()}, **{f"D.{k}": v for k, v in state["D"].items()}}


@pytest.fixture
def node_tmp(tmp_path) -> Path:
    """Training and validation files in tmp_path, and an empty directory standing for a node's $SLURM_TMPDIR."""
    write_crf(tmp_path / "crf.h5", 16)
    write_crf(tmp_path / "val.h5", 8, seed=1)
    (tmp_path / "node-tmp").mkdir()
    return tmp_path / "node-tmp"


def _args(tmp_path: Path, run: str, *extra: str, backend: str = "horovod") -> list[str]:
    return [HPCGAN, "train", "--config", "crf-small", "--backend", backend, *TINY, f"data.path={tmp_path / 'crf.h5'}",
            f"data.val_path={tmp_path / 'val.h5'}", f"run_dir={tmp_path / run}", "train.batch_size=4", "train.epochs=2",
            *extra]


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_staged_run_matches_unstaged_and_cleans_up(tmp_path, node_tmp, run_mpi):
    run_mpi(2, _args(tmp_path, "plain"), timeout=150)
    job = run_mpi(2, _args(tmp_path, "staged", "data.stage=true"), env={"SLURM_TMPDIR": str(node_tmp)}, timeout=150)
    assert "data.stage: 2 file(s), " in job.text and "on each of 1 node(s)" in job.text, job.describe()
    assert f"(node 0: {node_tmp}/hpcgan-stage-" in job.text, job.describe()
    assert list(node_tmp.iterdir()) == []
    plain, staged = _weights(tmp_path / "plain"), _weights(tmp_path / "staged")
    assert plain.keys() == staged.keys()
    for k in plain:
        assert torch.equal(plain[k], staged[k]), k
    # The checkpoint names the files as given, not their node-local copies.
    data = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "staged" / "checkpoints")[-1])["data"]
    assert [f[0] for f in data["files"]] == [str(tmp_path / "crf.h5")]


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_unusable_storage_reads_in_place_and_bad_stage_dir_is_one_line(tmp_path, node_tmp, run_mpi):
    job = run_mpi(2, _args(tmp_path, "fallback", "data.stage=true", "train.max_steps=1"),
                  env={"SLURM_TMPDIR": str(tmp_path / "missing")}, timeout=120)
    assert (f"notice: data.stage: node(s) 0 read the data in place: cannot stage in {tmp_path / 'missing'}: "
            "No such file or directory") in job.text, job.describe()
    assert "reached train.max_steps=1" in job.text
    bad = run_mpi(2, _args(tmp_path, "bad", "data.stage=true", f"data.stage_dir={tmp_path / 'missing'}"),
                  check=False, timeout=120)
    assert bad.returncode == 2, bad.describe()
    lines = [ln for ln in bad.text.splitlines() if "data.stage_dir" in ln]
    assert lines == [f"hpcgan: error: config key data.stage_dir: {tmp_path / 'missing'}: not a writable directory "
                     "(No such file or directory) (expected node-local storage, e.g. $SLURM_TMPDIR, or leave it "
                     "empty)"], bad.describe()


@pytest.mark.timeout(120)
def test_copies_are_removed_when_training_raises(tmp_path, node_tmp, run_single):
    job = run_single(_args(tmp_path, "raises", "data.stage=true", "train.fault=0:2:raise", backend="local"),
                     env={"SLURM_TMPDIR": str(node_tmp)}, timeout=100)
    assert job.returncode != 0 and "data.stage: 2 file(s)" in job.stderr, job.describe()
    assert "injected" in job.stderr.lower(), job.describe()
    assert list(node_tmp.iterdir()) == []
