"""The LHC fast simulation: true particle -> what the full chain reconstructs, sampled from noise.

Registered as the workload "lhc-fastsim" (data: `hpcgan data synth lhc-fastsim`, layout in
hpcgan.workloads.lhc.synth_fastsim). Where the `lhc` workload learns a deterministic map (hits -> fit),
this one learns a distribution: p(reconstructed track, found | true particle), the detector's
stochastic response plus the reconstruction, which the full chain computes particle by particle
through propagation, scattering, smearing and a fit (Musella and Pandolfi 2018 use a GAN for this).

Model space (space.py): cond (N, 6) = the true parameters as space.params_to_model; track (N, 7) =
the reconstructed parameters the same way (those of a lost track are zeros in file units), then found.
Generator, two parts with two losses:
- the efficiency: an MLP on the true q/pT, |q/pT|, eta, d0, z0 (no noise) -> the logit of the
  probability to find the track, fitted by maximum likelihood to the full chain's found flags
  (`likelihood_loss`, a binary cross-entropy). `found` is a Bernoulli draw with that probability,
  exactly 0/1 and without gradient: the discriminator sees no soft flag, and the adversarial loss
  cannot move the efficiency. When it could (a straight-through draw, until 2026-11-30), the
  generator learnt to declare tracks lost, whose residuals the discriminator does not see: the
  15-epoch run collapsed to an efficiency of 0.001.
- the resolution: residual blocks on the same features and noise -> five residuals in units of
  the nominal resolution space.resolution_scale; reco = truth + residual x scale, trained by the
  adversarial loss alone. The barrel is symmetric in azimuth, so phi0 enters only through the
  residual.
Discriminator: an MLP on the same truth features, found, found x asinh(residual / scale), and the
spread of the latter over groups of 4 tracks (the resolution, which one track cannot show).
No L1 term (loss.lambda_match: 0): an L1 to one sampled reconstruction would pull every track to
the conditional median and remove the resolution the GAN is for.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hpcgan.errors import UserError
from hpcgan.workloads.lhc import evaluate as ev
from hpcgan.workloads.lhc import metrics, space
from hpcgan.workloads.lhc import synth_fastsim
from hpcgan.workloads.lhc.models import ResBlock
from hpcgan.workloads.evaluation import EvalStats
from hpcgan.workloads.registry import Workload, register
from hpcgan.workloads import noise as sample_noise

EVAL_JSON = "lhc_fastsim_evaluation.json"
FIG_METRICS = "lhc_fastsim_metrics.png"
FIG_RESID = "lhc_fastsim_residuals.png"
N_TRUTH_FEATURES = 5


def truth_features(cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cond (N, 6) -> (truth in file units (N, 5), the azimuth-free features (N, 5))."""
    truth = space.params_to_data(cond.float())
    return truth, torch.stack([cond[:, 0], cond[:, 0].abs(), cond[:, 3], cond[:, 4], cond[:, 5]], dim=1).float()


QUANTILES = (0.16, 0.5, 0.84)  # the smearing base's median and 16-84 % width, as metrics measure them
TRIL = tuple(torch.tril_indices(5, 5, offset=-1).tolist())  # the 10 entries below the diagonal of a 5 x 5
Z_CLIP = 5.0  # the copula's fit sees |z| <= 5: the chain's tails beyond a Gaussian's would pull the correlations


def residual_units(cond: torch.Tensor, track: torch.Tensor) -> torch.Tensor:
    """(N, 6) truth and (N, >=5) track in model space -> (N, 5) reco - truth in units of the nominal
    resolution, phi0 wrapped to (-pi, pi]."""
    truth = space.params_to_data(cond.float())
    res = space.params_to_data(track[:, :6].float()) - truth
    res = torch.cat([res[:, :1], torch.remainder(res[:, 1:2] + torch.pi, 2 * torch.pi) - torch.pi, res[:, 2:]], dim=1)
    return res / space.resolution_scale(truth)


