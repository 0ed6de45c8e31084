"""The galaxy workload (Schawinski et al. 2017): degraded g, r, i stamp -> restored stamp, pix2pix style.

Models are the CRF workload's U-Net generator and PatchGAN discriminator (3 channels in, 3 out; one
conditional PatchGAN by default, as pix2pix). Model space: restore.stretch of nanomaggies for inputs and
targets alike (data.normalize must be off). Evaluation: PSNR/SSIM of the GAN, Richardson-Lucy, Wiener
and the degraded input against the truth, per band, and the three known failures (failures.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpcgan.workloads.galaxy.degrade import BANDS, KINDS, meta_spec
from hpcgan.errors import UserError
from hpcgan.workloads.crf.models import MultiScaleDiscriminator, UNetGenerator
from hpcgan.workloads.galaxy import failures, figures, restore
from hpcgan.workloads.galaxy import convert_fits, synth
from hpcgan.workloads.evaluation import EvalStats
from hpcgan.workloads.registry import Workload, batch_sum, register

EVAL_JSON = "galaxy_evaluation.json"
EVAL_TABLE = "galaxy_evaluation.md"
EVAL_FIGURE = "galaxy_restoration.png"
METHODS = ("gan", "richardson_lucy", "wiener", "input")


@register("galaxy", generator=synth, converters={"galaxy-fits": convert_fits})
class GalaxyWorkload(Workload):
    convnet = True
    selection = ("psnr", "max")  # validation PSNR

    # Models.
    def build_generator(self) -> nn.Module:
        c = self.cfg.galaxy
        return UNetGenerator(len(BANDS), len(BANDS), c.widths, norm=c.norm, dropout=c.dropout, output="tanh",
                             noise_channels=c.noise_channels, residual=c.residual)

    def build_discriminator(self) -> nn.Module:
        c = self.cfg.galaxy
        return MultiScaleDiscriminator(len(BANDS), len(BANDS), c.d_widths, scales=c.d_scales, conditional=True)

    # Units.
    def _scale(self) -> tuple[float, float]:
        c = self.cfg.galaxy
        return c.stretch_soft, float(np.arcsinh(c.stretch_max / c.stretch_soft))

    def prepare(self, inputs: torch.Tensor, targets: torch.Tensor,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        soft, norm = self._scale()

        def stretch(x: torch.Tensor) -> torch.Tensor:
            return torch.clamp(torch.asinh(x.to(device, non_blocking=True).float() / soft) / norm, -1.0, 1.0)

        return stretch(inputs), stretch(targets)

    def to_data_units(self, fake: torch.Tensor) -> torch.Tensor:
        soft, norm = self._scale()
        return soft * torch.sinh(fake.float() * norm)

    # Metrics during training.
    def validation_sums(self, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> dict[str, np.ndarray]:
        """Model-space L1/MSE and PSNR (data range 1, per stamp; the evaluation's definition), summed over
        stamps so that any split over ranks gives the metrics of one pass."""
        mse = ((fake.detach().double() - real.detach().double()) ** 2).flatten(1).mean(1).clamp_min(1e-12)
        return {**super().validation_sums(cond, real, fake), "psnr": batch_sum(-10.0 * torch.log10(mse))}

    def write_figures(self, out_dir: Path, tag: str, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                      tb_writer=None, step: int = 0) -> None:
        n = min(4, cond.shape[0])
        panels = {name: t[:n].detach().float().cpu().numpy()
                  for name, t in (("input", cond), ("generated", fake), ("truth", real))}
        figures.restoration_grid(panels, "truth", ("generated",), Path(out_dir) / f"{tag}.png", title=tag)

    # Science evaluation (streamed: per-stamp scores per batch, the images stay where they were generated).
    eval_examples = 16  # the figure shows the first four galaxies among these

    def evaluation_batch(self, inputs: np.ndarray, real: np.ndarray, fake: np.ndarray, meta: dict) -> EvalStats:
        """Per stamp: PSNR and SSIM per band of the GAN, Richardson-Lucy, Wiener and the input (NaN on stamps
        with no galaxy, where PSNR is undefined), the failure measurements' numbers and the meta they use.
        The baselines are restored here, so their cost is spread over the ranks too."""
        c = self.cfg.galaxy
        real, fake, inputs = (np.asarray(a, np.float32) for a in (real, fake, inputs))
        if real.shape != fake.shape or real.ndim != 4 or real.shape[1] != len(BANDS):
            raise UserError(f"galaxy evaluate: truth and generated stamps must both be (N, 3, H, W), "
                            f"got {real.shape} and {fake.shape}")
        missing = sorted(set(meta_spec(1, 1)) - set(meta))
        if missing:
            raise UserError(f"galaxy evaluate: the data lacks meta/{', meta/'.join(missing)} "
                            "(write it with 'hpcgan data synth galaxy' or 'hpcgan data convert galaxy-fits')")
        methods = {"gan": fake, **restore.baselines(inputs, meta, c.rl_iterations, c.wiener_balance),
                   "input": inputs}
        galaxy = np.asarray(meta["kind"]) == KINDS.index("galaxy")
        rows = {"redshift": np.asarray(meta["redshift"], np.float64), "psf_fwhm": np.asarray(meta["psf_fwhm"]),
                "noise_sigma_r": np.asarray(meta["noise_sigma"])[:, 1]}
        for m, img in methods.items():
            for metric in ("psnr", "ssim"):
                rows[f"{metric}/{m}"] = np.full((len(real), len(BANDS)), np.nan)
            if galaxy.any():
                for metric, v in restore.quality(real[galaxy], img[galaxy], c.stretch_soft, c.stretch_max).items():
                    rows[f"{metric}/{m}"][galaxy] = v
        rows.update(failures.hallucination_rows(real, methods, meta))
        rows.update(failures.recovery_rows(real, methods, meta))
        return EvalStats(rows=rows)

    def evaluation_finish(self, stats: EvalStats, examples: dict, out_dir: Path) -> dict:
        """Writes galaxy_evaluation.{md,json} and galaxy_restoration.png under out_dir; returns the summary."""
        c = self.cfg.galaxy
        rows = stats.rows
        if not rows:
            raise UserError("galaxy evaluate: no held-out stamps to evaluate")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = [k.split("/", 1)[1] for k in rows if k.startswith("psnr/")]
        galaxy = np.asarray(rows["kind"]) == KINDS.index("galaxy")
        table = ({m: {metric: {**{b: float(v[:, i].mean()) for i, b in enumerate(BANDS)}, "mean": float(v.mean())}
                      for metric in ("psnr", "ssim") for v in [rows[f"{metric}/{m}"][galaxy]]} for m in names}
                 if galaxy.any() else {})
        train = training_options(self.cfg.data.path)
        per_sample_psnr = {m: rows[f"psnr/{m}"].mean(axis=1) for m in names}  # NaN where no galaxy
        n = len(galaxy)
        summary = {
            "n_samples": int(n), "n_galaxies": int(galaxy.sum()),
            "image_size": list(examples["real"].shape[2:]) if examples["real"] is not None else None,
            "bands": list(BANDS), "space": f"asinh(x / {c.stretch_soft}) / asinh({c.stretch_max} / {c.stretch_soft}), "
                                           "data range 1",
            "degradation": {"psf_fwhm_arcsec": _range(rows["psf_fwhm"]), "noise_factor_sigma_r": _range(
                rows["noise_sigma_r"])},
            "baselines": {"richardson_lucy_iterations": c.rl_iterations, "wiener_balance": c.wiener_balance},
            "quality": table,
            "gan_beats_richardson_lucy_psnr": (bool(table["gan"]["psnr"]["mean"] > table["richardson_lucy"]["psnr"]["mean"])
                                               if galaxy.any() else None),
            "hallucination": failures.hallucination_summary(rows, names),
            "rare_features": failures.recovery_summary(rows, names, train["features"]),
            "redshift_shift": failures.redshift_shift(per_sample_psnr, {"redshift": rows["redshift"]}, train["z_range"]),
            "training_data": train["source"],
            "figures": {"restoration": EVAL_FIGURE},
        }
        self._restoration_figure(examples, out_dir / EVAL_FIGURE, int(galaxy.sum()))
        (out_dir / EVAL_TABLE).write_text(markdown(summary))
        (out_dir / EVAL_JSON).write_text(json.dumps(summary, indent=1))
        return summary

    def _restoration_figure(self, examples: dict, path: Path, n_galaxies: int) -> None:
        """Input, GAN, Richardson-Lucy (restored again for these few) and truth of the first four galaxies."""
        c = self.cfg.galaxy
        real, meta = examples["real"], examples["meta"]
        if real is None:
            return
        galaxy = np.asarray(meta["kind"]) == KINDS.index("galaxy")
        shown = np.flatnonzero(galaxy)[:4] if galaxy.any() else np.arange(min(4, len(real)))
        sub = {k: np.asarray(v)[shown] for k, v in meta.items()}
        inputs = np.asarray(examples["inputs"], np.float32)[shown]
        rl = restore.baselines(inputs, sub, c.rl_iterations, c.wiener_balance)["richardson_lucy"]
        panels = {"input": inputs, "GAN": np.asarray(examples["fake"], np.float32)[shown], "Richardson-Lucy": rl,
                  "truth": np.asarray(real, np.float32)[shown]}
        panels = {k: restore.stretch(v, c.stretch_soft, c.stretch_max) for k, v in panels.items()}
        figures.restoration_grid(panels, "truth", ("GAN", "Richardson-Lucy"), path,
                                 title=f"galaxy restoration, {n_galaxies} held-out galaxies")

    def summary_table(self, summary: dict) -> str:
        return markdown(summary)

    def check_dataset(self, attrs: dict, path: str) -> None:
        super().check_dataset(attrs, path)
        size = self.cfg.galaxy.size
        for kind in ("input", "target"):
            shape = attrs.get(f"{kind}_shape")
            if shape is not None and tuple(int(s) for s in shape) != (len(BANDS), size, size):
                raise UserError(f"{path}: {kind} shape {tuple(int(s) for s in shape)} does not fit the galaxy config "
                                f"(3 bands, galaxy.size {size}) = {(len(BANDS), size, size)}")
        if self.cfg.data.normalize:
            raise UserError(f"{path}: the galaxy workload stretches fluxes itself; set data.normalize=false")


def _range(values) -> list[float]:
    v = np.asarray(values, np.float64)
    return [float(v.min()), float(v.max())] if v.size else []


def training_options(path: str) -> dict:
    """What the training set held: feature classes seen (True/False) and its redshift range, from a
    synthetic file's provenance; None where unknown (converted data, file not found)."""
    from hpcgan.data.format import read_attrs
    from hpcgan.data.reader import resolve_paths

    unknown = {"features": {"companion": None, "tidal": None}, "z_range": None, "source": path}
    try:
        prov = read_attrs(resolve_paths(path)[0])["provenance"]
        if prov.get("generator") not in (synth.__name__, "hpcgan.data.synth_galaxy"):  # the latter: before the move
            return unknown
        o = synth.options(**prov.get("options", {}))
    except UserError:
        return unknown
    return {"features": {"companion": o["p_companion"] > 0, "tidal": o["p_tidal"] > 0},
            "z_range": tuple(o["z_range"]), "source": path}


def markdown(s: dict) -> str:
    """The evaluation as Markdown tables (quality per band, then the three failures)."""
    lines = [f"Held-out galaxies: {s['n_galaxies']} of {s['n_samples']} stamps, {s['image_size'][0]}x"
             f"{s['image_size'][1]} px; PSNR (dB) and SSIM in the model's asinh space, data range 1.", "",
             "| method | " + " | ".join(f"PSNR {b}" for b in s["bands"]) + " | PSNR mean | "
             + " | ".join(f"SSIM {b}" for b in s["bands"]) + " | SSIM mean |",
             "|---" * (2 * len(s["bands"]) + 3) + "|"]
    for m, q in s["quality"].items():
        lines.append(f"| {m} | " + " | ".join(f"{q['psnr'][b]:.2f}" for b in (*s["bands"], "mean")) + " | "
                     + " | ".join(f"{q['ssim'][b]:.3f}" for b in (*s["bands"], "mean")) + " |")
    h = s["hallucination"]
    if h:
        lines += ["", "Hallucination (r band): flux restored where the truth has none.", "",
                  "| stamps | n | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 2) + "|"]
        if "empty" in h:
            lines.append(f"| empty sky: invented flux, nmgy (sky-noise units) | {h['empty']['n']} | " + " | ".join(
                f"{h['empty'][m]['invented_flux_nmgy']:.2f} ({h['empty'][m]['invented_flux_sigma']:.1f})"
                for m in METHODS) + " |")
        if "star" in h:
            lines.append(f"| lone star: flux beyond 3 FWHM minus truth's, nmgy | {h['star']['n']} | " + " | ".join(
                f"{h['star'][m]['invented_flux_nmgy']:.2f}" for m in METHODS) + " |")
    if s["rare_features"]:
        lines += ["", "Rare features (r band): recovery R (1: as in the truth, 0: absent).", "",
                  "| feature | seen in training | n | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 3) + "|"]
        for name, r in s["rare_features"].items():
            seen = {True: "yes", False: "no", None: "unknown"}[r["in_training"]]
            lines.append(f"| {name} | {seen} | {r['n']} | "
                         + " | ".join(f"{r[m]['recovery']:.2f}" for m in METHODS) + " |")
    z = s["redshift_shift"]
    if z:
        lines += ["", f"PSNR (dB, mean over bands) against redshift; training z range {z['training_z_range']}.", "",
                  "| z | n | in training range | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 3) + "|"]
        for b in z["bins"]:
            inside = {True: "yes", False: "no", None: "unknown"}[b["in_training_range"]]
            lines.append(f"| {b['z_lo']:.3f}-{b['z_hi']:.3f} | {b['n']} | {inside} | "
                         + " | ".join(f"{b[m]:.2f}" for m in METHODS) + " |")
    return "\n".join(lines) + "\n"
