"""scripts/fastsim_base_only.py: the copy samples the likelihood base alone, everything else unchanged."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from hpcgan.config import load_config
from hpcgan.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from hpcgan.workloads import get_workload

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fastsim_base_only.py"


def _checkpoint(tmp_path: Path, preset: str, *overrides: str) -> Path:
    cfg = load_config(preset, list(overrides))
    torch.manual_seed(0)
    G = get_workload(cfg).build_generator()
    for p in G.parameters():  # a trained correction: nonzero everywhere
        p.data.normal_()
    state = {"workload": cfg.workload, "config": cfg.to_dict(), "G": G.state_dict(),
             "G_ema": {k: v.clone() for k, v in G.state_dict().items()}, "global_step": 7}
    return save_checkpoint(state, tmp_path / "run" / "checkpoints", 7, keep=1)


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_copy_zeroes_only_the_correction_and_samples_the_base(tmp_path):
    src = _checkpoint(tmp_path, "lhc-fastsim-small")
    job = run(src, tmp_path / "base")
    assert job.returncode == 0, job.stderr
    before, after = load_checkpoint(src), load_checkpoint(list_checkpoints(tmp_path / "base" / "checkpoints")[-1])
    for net in ("G", "G_ema"):
        for k, v in before[net].items():
            if k.startswith("head.1."):
                assert not v.eq(0).all() and after[net][k].eq(0).all(), k
            else:
                assert torch.equal(v, after[net][k]), k
    cfg = load_config("lhc-fastsim-small")
    G = get_workload(cfg).build_generator()
    G.load_state_dict(after["G_ema"])
    x = torch.randn(32, cfg.lhc.hidden)
    assert G.head(x).eq(0).all()  # the correction adds nothing: reco = truth + base x scale


def test_refuses_a_model_without_a_base_and_other_workloads(tmp_path):
    for preset, overrides, want in (("lhc-fastsim-small", ["lhc.smear_base=false", "lhc.smear_corr=false"],
                                     "no smearing base"), ("lhc-small", [], "workload lhc-fastsim expected")):
        src = _checkpoint(tmp_path / preset, preset, *overrides)
        job = run(src, tmp_path / preset / "out")
        assert job.returncode == 2 and want in job.stderr and job.stderr.count("\n") == 1, job.stderr
        assert not (tmp_path / preset / "out").exists()