class FastSimGenerator(nn.Module):
    """G(cond) -> (N, 7) reconstructed track and found flag in model space; noise and the draw inside.

    smear_base: the residual starts from a (split) Gaussian smearing whose median and 16 % and 84 %
    quantiles per parameter are functions of the truth, fitted by quantile regression to the chain's found tracks
    (likelihood_loss, like the efficiency, without gradient from D), drawn from the first five noise
    numbers: the parametrised smearing of a conventional fast simulation (Delphes-style). The residual
    blocks, whose output layer then starts at zero (zero_init), add what a Gaussian misses: tails,
    correlations, the shape, trained by the adversarial loss on the same noise.

    smear_corr: the five draws of the smearing base are correlated, z = A(truth) eps with A lower triangular
    and unit rows (so each z stays a standard normal and the quantiles above still hold; the correlation
    is A A^T), fitted by maximum likelihood to the chain's residuals mapped back through the split normal
    (a Gaussian copula). The helix fit's residuals are correlated at about -0.9 (phi0 with d0, eta with
    z0); without it the base smears them independently, which the metrics' correlation test flags."""

    def __init__(self, noise_dim: int = 16, hidden: int = 256, blocks: int = 4, smear_base: bool = False,
                 zero_init: bool = False, corr_scale: float = 1.0, smear_corr: bool = False):
        super().__init__()
        self.corr_scale = float(corr_scale)  # multiplies the residual blocks' output (and so their step size)
        if smear_base and noise_dim < 5:
            raise ValueError(f"smear_base: needs noise_dim >= 5 (one normal draw per parameter), got {noise_dim}")
        self.noise_dim = noise_dim
        self.inp = nn.Linear(N_TRUTH_FEATURES + noise_dim, hidden)
        self.blocks = nn.Sequential(*[ResBlock(hidden) for _ in range(blocks)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 5))
        if zero_init:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        width = max(hidden // 4, 16)  # a smooth function of 5 numbers: a small MLP is plenty
        self.efficiency = nn.Sequential(nn.Linear(N_TRUTH_FEATURES, width), nn.SiLU(), nn.Linear(width, width),
                                        nn.SiLU(), nn.Linear(width, 1))
        self.smear = None
        if smear_base:  # (N, 5 x 3): the QUANTILES of each parameter's residual, nominal-resolution units
            self.smear = nn.Sequential(nn.Linear(N_TRUTH_FEATURES, width), nn.SiLU(), nn.Linear(width, width),
                                       nn.SiLU(), nn.Linear(width, 5 * len(QUANTILES)))
        self.smear_corr = None
        if smear_corr:  # (N, 10): A's entries below the diagonal; zero at the start (independent draws)
            if self.smear is None:
                raise ValueError("smear_corr: needs smear_base")
            self.smear_corr = nn.Sequential(nn.Linear(N_TRUTH_FEATURES, width), nn.SiLU(), nn.Linear(width, width),
                                            nn.SiLU(), nn.Linear(width, len(TRIL[0])))
            nn.init.zeros_(self.smear_corr[-1].weight)
            nn.init.zeros_(self.smear_corr[-1].bias)

    def found_logit(self, cond: torch.Tensor) -> torch.Tensor:
        """(N, 1) logit of the probability that the full chain finds this particle's track."""
        return self.efficiency(truth_features(cond)[1]).float()

    def smear_quantiles(self, cond: torch.Tensor) -> torch.Tensor:
        """(N, 5, 3) the smearing base's QUANTILES of each residual (smear_base only): the median and the
        widths below and above it, in log, so that the widths are positive and the ordering holds, and a
        resolution that is a product of a pT and an eta term (multiple scattering, lever arm) is a sum."""
        raw = self.smear(truth_features(cond)[1]).float().reshape(len(cond), 5, len(QUANTILES))
        median, below, above = raw.unbind(-1)
        return torch.stack([median - below.exp(), median, median + above.exp()], dim=-1)

    def smear_mixing(self, cond: torch.Tensor) -> torch.Tensor:
        """(N, 5, 5) A: lower triangular, rows of unit length, so z = A eps has unit variances and correlation
        A A^T (smear_corr; the identity without it)."""
        a = torch.eye(5, device=cond.device).expand(len(cond), 5, 5).clone()
        if self.smear_corr is not None:
            a[:, TRIL[0], TRIL[1]] = self.smear_corr(truth_features(cond)[1]).float()
        return a / a.norm(dim=2, keepdim=True)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        truth, feats = truth_features(cond)
        noise = sample_noise.randn(len(cond), (self.noise_dim,), like=feats)
        out = self.corr_scale * self.head(self.blocks(self.inp(torch.cat([feats, noise], dim=1)))).float()
        if self.smear is not None:  # fitted by likelihood_loss, not by D
            q = self.smear_quantiles(cond).detach()
            z = noise[:, :5].float()
            if self.smear_corr is not None:
                z = (self.smear_mixing(cond).detach() @ z.unsqueeze(-1)).squeeze(-1)
            # a split normal: the width below the median for z < 0, above for z > 0
            out = out + q[..., 1] + torch.where(z < 0, q[..., 1] - q[..., 0], q[..., 2] - q[..., 1]) * z
        reco = truth + out * space.resolution_scale(truth)
        prob = torch.sigmoid(self.found_logit(cond)).detach()  # fitted by likelihood_loss, not by D
        found = (sample_noise.rand(len(prob), tuple(prob.shape[1:]), like=prob) < prob).float()
        lost = space.params_to_model(torch.zeros_like(reco))
        return torch.cat([found * space.params_to_model(reco) + (1 - found) * lost, found], dim=1)


def minibatch_std(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """(N, F) -> (N, F): each feature's standard deviation over the sample's group of `group` consecutive
    samples (Karras et al. 2018, "minibatch standard deviation"; a short last group uses its own)."""
    n = len(x)
    g = max(min(group, n), 1)
    full = n - n % g
    parts = [x[:full].reshape(-1, g, x.shape[1]).std(dim=1, unbiased=False).repeat_interleave(g, dim=0)]
    if n % g:
        rest = x[full:]
        parts.append(rest.std(dim=0, unbiased=False, keepdim=True).expand(len(rest), -1))
    return torch.cat(parts, dim=0)


class FastSimDiscriminator(nn.Module):
    """D(cond, track) -> [logits (N, 1)]: is this what the full chain reconstructs for this particle?

    Beside each track it sees the spread of the residuals over a group of 4 tracks (minibatch_std). The
    residuals are in units of each particle's nominal resolution, so that spread is the resolution itself,
    which one track at a time cannot show: a generator that puts every track at the most likely
    reconstruction looks typical track by track, and without it the 15-epoch run's resolution kept
    collapsing to 0.1-0.5 of the chain's."""

    MBSTD_GROUP = 4

    def __init__(self, hidden: int = 256, blocks: int = 3, pairs: bool = False):
        super().__init__()
        self.pairs = pairs  # the products of each pair of residuals as inputs, as the evaluation's classifier has
        self.inp = nn.Linear(N_TRUTH_FEATURES + 1 + 5 + 5 + (len(TRIL[0]) if pairs else 0), hidden)
        self.blocks = nn.Sequential(*[ResBlock(hidden, act=lambda: nn.LeakyReLU(0.2)) for _ in range(blocks)])
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 1))

    def forward(self, cond: torch.Tensor, track: torch.Tensor) -> list[torch.Tensor]:
        feats = truth_features(cond)[1]
        t = track.float()
        found = t[:, 6:7]
        r = found * torch.asinh(residual_units(cond, t))
        parts = [feats, found, r, minibatch_std(r, self.MBSTD_GROUP)]
        if self.pairs:
            parts.append(r[:, TRIL[0]] * r[:, TRIL[1]])
        x = torch.cat(parts, dim=1)
        return [self.head(self.blocks(self.inp(x)))]


