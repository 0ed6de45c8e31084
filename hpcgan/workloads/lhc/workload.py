"""The LHC workload: measured hits (N, 4, L) -> conventionally fitted track (N, 5 + 3L).

The conditional GAN learns the map that the least-squares helix fit computes (hpcgan.workloads.lhc.helix);
its value is speed (one batched network pass instead of an iterative fit per track). Model space and
units: hpcgan.workloads.lhc.space. Models: hpcgan.workloads.lhc.models. Evaluation: .evaluate.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpcgan.workloads.lhc.helix import detector
from hpcgan.errors import UserError
from hpcgan.workloads.lhc import evaluate as ev
from hpcgan.workloads.lhc import space
from hpcgan.workloads.lhc import convert_trackml, synth
from hpcgan.workloads.lhc.models import LHCDiscriminator, LHCGenerator
from hpcgan.workloads.precision import Precision
from hpcgan.workloads.evaluation import EvalStats
from hpcgan.workloads.registry import Workload, batch_sum, register


@register("lhc", generator=synth, converters={"trackml": convert_trackml})
class LHCWorkload(Workload):
    convnet = False
    # Validation has the fit (the target), not the truth, so no width ratio: the model-space mean |GAN - fit|.
    selection = ("l1", "min")
    # The MLPs train in bf16 or fp16; the geometry around them does not (see precision.py).
    precision = Precision(fp32=("lhc.frame", "lhc.linear_seed", "lhc.helix_refine", "lhc.helix_points"),
                          why="(r/sigma)^2 weights overflow fp16; 1e-4 relative hit precision is below bf16's")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.radii = torch.tensor(detector(cfg.lhc.n_layers).radius, dtype=torch.float32)

    # Models.
    def build_generator(self) -> nn.Module:
        c = self.cfg.lhc
        return LHCGenerator(c.n_layers, c.noise_dim, c.hidden, c.blocks, refine_iters=c.refine_iters,
                            corr_scale=c.corr_scale, zero_init=c.zero_init)

    def build_discriminator(self) -> nn.Module:
        c = self.cfg.lhc
        return LHCDiscriminator(c.n_layers, c.d_hidden, c.d_blocks)

    # Units.
    def prepare(self, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Hits and fitted tracks in mm/GeV/rad -> model space on `device` (see space.py)."""
        inputs = inputs.to(device, non_blocking=True).float()
        targets = targets.to(device, non_blocking=True).float()
        radii = self.radii.to(device)
        return space.inputs_to_model(inputs, radii), space.targets_to_model(targets, radii)

    def to_data_units(self, fake: torch.Tensor) -> torch.Tensor:
        return space.targets_to_data(fake.float(), self.radii.to(fake.device))

    # Metrics during training.
    def validation_sums(self, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> dict[str, np.ndarray]:
        """Model-space L1/MSE and the absolute difference GAN - fit of each parameter in physical units,
        summed over samples (validation_finish gives the means)."""
        sums = super().validation_sums(cond, real, fake)
        r, f = self.to_data_units(real.detach()).double(), self.to_data_units(fake.detach()).double()
        d = (f[:, :5] - r[:, :5]).abs()
        d[:, 1] = torch.remainder(f[:, 1] - r[:, 1] + torch.pi, 2 * torch.pi).sub(torch.pi).abs()
        for i, (name, unit) in enumerate((("qpt_mae", 1.0), ("phi0_mae_mrad", 1e3), ("eta_mae", 1.0),
                                          ("d0_mae_um", 1e3), ("z0_mae_mm", 1.0))):
            sums[name] = unit * batch_sum(d[:, i])
        return sums

    def write_figures(self, out_dir: Path, tag: str, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                      tb_writer=None, step: int = 0) -> None:
        """GAN versus fit, parameter by parameter, for one validation batch."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        r = self.to_data_units(real.detach().float()).cpu().numpy()
        f = self.to_data_units(fake.detach().float()).cpu().numpy()
        fig, axes = plt.subplots(1, 5, figsize=(18, 3.6))
        for i, (ax, name) in enumerate(zip(axes, ("q/pT [1/GeV]", "phi0", "eta", "d0 [mm]", "z0 [mm]"))):
            ax.plot(r[:, i], f[:, i], ".", ms=2, color="tab:red")
            lo, hi = np.percentile(r[:, i], [1, 99])
            ax.plot([lo, hi], [lo, hi], color="tab:blue", lw=0.8)
            ax.set_xlabel(f"fit {name}")
            ax.set_ylabel(f"GAN {name}")
        fig.suptitle(f"{tag}: GAN versus conventional fit")
        fig.tight_layout()
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(out_dir) / f"{tag}.png", dpi=80)
        if tb_writer is not None:
            tb_writer.add_figure(f"{tag}/gan_vs_fit", fig, step)
        plt.close(fig)

    # Science evaluation.
    def evaluation_finish(self, stats: EvalStats, examples: dict, out_dir: Path) -> dict:
        """Rows are the tracks themselves (about 0.5 KB each at 10 layers): the metrics need every track."""
        r = stats.rows
        if not r:
            raise UserError("lhc evaluate: no held-out tracks to evaluate")
        meta = {k[len("meta/"):]: v for k, v in r.items() if k.startswith("meta/")}
        return ev.evaluate(r["inputs"], r["real"], r["fake"], meta, out_dir, self.cfg.lhc.n_layers, verbose=False)

    def summary_table(self, summary: dict) -> str:
        return ev.format_table(summary)

    def check_dataset(self, attrs: dict, path: str) -> None:
        super().check_dataset(attrs, path)
        if self.cfg.data.normalize:
            raise UserError(f"config key data.normalize: must be false for workload lhc (hits are used in mm; "
                            f"the model's own fixed physical scales normalise them), got true for {path}")
        L = self.cfg.lhc.n_layers
        shape = attrs.get("input_shape")
        if shape is not None and tuple(int(s) for s in shape) != (4, L):
            raise UserError(f"{path}: inputs have shape {tuple(int(s) for s in shape)} per track, lhc.n_layers={L} "
                            f"expects (4, {L}) (x, y, z, mask per layer)")
        tshape = attrs.get("target_shape")
        if tshape is not None and tuple(int(s) for s in tshape) != (5 + 3 * L,):
            raise UserError(f"{path}: targets have shape {tuple(int(s) for s in tshape)} per track, lhc.n_layers={L} "
                            f"expects ({5 + 3 * L},) (5 parameters + x, y, z per layer)")
