"""Where does the GAN's q/pT width come from? The parameter-free seeds of LHCGenerator against the fit.

For the validation file: the linearised helix seed (`linear_seed`) and its Gauss-Newton refinement
(`helix_refine`, 1-4 iterations) are scored with the same metrics as the GAN (hpcgan.workloads.lhc.metrics,
width ratio to the conventional fit pooled and per true-pT bin). A run directory's evaluation can be added
with --gan RUN_DIR (reads RUN_DIR/evaluation/generated.h5 if present, else nothing).
Usage: python scripts/lhc_seed_diagnosis.py data/lhc-small-val.h5
"""
from __future__ import annotations

import sys

import h5py
import numpy as np
import torch

from hpcgan.workloads.lhc import metrics, space
from hpcgan.workloads.lhc.helix import detector
from hpcgan.workloads.lhc.models import _Geometry, helix_refine, linear_seed


def seed_params(inputs: np.ndarray, iters: int | None) -> np.ndarray:
    """(N, 4, L) hits in mm -> (N, 5) seed parameters in file units (iters None: the linear seed alone)."""
    geo = _Geometry(inputs.shape[2])
    cond = space.inputs_to_model(torch.from_numpy(inputs).float(), geo.radii)
    f = geo.frame(cond)
    s = linear_seed(f, geo.radii, geo.sigma_rphi, geo.sigma_z, geo.bfield)
    if iters is not None:
        s = helix_refine(f, s, geo.radii, geo.sigma_rphi, geo.sigma_z, geo.bfield, iters)
    phi0 = torch.remainder(f["phi"] + s["dphi0"] + np.pi, 2 * np.pi) - np.pi
    return torch.stack([s["qpt"], phi0, s["eta"], s["d0"], s["z0"]], 1).double().numpy()


def report(name: str, truth: np.ndarray, fit: np.ndarray, p: np.ndarray) -> None:
    m = metrics.compare(truth, fit, p, paired=True)
    h = metrics.headline(m)
    r = h["resolution_ratio"]
    per_pt = {}
    for row in m["bins"]:
        if "q/pT" in row:
            per_pt.setdefault(row["bin"].split(",")[0], []).append(row["q/pT"]["ratio"])
    d = np.abs(p[:, 0] - fit[:, 0]) / np.abs(fit[:, 0])
    print(f"{name:<18} q/pT {r['q/pT']:.3f}  others {min(list(r.values())[1:]):.3f}-{max(list(r.values())[1:]):.3f}  "
          f"AUC {h['two_sample_auc']:.3f} flagged {h['flagged']}  |dqpt|/qpt vs fit: median {np.median(d):.2e} max {d.max():.2e}")
    print("   q/pT ratio per pT bin (mean over |eta| bins): "
          + ", ".join(f"{k[3:]}: {np.mean(v):.2f}" for k, v in per_pt.items()))


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "data/lhc-small-val.h5"
    with h5py.File(path, "r") as fh:
        inputs, targets, truth = fh["inputs"][:], fh["targets"][:], fh["meta/true_params"][:]
    fit = targets[:, :5].astype(np.float64)
    report("linear seed", truth, fit, seed_params(inputs, None))
    for it in (1, 2, 3, 4):
        report(f"refined, {it} GN", truth, fit, seed_params(inputs, it))
