"""A short lhc-small training on 2 Horovod ranks beats the untrained generator on the Wasserstein distances."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from hpcgan.config import load_config
from hpcgan.workloads import get_workload
from hpcgan.workloads.lhc import evaluate as ev


@pytest.mark.mpi
@pytest.mark.timeout(900)
def test_short_training_beats_untrained(tmp_path, run_mpi, run_single, hpcgan):
    train, val, run = tmp_path / "train.h5", tmp_path / "val.h5", tmp_path / "run"
    for path, n, seed in ((train, 8192, 1), (val, 2048, 2)):
        job = run_single([*hpcgan, "data", "synth", "lhc", "--n", n, "--seed", seed, "--out", path], timeout=120)
        assert job.returncode == 0, job.describe()
    # The old generator (linear seed, random output layers): lhc-small's own starts at the helix fit
    # (refined seed, zero-initialised corrections), which no training can halve the distance to.
    old_model = ["lhc.refine_iters=0", "lhc.zero_init=false"]
    common = [f"data.path={train}", f"data.val_path={val}", "train.val_batches=2", *old_model]
    # One rank (local backend) runs the workload end to end too.
    job = run_single([*hpcgan, "train", "--config", "lhc-small", "--backend", "local", f"run_dir={tmp_path / 'one'}",
                      "train.max_steps=3", *common], timeout=180)
    assert job.returncode == 0, job.describe()
    run_mpi(2, [*hpcgan, "train", "--config", "lhc-small", "--backend", "horovod", f"run_dir={run}",
                "train.epochs=2", *common], timeout=600)
    job = run_single([*hpcgan, "evaluate", str(run), "--data", str(val), "--out", str(tmp_path / "eval")], timeout=180)
    assert job.returncode == 0, job.describe()
    trained = json.loads((tmp_path / "eval" / ev.EVAL_JSON).read_text())
    assert (tmp_path / "eval" / ev.FIG_PARAMS).is_file() and (tmp_path / "eval" / ev.FIG_RESID).is_file()
    head = json.loads((tmp_path / "eval" / "summary.json").read_text())["headline"]  # issue 15's metrics lead
    assert set(head["resolution_ratio"]) == {"q/pT", "phi0", "eta", "d0", "z0"} and 0 <= head["two_sample_auc"] <= 1
    assert (tmp_path / "eval" / ev.FIG_METRICS).is_file()

    cfg = load_config("lhc-small", old_model)
    w = get_workload(cfg)
    torch.manual_seed(cfg.seed)
    G = w.build_generator().eval()
    with h5py.File(val) as f:
        x, y, truth = f["inputs"][:], f["targets"][:], f["meta/true_params"][:]
    with torch.no_grad():
        fake = w.to_data_units(G(w.prepare(torch.from_numpy(x), torch.from_numpy(y), torch.device("cpu"))[0])).numpy()
    untrained = ev.evaluate(x, y, fake, {"true_params": truth}, tmp_path / "untrained", 10, verbose=False)
    report = {k: (untrained["wasserstein1"][k]["w1_norm"], trained["wasserstein1"][k]["w1_norm"])
              for k in trained["wasserstein1"]}
    print(json.dumps(report, indent=1))
    for key in ("w1_norm_mean_parameters", "w1_norm_mean_residuals"):
        assert trained[key] < 0.5 * untrained[key], (key, trained[key], untrained[key], report)
    for k in ("q/pT [1/GeV]", "d0 [mm]", "res pT/pT", "res z0 [mm]"):
        assert report[k][1] < 0.5 * report[k][0], (k, report)
