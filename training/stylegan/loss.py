"""StyleGAN2 losses: non-saturating logistic G/D loss, lazy R1 on reals, path-length regularisation.

Each phase function returns the scalar to back-propagate (already multiplied by its ``gain``: the
lazy-regularisation interval times the round's share of the global batch) plus the values to log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.stylegan.augment import AugmentPipe
from training.stylegan.networks import Generator


@dataclass
class LossContext:
    G: Generator
    D: torch.nn.Module
    augment: AugmentPipe | None
    style_mixing: float
    r1_gamma: float
    pl_weight: float
    pl_batch_shrink: int
    autocast: torch.autocast | None = None


def _autocast(ctx: LossContext):
    return ctx.autocast if ctx.autocast is not None else torch.autocast("cpu", enabled=False)


def run_mapping(ctx: LossContext, z: torch.Tensor) -> torch.Tensor:
    """z → ws with style mixing: from a random layer on, ws come from a second latent (prob ``style_mixing``).

    The random numbers are drawn whatever the probability, so runs stay comparable and resumable.
    """
    G = ctx.G
    ws = G.mapping(z)
    cutoff = torch.randint(1, ws.shape[1], [], device=z.device)
    mix = torch.rand([], device=z.device) < ctx.style_mixing
    z2 = torch.randn_like(z)
    if ctx.style_mixing > 0 and bool(mix):
        ws2 = G.mapping(z2)
        layer = torch.arange(ws.shape[1], device=z.device)[None, :, None]
        ws = torch.where(layer < cutoff, ws, ws2)
    return ws


def run_D(ctx: LossContext, img: torch.Tensor) -> torch.Tensor:
    if ctx.augment is not None:
        img = ctx.augment(img)
    return ctx.D(img)


def g_main(
    ctx: LossContext, z: torch.Tensor, gain: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Generator adversarial loss softplus(-D(G(z))). Also returns the batch's mean w (for w_avg)."""
    with _autocast(ctx):
        ws = run_mapping(ctx, z)
        img = ctx.G.synthesis(ws)
        logits = run_D(ctx, img).float()
    loss = F.softplus(-logits).mean()
    return loss * gain, {"loss_G": loss.detach()}, ws[:, 0].detach().float().mean(0)


def g_reg(
    ctx: LossContext, z: torch.Tensor, pl_mean: torch.Tensor, gain: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Path-length penalty (|J_w^T y| − a)² on a shrunk batch; returns the lengths' mean for updating ``a``."""
    n = max(z.shape[0] // ctx.pl_batch_shrink, 1)
    with _autocast(ctx):
        ws = run_mapping(ctx, z[:n])
        if not ws.requires_grad:  # frozen mapping network: differentiate w.r.t. ws as a leaf
            ws.requires_grad_(True)
        img = ctx.G.synthesis(ws).float()
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    lengths = grads.float().square().sum(2).mean(1).sqrt()
    penalty = (lengths - pl_mean).square().mean()
    # The image term keeps every synthesis output in the graph (a zero that costs nothing).
    loss = penalty * ctx.pl_weight + img[:, 0, 0, 0].sum() * 0
    return loss * gain, {"pl_penalty": penalty.detach(), "pl_length": lengths.mean().detach()}, lengths.mean().detach()


def d_main(
    ctx: LossContext, real: torch.Tensor, z: torch.Tensor, gain: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """softplus(D(G(z))) + softplus(-D(real)); returns the real logits for the ADA heuristic."""
    with torch.no_grad(), _autocast(ctx):
        fake = ctx.G.synthesis(run_mapping(ctx, z))
    with _autocast(ctx):
        fake_logits = run_D(ctx, fake.detach()).float()
        real_logits = run_D(ctx, real).float()
    loss_fake = F.softplus(fake_logits).mean()
    loss_real = F.softplus(-real_logits).mean()
    stats = {
        "loss_D": (loss_fake + loss_real).detach(),
        "D_real": real_logits.mean().detach(),
        "D_fake": fake_logits.mean().detach(),
    }
    return (loss_fake + loss_real) * gain, stats, real_logits.detach()


def d_reg(ctx: LossContext, real: torch.Tensor, gain: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """R1: γ/2 · |∇_x D(x)|² at (augmented) real images."""
    with torch.no_grad():
        aug = ctx.augment(real) if ctx.augment is not None else real
    aug = aug.detach().requires_grad_(True)
    with _autocast(ctx):
        logits = ctx.D(aug).float()
    (grads,) = torch.autograd.grad(logits.sum(), aug, create_graph=True)
    penalty = grads.float().square().sum([1, 2, 3]).mean()
    return penalty * (ctx.r1_gamma / 2) * gain, {"r1_penalty": penalty.detach()}
