"""The CRF workload: meteorological fields (44 channels) -> RGB cloud reflectance (3 channels).

Model space: inputs as the reader gives them (standardised per channel when
data.normalize is on); targets are reflectances in [0, 1] mapped to [-1, 1]
for a tanh generator or left in [0, 1] for a sigmoid one.

Real data mark the pixels without a satellite view in meta/valid; they count
in no loss (train/losses.py) and no metric here: L1/MSE average over valid
pixels, the spectra taper them to zero (spectrum.py), chroma statistics use
valid pixels only. Synthetic data have no mask: every pixel counts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hpcgan.data.format import VALID_META
from hpcgan.errors import UserError
from hpcgan.workloads.crf import colour, figures, spectrum
from hpcgan.workloads.crf import convert_npz, synth
from hpcgan.workloads.crf.colour_models import ChromaInputDiscriminator, LumaChromaGenerator
from hpcgan.workloads.crf.models import MultiScaleDiscriminator, UNetGenerator
from hpcgan.workloads.precision import Precision
from hpcgan.workloads.evaluation import EvalStats
from hpcgan.workloads.registry import Workload, register

EVAL_JSON = "crf_evaluation.json"
EVAL_GRID = "crf_samples.png"
EVAL_SPECTRA = "crf_spectra.png"
EVAL_COLOUR = "crf_colour.png"


def target_names(n: int) -> list[str]:
    return ["R", "G", "B"] if n == 3 else [f"ch{i}" for i in range(n)]


@register("crf", generator=synth, converters={"crf-npz": convert_npz})
class CRFWorkload(Workload):
    convnet = True
    selection = ("spec_high", "min")  # the validation spectral gap: |log power ratio| in the high band
    # Convolutions in bf16/fp16 (autocast keeps norms in fp32); losses are reduced in fp32 (train/losses.py).
    precision = Precision()

    # Models.
    def build_generator(self) -> nn.Module:
        c = self.cfg.crf
        G = UNetGenerator(c.in_channels, c.out_channels, c.widths, norm=c.norm, dropout=c.dropout,
                          output=c.output, noise_channels=c.noise_channels)
        return LumaChromaGenerator(G, c.output, c.chroma_pool) if c.colour == "luma_chroma" else G

    def build_discriminator(self) -> nn.Module:
        c = self.cfg.crf
        D = MultiScaleDiscriminator(c.in_channels, c.out_channels * (2 if c.d_chroma else 1), c.d_widths,
                                    scales=c.d_scales, conditional=c.d_conditional)
        return ChromaInputDiscriminator(D) if c.d_chroma else D

    # Units.
    def prepare(self, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cond = inputs.to(device, non_blocking=True)
        real = targets.to(device, non_blocking=True)
        if self.cfg.crf.output == "tanh":
            real = real * 2.0 - 1.0
        return cond, real

    def to_data_units(self, fake: torch.Tensor) -> torch.Tensor:
        return (fake + 1.0) * 0.5 if self.cfg.crf.output == "tanh" else fake

    # Metrics during training.
    def validation_sums(self, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                        valid: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """L1/MSE in reflectance units and the grayscale power spectra of real and generated images, summed
        over samples, all over the valid pixels only; validation_finish compares the mean spectra of all
        validation samples."""
        r = self.to_data_units(real.detach().float())
        f = self.to_data_units(fake.detach().float())
        sums = super().validation_sums(cond, r, f, valid)
        v = None if valid is None else valid.cpu().numpy()
        _, p_real = spectrum.radial_power_spectrum(spectrum.grayscale(r.cpu().numpy()), v)
        _, p_fake = spectrum.radial_power_spectrum(spectrum.grayscale(f.cpu().numpy()), v)
        return {**sums, "p_real": p_real.sum(0), "p_fake": p_fake.sum(0)}

    def validation_finish(self, sums: dict[str, np.ndarray], count: int) -> dict[str, float]:
        """L1, MSE, and for the mean grayscale spectra the high-band spectral distance (mean
        |log10 P_fake/P_real|) and power ratio (geometric mean of P_fake/P_real; < 1: too smooth).
        All positive, so they plot on log axes."""
        p_real, p_fake = sums["p_real"] / count, sums["p_fake"] / count
        dist = spectrum.spectral_distance(np.arange(1, len(p_real) + 1, dtype=np.float64), p_fake, p_real)
        return {"l1": float(sums["l1"]) / count, "mse": float(sums["mse"]) / count,
                "spec_high": dist["high"]["abs"], "hf_power_ratio": 10.0 ** dist["high"]["log_ratio"]}

    def write_figures(self, out_dir: Path, tag: str, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                      tb_writer=None, step: int = 0) -> None:
        n = min(4, cond.shape[0])
        r = self.to_data_units(real[:n].detach().float()).cpu().numpy()
        f = self.to_data_units(fake[:n].detach().float()).cpu().numpy()
        figures.sample_grid(cond[:n].detach().float().cpu().numpy(), r, f, Path(out_dir) / f"{tag}.png",
                            title=f"{tag} (inputs as the model sees them)")
        if tb_writer is not None:
            real_rgb, fake_rgb = figures.rgb_for_display(r, f)
            tb_writer.add_images(f"{tag}/real", real_rgb, step, dataformats="NHWC")
            tb_writer.add_images(f"{tag}/generated", fake_rgb, step, dataformats="NHWC")

    # Science evaluation (streamed: every statistic is a sum over samples, so no image leaves its rank
    # except the few the sample figure shows).
    def evaluation_batch(self, inputs: np.ndarray, real: np.ndarray, fake: np.ndarray, meta: dict) -> EvalStats:
        """Sums over this batch, over the pixels meta["valid"] marks (every pixel when the data have no
        such mask): absolute and squared errors per channel, radially averaged power spectra per channel
        and grayscale, and for RGB the co-spectra and chroma histograms (colour.compare_sums)."""
        real = np.asarray(real, np.float64)
        fake = np.asarray(fake, np.float64)
        if real.shape != fake.shape or real.ndim != 4:
            raise UserError(f"crf evaluate: real and generated targets must both be (N, C, H, W), "
                            f"got {real.shape} and {fake.shape}")
        valid = meta.get(VALID_META)
        if valid is not None and np.shape(valid) != (real.shape[0], *real.shape[2:]):
            raise UserError(f"crf evaluate: meta '{VALID_META}' has shape {np.shape(valid)}, expected "
                            f"{(real.shape[0], *real.shape[2:])} (one mask per sample)")
        n, c, h, w = real.shape
        weight = np.ones((n, 1, h, w)) if valid is None else (np.asarray(valid)[:, None] != 0) * 1.0
        sums = {"n": np.float64(n), "n_pixels": np.float64(n * h * w), "n_valid": weight.sum(),
                "abs_err": (np.abs(fake - real) * weight).sum(axis=(0, 2, 3)),
                "sq_err": ((fake - real) ** 2 * weight).sum(axis=(0, 2, 3))}
        for name, (r, f) in self._fields(real, fake).items():
            sums[f"power_real/{name}"] = spectrum.radial_power_spectrum(r, valid)[1].sum(0)
            sums[f"power_fake/{name}"] = spectrum.radial_power_spectrum(f, valid)[1].sum(0)
        if c == 3:  # luminance and chroma are defined for RGB
            sums.update({f"colour/{k}": v for k, v in colour.compare_sums(real, fake, target_names(c), valid).items()})
        return EvalStats(sums=sums)

    @staticmethod
    def _fields(real: np.ndarray, fake: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The fields whose spectra are compared: grayscale (luminance for RGB), then every channel."""
        fields = {"gray": (spectrum.grayscale(real) if real.shape[1] == 3 else real.mean(1),
                           spectrum.grayscale(fake) if fake.shape[1] == 3 else fake.mean(1))}
        fields.update({n: (real[:, i], fake[:, i]) for i, n in enumerate(target_names(real.shape[1]))})
        return fields

    def evaluation_finish(self, stats: EvalStats, examples: dict, out_dir: Path) -> dict:
        """L1, MSE, radially averaged power spectra (per channel and grayscale) and their distance per band;
        for RGB, the bands' coherence per wavenumber band and the chroma distribution (colour.compare_from).
        Writes crf_evaluation.json (with the spectra), crf_samples.png, crf_spectra.png and crf_colour.png
        under out_dir."""
        s = stats.sums
        if not s:
            raise UserError("crf evaluate: no held-out samples to evaluate")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        n, n_valid = float(s["n"]), float(s["n_valid"])
        names = target_names(len(s["abs_err"]))
        channels = len(names)
        field_names = ["gray", *names]
        k = np.arange(1, len(s["power_real/gray"]) + 1, dtype=np.float64)
        spectra: dict[str, dict[str, list]] = {"real": {}, "fake": {}}
        distance, slopes = {}, {}
        for name in field_names:
            p_real, p_fake = s[f"power_real/{name}"] / n, s[f"power_fake/{name}"] / n
            spectra["real"][name], spectra["fake"][name] = p_real.tolist(), p_fake.tolist()
            distance[name] = spectrum.spectral_distance(k, p_fake, p_real)
            slopes[name] = {"real": spectrum.fit_slope(k, p_real), "fake": spectrum.fit_slope(k, p_fake)}
        masks = spectrum.band_masks(k)
        image_size = list(examples["real"].shape[2:]) if examples["real"] is not None else None
        summary = {
            "n_samples": int(n),
            "image_size": image_size,
            "valid_fraction": n_valid / float(s["n_pixels"]),
            "l1": float(s["abs_err"].sum() / max(n_valid * channels, 1)),
            "mse": float(s["sq_err"].sum() / max(n_valid * channels, 1)),
            "l1_per_channel": {nm: float(s["abs_err"][i] / max(n_valid, 1)) for i, nm in enumerate(names)},
            "spectral_distance": distance,
            "spectral_slope": slopes,
            "bands": {b: [int(k[m].min()), int(k[m].max())] for b, m in masks.items()},
            "figures": {"samples": EVAL_GRID, "spectra": EVAL_SPECTRA},
        }
        curves = {name: {"real": np.array(spectra["real"][name]), "generated": np.array(spectra["fake"][name])}
                  for name in field_names}
        edges = [float(k[m].max()) + 0.5 for m in list(masks.values())[:-1]]
        figures.spectra_plot(k, curves, out_dir / EVAL_SPECTRA, band_edges=edges,
                             title=f"CRF spectra, {int(n)} held-out samples")
        if examples["real"] is not None:
            figures.sample_grid(np.asarray(examples["inputs"]), np.asarray(examples["real"], np.float64),
                                np.asarray(examples["fake"], np.float64), out_dir / EVAL_GRID, title="held-out samples")
        extra = {}
        if channels == 3:
            res = colour.compare_from({key[len("colour/"):]: v for key, v in s.items() if key.startswith("colour/")},
                                      names)
            summary["coherence"] = res["coherence_bands"]
            summary["coloured_texture"] = res["coloured_texture"]
            summary["chroma"] = {"rms": {"real": res["chroma"]["real"]["rms"], "fake": res["chroma"]["fake"]["rms"]},
                                 "w1": res["chroma"]["w1"]}
            summary["figures"]["colour"] = EVAL_COLOUR
            extra = {"coherence_curves": res["coherence_curves"], "chroma_distribution": res["chroma"]}
            figures.colour_plot(k, {"real": res["coherence_curves"]["real"], "generated": res["coherence_curves"]["fake"]},
                                colour.CHROMA_BINS, {"real": colour.histograms(res["chroma"]["real"]),
                                                     "generated": colour.histograms(res["chroma"]["fake"])},
                                out_dir / EVAL_COLOUR, band_edges=edges,
                                title=f"CRF inter-band coherence and chroma, {int(n)} held-out samples")
        (out_dir / EVAL_JSON).write_text(json.dumps({**summary, "k": k.tolist(), "spectra": spectra, **extra}, indent=1))
        return summary

    def check_dataset(self, attrs: dict, path: str) -> None:
        super().check_dataset(attrs, path)
        c = self.cfg.crf
        expected = {"input": (c.in_channels, c.size, c.size), "target": (c.out_channels, c.size, c.size)}
        for kind, want in expected.items():
            shape = attrs.get(f"{kind}_shape")
            if shape is not None and tuple(int(s) for s in shape) != want:
                raise UserError(f"{path}: {kind} shape {tuple(int(s) for s in shape)} does not fit the CRF config "
                                f"(crf.{'in' if kind == 'input' else 'out'}_channels, crf.size) = {want}")
            names = attrs.get(f"{kind}_channels")
            if shape is None and names is not None and len(names) != want[0]:
                raise UserError(f"{path}: {len(names)} {kind} channels, the CRF config expects {want[0]} "
                                f"(crf.{'in' if kind == 'input' else 'out'}_channels)")
