"""The galaxy workload end to end through the CLI: synth and convert, a short 2-rank training, evaluate."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hpcgan.workloads.galaxy.workload import EVAL_FIGURE, EVAL_TABLE

TINY = ["galaxy.size=16", "galaxy.widths=[4,8]", "galaxy.d_widths=[4,8]", "train.epochs=1", "train.batch_size=2",
        "train.val_batches=1"]


def write_synth(path, n, seed, **opts):
    """What `hpcgan data synth galaxy` writes, in this process (saves a start-up per file)."""
    from hpcgan.workloads.galaxy import synth as sg
    from hpcgan.data.format import DatasetWriter

    s = sg.schema(**opts)
    with DatasetWriter(path, "galaxy", n, s["input_shape"], s["target_shape"], s["input_channels"],
                       s["target_channels"], s["meta_spec"],
                       provenance={"generator": "hpcgan.workloads.galaxy.synth", "options": opts, "seed": seed}) as w:
        for x, y, m in sg.generate(0, n, seed, **opts):
            w.write(x, y, m)


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_two_rank_training_and_evaluation(tmp_path, run_mpi, run_single, hpcgan):
    train, val, test, run = (tmp_path / n for n in ("train.h5", "val.h5", "test.h5", "run"))
    small = dict(size=[16, 16], z_range=[0.15, 0.25], p_tidal=0)
    write_synth(train, 16, 1, **small)
    write_synth(val, 8, 2, **small)
    job = run_single([*hpcgan, "data", "synth", "galaxy", "--n", 12, "--seed", 3, "--size", 16, 16, "--quiet",
                      "--opt", "z_range=[0.1,0.3]", "--opt", "p_empty=0.25", "--opt", "p_star=0.25",
                      "--opt", "p_tidal=0.3", "--out", test], timeout=120)
    assert job.returncode == 0, job.describe()
    run_mpi(2, [*hpcgan, "train", "--config", "galaxy-small", f"run_dir={run}", f"data.path={train}",
                f"data.val_path={val}", *TINY], timeout=240)
    assert (run / "checkpoints").is_dir()
    job = run_single([*hpcgan, "evaluate", str(run), "--data", str(test), "--out", str(tmp_path / "ev")], timeout=120)
    assert job.returncode == 0, job.describe()
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["samples"] == 12 and np.isfinite(summary["quality"]["gan"]["psnr"]["mean"])
    assert summary["redshift_shift"]["training_z_range"] == [0.15, 0.25]
    assert summary["rare_features"].get("tidal", {"in_training": False})["in_training"] is False
    assert (tmp_path / "ev" / EVAL_FIGURE).is_file()
    assert "| richardson_lucy |" in (tmp_path / "ev" / EVAL_TABLE).read_text()


def test_convert_cli_and_bad_input(tmp_path, run_single, hpcgan):
    from test_galaxy_data import write_cutout

    write_cutout(tmp_path / "fits", "a", (20, 20), np.random.default_rng(0))
    job = run_single([*hpcgan, "data", "convert", "galaxy-fits", tmp_path / "fits", "--out", tmp_path / "g.h5",
                      "--opt", "size=16"], timeout=60)
    assert job.returncode == 0, job.describe()
    assert "1 samples" in job.stdout or "g.h5" in job.stdout
    job = run_single([*hpcgan, "data", "convert", "galaxy-fits", tmp_path / "nothing", "--out", tmp_path / "x.h5"],
                     timeout=60)
    assert job.returncode == 2 and "nothing: not a folder" in job.stderr