@register("lhc-fastsim", generator=synth_fastsim)
class LHCFastSimWorkload(Workload):
    convnet = False
    # mean |log spread ratio| + mean |shift of the mean| / spread over the five parameters: the widths and the
    # bias, two of the targets. The widths alone (until 2026-12-04) picked, in a 15-epoch run, the epoch whose
    # correction had shifted every parameter by up to 0.35 width (AUC 0.83 against the last epoch's 0.51).
    selection = ("residual_distance", "min")

    def build_generator(self) -> nn.Module:
        c = self.cfg.lhc
        return FastSimGenerator(c.noise_dim, c.hidden, c.blocks, smear_base=c.smear_base, zero_init=c.zero_init,
                                corr_scale=c.corr_scale, smear_corr=c.smear_corr)

    def build_discriminator(self) -> nn.Module:
        c = self.cfg.lhc
        return FastSimDiscriminator(c.d_hidden, c.d_blocks, pairs=c.d_pairs)

    def likelihood_loss(self, G: nn.Module, cond: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The efficiency's negative log-likelihood: binary cross-entropy of G's found probability against
        the full chain's found flags (real[:, 6]); with lhc.smear_base, plus the smearing quantiles' pinball
        loss over the chain's found tracks (quantile regression, the asymmetric-Laplace likelihood); with
        lhc.smear_corr, plus the Gaussian copula's negative log-likelihood of the draws z that would give the
        chain's residuals (through the fitted quantiles, held fixed there): 0.5 |A^-1 z|^2 + log det A."""
        loss = F.binary_cross_entropy_with_logits(G.found_logit(cond), real[:, 6:7].float())
        if G.smear is None:
            return loss
        found = real[:, 6].float()
        r = residual_units(cond, real).unsqueeze(-1)  # (N, 5, 1)
        q = G.smear_quantiles(cond)
        err = r - q
        tau = torch.tensor(QUANTILES, dtype=err.dtype, device=err.device)
        per_track = torch.maximum(tau * err, (tau - 1) * err).sum(dim=(1, 2))
        if G.smear_corr is not None:
            q = q.detach()
            width = torch.where(r[..., 0] < q[..., 1], q[..., 1] - q[..., 0], q[..., 2] - q[..., 1])
            z = ((r[..., 0] - q[..., 1]) / width).clamp(-Z_CLIP, Z_CLIP)
            a = G.smear_mixing(cond)
            u = torch.linalg.solve_triangular(a, z.unsqueeze(-1), upper=False).squeeze(-1)
            per_track = per_track + 0.5 * u.pow(2).sum(1) + torch.diagonal(a, dim1=1, dim2=2).log().sum(1)
        # a mean over the batch (lost tracks add 0), not over its found tracks: then any split of a global
        # batch over ranks gives the same gradient, as for the efficiency's term
        return loss + (found * per_track).mean()

    def likelihood_parameters(self, G: nn.Module) -> list[nn.Parameter]:
        """The efficiency, the smearing quantiles and the copula: forward() detaches them, so only
        likelihood_loss moves them."""
        parts = (G.efficiency, G.smear, G.smear_corr)
        return [p for part in parts if part is not None for p in part.parameters()]

    def prepare(self, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """True (N, 5) and reconstructed (N, 6) tracks in file units -> model space on `device`."""
        inputs = inputs.to(device, non_blocking=True).float()
        targets = targets.to(device, non_blocking=True).float()
        return space.params_to_model(inputs), torch.cat([space.params_to_model(targets[:, :5]), targets[:, 5:6]], dim=1)

    def to_data_units(self, fake: torch.Tensor) -> torch.Tensor:
        found = (fake[:, 6:7].float() > 0.5).float()
        return torch.cat([space.params_to_data(fake[:, :6].float()) * found, found], dim=1)

    SPREAD_NAMES = ("qpt", "phi0", "eta", "d0", "z0")

    def validation_sums(self, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> dict[str, np.ndarray]:
        """Found counts of both (the efficiency) and, over found tracks, the moments of asinh(residual /
        nominal resolution): sums, so that any split over ranks gives the metrics of one pass."""
        truth = space.params_to_data(cond.detach().float())
        sums = dict(super().validation_sums(cond, real, fake))
        for tag, t in (("real", real), ("gan", fake)):
            d = self.to_data_units(t.detach())
            ok = d[:, 5] > 0.5
            r = torch.from_numpy(metrics.residuals(truth[ok].cpu().numpy(), d[ok].cpu().numpy()))
            z = torch.asinh(r / space.resolution_scale(truth[ok].cpu().double()))
            sums[f"found_{tag}"] = np.float64(ok.sum().item())
            sums[f"z1_{tag}"], sums[f"z2_{tag}"] = z.sum(0).numpy(), z.pow(2).sum(0).numpy()
        return sums

    def validation_finish(self, sums: dict[str, np.ndarray], count: int) -> dict[str, float]:
        """Efficiency of both, and the spread of asinh(residual / nominal resolution), GAN / full chain, and the
        shift of its mean in units of the chain's spread: a collapse of the efficiency or of the resolution,
        or a bias, shows in the validation log."""
        out = {k: float(sums[k]) / count for k in ("l1", "mse")}
        out["eff_real"], out["eff_gan"] = float(sums["found_real"]) / count, float(sums["found_gan"]) / count
        spread, mean = {}, {}
        for tag in ("real", "gan"):
            n = max(float(sums[f"found_{tag}"]), 1.0)
            mean[tag] = np.asarray(sums[f"z1_{tag}"]) / n
            spread[tag] = np.sqrt(np.maximum(np.asarray(sums[f"z2_{tag}"]) / n - mean[tag] ** 2, 0.0))
        for k, name in enumerate(self.SPREAD_NAMES):  # 0 when the GAN finds no track
            out[f"spread_ratio_{name}"] = float(spread["gan"][k] / max(spread["real"][k], 1e-12))
            out[f"shift_{name}"] = float((mean["gan"][k] - mean["real"][k]) / max(spread["real"][k], 1e-12))
        ratios = [max(out[f"spread_ratio_{name}"], 1e-12) for name in self.SPREAD_NAMES]
        out["width_distance"] = float(np.mean(np.abs(np.log(ratios))))  # 0 when every width matches
        out["residual_distance"] = out["width_distance"] + float(np.mean([abs(out[f"shift_{name}"])
                                                                           for name in self.SPREAD_NAMES]))
        return out

    def evaluation_finish(self, stats: EvalStats, examples: dict, out_dir: Path) -> dict:
        """Rows are the particles and tracks themselves (68 bytes each): the metrics need every one."""
        r = stats.rows
        if not r:
            raise UserError("lhc-fastsim evaluate: no held-out particles to evaluate")
        return evaluate(r["inputs"], r["real"], r["fake"], out_dir, verbose=False)

    def summary_table(self, summary: dict) -> str:
        return f"LHC fast simulation: {summary['n_particles']} particles\n{metrics.format_table(summary['metrics'])}"

    def check_dataset(self, attrs: dict, path: str) -> None:
        super().check_dataset(attrs, path)
        if self.cfg.data.normalize:
            raise UserError(f"config key data.normalize: must be false for workload lhc-fastsim (tracks are used in "
                            f"mm/GeV; the model's fixed physical scales normalise them), got true for {path}")
        for key, want in (("input_shape", (5,)), ("target_shape", (6,))):
            shape = attrs.get(key)
            if shape is not None and tuple(int(s) for s in shape) != want:
                raise UserError(f"{path}: {key} {tuple(int(s) for s in shape)}, workload lhc-fastsim expects {want} "
                                f"(write the data with `hpcgan data synth lhc-fastsim`)")


def evaluate(truth: np.ndarray, real: np.ndarray, fake: np.ndarray, out_dir: Path, verbose: bool = True) -> dict:
    """Headline metrics (metrics.compare, independent samples) + residual overlays and marginal W1 (secondary)."""
    truth, real, fake = (np.asarray(a, np.float64) for a in (truth, real, fake))
    for name, a, width in (("true particles", truth, 5), ("full-chain tracks", real, 6), ("generated tracks", fake, 6)):
        if a.ndim != 2 or a.shape != (len(truth), width):
            raise UserError(f"lhc-fastsim evaluate: {name} have shape {a.shape}, expected ({len(truth)}, {width})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = metrics.compare(truth, real, fake, real[:, 5], fake[:, 5])
    metrics.plot(m, out_dir / FIG_METRICS)
    scale = space.resolution_scale(truth)
    names = [f"(reco - true) / nominal, {p}" for p in metrics.PARAMS]
    conv, gan = {}, {}
    for store, tracks in ((conv, real), (gan, fake)):
        ok = tracks[:, 5] > 0.5
        r = metrics.residuals(truth, tracks) / scale
        for k, name in enumerate(names):
            store[name] = r[ok, k]
    w1 = {}
    for name in names:
        spread = float(np.std(conv[name]))
        w1[name] = {"w1": ev.wasserstein1(gan[name], conv[name]), "spread": spread}
        w1[name]["w1_norm"] = w1[name]["w1"] / spread if spread > 0 else float("nan")
    ev._overlay(names, conv, gan, out_dir / FIG_RESID, "fast simulation: residuals of found tracks", ref_label="full chain")
    summary = {"headline": metrics.headline(m), "n_particles": int(len(truth)), "wasserstein1": w1,
               "metrics": m, "figures": {"metrics": FIG_METRICS, "residuals": FIG_RESID}}
    (out_dir / EVAL_JSON).write_text(json.dumps(summary, indent=1))
    if verbose:
        print(f"LHC fast simulation: {len(truth)} particles\n{metrics.format_table(m)}")
    return summary
