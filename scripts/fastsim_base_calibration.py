"""Is the fast simulation's smearing base calibrated? Coverage of its fitted quantiles per |eta| bin.

The smearing base (lhc.smear_base) predicts, for every true particle, the 16 %, 50 % and 84 % quantiles of
each residual (fastsim.FastSimGenerator.smear_quantiles). If they are right, the fraction of the chain's
found tracks whose residual lies below each quantile is 0.16 / 0.50 / 0.84 in every bin of the truth. A
bin more than 3.5 binomial errors off is flagged: a base whose widths are 15 % too narrow in one bin fails
here before it shows as a per-bin width chi2 in `hpcgan evaluate`.

    python scripts/fastsim_base_calibration.py RUN/checkpoints/best.pt --data data/lhc-fastsim-test.h5
    python scripts/fastsim_base_calibration.py RUN/checkpoints/best.pt --data data/lhc-fastsim-test.h5 \\
        --refit data/lhc-fastsim-train.h5 --epochs 15 --lr 2.8e-4 --batch 1024 --beta1 0.5 --schedule constant

--refit fits the base's quantile network alone, from a fresh initialisation of the checkpoint's config, by
the same pinball loss as training (fastsim.FastSimWorkload.likelihood_loss), with the optimiser settings
given, and reports its coverage: whether a miss comes from the model or from how it was trained.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from hpcgan.config import config_from_mapping
from hpcgan.errors import UserError
from hpcgan.train.checkpoint import load_checkpoint
from hpcgan.workloads import get_workload
from hpcgan.workloads.lhc import fastsim

NAMES = ("q/pT", "phi0", "eta", "d0", "z0")
ETA_BINS = ((0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.5))
FLAG_SIGMA = 3.5


def coverage(q: np.ndarray, r: np.ndarray, abs_eta: np.ndarray) -> list[dict]:
    """q (N, 5, 3) predicted quantiles, r (N, 5) residuals, abs_eta (N,): per |eta| bin and parameter the
    fraction of r below each quantile, and whether any is more than FLAG_SIGMA binomial errors off."""
    rows = []
    for lo, hi in ETA_BINS:
        m = (abs_eta >= lo) & (abs_eta < hi)
        n = int(m.sum())
        if n == 0:
            continue
        for k, name in enumerate(NAMES):
            frac = (r[m, k, None] < q[m, k]).mean(0)
            err = np.sqrt(np.array(fastsim.QUANTILES) * (1 - np.array(fastsim.QUANTILES)) / n)
            pulls = (frac - np.array(fastsim.QUANTILES)) / err
            rows.append({"eta": (lo, hi), "param": name, "n": n, "below": frac.tolist(),
                         "pull": pulls.tolist(), "flagged": bool(np.abs(pulls).max() > FLAG_SIGMA)})
    return rows


def load_found(workload, path: str, n: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The first n particles of `path`: (cond, residuals in nominal-resolution units, |eta|) of found tracks."""
    with h5py.File(path, "r") as f:
        x, y = f["inputs"][:n], f["targets"][:n]
    cond, real = workload.prepare(torch.from_numpy(x), torch.from_numpy(y), torch.device("cpu"))
    found = real[:, 6] > 0.5
    return cond[found], fastsim.residual_units(cond[found], real[found]), np.abs(x[found.numpy(), 2])


def refit(G: torch.nn.Module, cond: torch.Tensor, r: torch.Tensor, epochs: int, lr: float, batch: int,
          beta1: float, schedule: str) -> float:
    """Fit G.smear alone by the pinball loss; returns the last batch's loss."""
    opt = torch.optim.Adam(G.smear.parameters(), lr=lr, betas=(beta1, 0.999))
    tau = torch.tensor(fastsim.QUANTILES)
    per_epoch = max(len(cond) // batch, 1)
    total, step, loss = epochs * per_epoch, 0, torch.tensor(float("nan"))
    for _ in range(epochs):
        perm = torch.randperm(len(cond))
        for i in range(per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            factor = 0.5 * (1 + math.cos(math.pi * step / total)) if schedule == "cosine" else 1.0
            for group in opt.param_groups:
                group["lr"] = lr * factor
            err = r[idx].unsqueeze(-1) - G.smear_quantiles(cond[idx])
            loss = torch.maximum(tau * err, (tau - 1) * err).sum((1, 2)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return float(loss.detach())


def print_table(rows: list[dict]) -> None:
    print(f"{'|eta|':>9} {'param':>5} {'n':>6}   below q16 / q50 / q84 (want 0.16 / 0.50 / 0.84)   max |pull|")
    for row in rows:
        b, pull = row["below"], max(abs(p) for p in row["pull"])
        mark = "  FLAGGED" if row["flagged"] else ""
        print(f"{row['eta'][0]:>4.1f}-{row['eta'][1]:<4.1f} {row['param']:>5} {row['n']:>6}   "
              f"{b[0]:.3f} / {b[1]:.3f} / {b[2]:.3f}{'':>26}{pull:5.1f}{mark}")
    n_flag = sum(r["flagged"] for r in rows)
    print(f"flagged: {n_flag} of {len(rows)} (bin, parameter) pairs beyond {FLAG_SIGMA} binomial errors")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="held-out lhc-fastsim HDF5 file")
    p.add_argument("--max-samples", type=int, default=20000)
    p.add_argument("--refit", metavar="TRAIN_H5", help="refit the base alone on this file first")
    p.add_argument("--refit-samples", type=int, default=1 << 20)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=2.8e-4)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    state = load_checkpoint(Path(a.checkpoint))
    workload = get_workload(config_from_mapping(state["config"], []))
    G = workload.build_generator()
    if getattr(G, "smear", None) is None:
        print(f"{a.checkpoint}: not a fast simulation with lhc.smear_base", file=sys.stderr)
        return 2
    torch.manual_seed(a.seed)
    if a.refit:
        cond, r, _ = load_found(workload, a.refit, a.refit_samples)
        t0 = time.time()
        loss = refit(G, cond, r, a.epochs, a.lr, a.batch, a.beta1, a.schedule)
        print(f"refit of the base alone: {a.epochs} epochs over {len(cond)} found tracks, lr {a.lr:g} "
              f"({a.schedule}), batch {a.batch}, beta1 {a.beta1}: last loss {loss:.4f}, {time.time() - t0:.0f} s")
    else:
        G.load_state_dict(state.get("G_ema") or state["G"])  # the weights `hpcgan evaluate` uses by default
    cond, r, abs_eta = load_found(workload, a.data, a.max_samples)
    with torch.no_grad():
        q = G.smear_quantiles(cond).numpy()
    print_table(coverage(q, r.numpy(), abs_eta))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:  # a bad checkpoint: one line, exit 2
        print(f"fastsim_base_calibration: {e}", file=sys.stderr)
        sys.exit(2)
    except (OSError, KeyError) as e:  # a missing or foreign HDF5 file
        print(f"fastsim_base_calibration: cannot read the data: {e} "
              "(expected an lhc-fastsim HDF5 file with 'inputs' and 'targets')", file=sys.stderr)
        sys.exit(2)
