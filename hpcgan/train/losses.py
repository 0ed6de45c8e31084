"""GAN losses over multi-scale discriminator outputs, plus the L1 matching term.

One entry point per phase (stylegan2-ada style): `d_loss` for the
discriminator phase, `g_loss` for the generator phase. Each returns the scalar
to back-propagate and a dict of detached statistics for logging.

`valid` (the batch's meta/valid mask, None: all pixels; hpcgan/workloads/masks.py):
the L1 term averages over valid pixels only, and the discriminator sees the
fake with the real values at invalid pixels, so neither phase learns from them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hpcgan.config import LossConfig
from hpcgan.workloads.masks import fill_invalid, valid_mean


def _adv_d(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "lsgan":
        return 0.5 * (((real - 1) ** 2).mean() + (fake ** 2).mean())
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()  # nsgan


def _adv_g(kind: str, fake: torch.Tensor) -> torch.Tensor:
    if kind == "lsgan":
        return 0.5 * ((fake - 1) ** 2).mean()
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()


class GANLoss:
    def __init__(self, cfg: LossConfig):
        self.cfg = cfg

    @property
    def adversarial(self) -> bool:
        return self.cfg.lambda_gan > 0

    def d_loss(self, D, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
               valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        real_logits = D(cond, real)
        fake_logits = D(cond, fill_invalid(fake.detach(), real, valid))
        loss = sum(_adv_d(self.cfg.gan, r.float(), f.float()) for r, f in zip(real_logits, fake_logits))
        stats = {"d_loss": loss.detach(),
                 "d_real": torch.stack([r.detach().float().mean() for r in real_logits]).mean(),
                 "d_fake": torch.stack([f.detach().float().mean() for f in fake_logits]).mean()}
        return loss, stats

    def g_loss(self, D, cond: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
               valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        match = valid_mean((fake.float() - real.float()).abs(), valid)  # F.l1_loss when valid is None
        loss = self.cfg.lambda_match * match
        stats = {"g_l1": match.detach()}
        if self.adversarial:
            adv = sum(_adv_g(self.cfg.gan, f.float()) for f in D(cond, fill_invalid(fake, real, valid)))
            loss = loss + self.cfg.lambda_gan * adv
            stats["g_adv"] = adv.detach()
        stats["g_loss"] = loss.detach()
        return loss, stats

    def r1_penalty(self, D, cond: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """R1 (Mescheder et al. 2018): gamma/2 E_x |grad_x D(x)|^2 over real samples, D's score of a sample
        being the sum over its scales of the mean over patches. Computed in fp32 with autocast off whatever
        the step's precision: a squared input gradient under- and overflows in fp16. Returns (the penalty
        to back-propagate, the mean squared gradient norm, detached)."""
        with torch.autocast(device_type=real.device.type, enabled=False):
            x = real.detach().float().requires_grad_(True)
            score = sum(o.float().flatten(1).mean(1).sum() for o in D(cond.detach().float(), x))
            (grad,) = torch.autograd.grad(score, x, create_graph=True)
            norm2 = grad.pow(2).flatten(1).sum(1).mean()
        return 0.5 * self.cfg.r1_gamma * norm2, norm2.detach()
