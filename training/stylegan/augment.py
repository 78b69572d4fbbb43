"""ADA: differentiable augmentation of every image the discriminator sees, with an adaptive probability.

Each transform is applied per image with probability ``p``: x-flip, 90° rotation, integer translation
(up to 1/8 of the size), isotropic scaling, arbitrary rotation, anisotropic scaling (geometric: one
affine matrix per image, sampled with reflection padding), then brightness, contrast, luma flip, hue
rotation and saturation (colour: one 4×4 matrix per image). The distributions follow the ADA paper's
'bgc' pipeline. Random numbers are always drawn for every transform and masked by ``p``, so the
amount drawn does not depend on ``p`` (needed for bit-exact resume and for comparing runs).

``AdaController`` implements the overfitting heuristic r_t = E[sign(D(real))]: every ``interval``
iterations p moves towards keeping r_t at ``target``, fast enough to go 0 → 1 in ``speed_kimg``.

Second derivatives through ``grid_sample`` are not implemented by PyTorch, so R1 is taken with respect
to the augmented real images (see loss.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    xflip: float = 1.0
    rotate90: float = 1.0
    xint: float = 1.0
    xint_max: float = 0.125
    scale: float = 1.0
    scale_std: float = 0.2
    rotate: float = 1.0
    rotate_max: float = 1.0  # fraction of a half turn
    aniso: float = 1.0
    aniso_std: float = 0.2
    brightness: float = 1.0
    brightness_std: float = 0.2
    contrast: float = 1.0
    contrast_std: float = 0.5
    lumaflip: float = 1.0
    hue: float = 1.0
    hue_max: float = 1.0
    saturation: float = 1.0
    saturation_std: float = 1.0


def _mask(n: int, prob: float, device) -> torch.Tensor:
    """Per-sample 0/1 mask with P(1) = prob; always draws n numbers."""
    return (torch.rand([n], device=device) < prob).to(torch.float32)


def _eye(n: int, size: int, device) -> torch.Tensor:
    return torch.eye(size, device=device).unsqueeze(0).repeat(n, 1, 1)


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], 3, tx.device)
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(sx.shape[0], 3, sx.device)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    return m


def _rotate(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(theta.shape[0], 3, theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


class AugmentPipe(torch.nn.Module):
    """``forward(images [N, 3, H, W] in [-1, 1]) → augmented images``; differentiable w.r.t. the images."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.p = 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        dev = images.device
        c, p = self.cfg, self.p
        # Geometric transforms map output pixel coordinates to input coordinates (pixel units, centred).
        g = _eye(n, 3, dev)
        i = _mask(n, c.xflip * p, dev) * (torch.rand([n], device=dev) < 0.5).float()
        g = g @ _scale(1 - 2 * i, torch.ones_like(i))
        i = _mask(n, c.rotate90 * p, dev) * torch.randint(0, 4, [n], device=dev).float()
        g = g @ _rotate(-i * math.pi / 2)
        m = _mask(n, c.xint * p, dev)
        t = (torch.rand([n, 2], device=dev) * 2 - 1) * c.xint_max
        g = g @ _translate((t[:, 0] * w).round() * m, (t[:, 1] * h).round() * m)
        m = _mask(n, c.scale * p, dev)
        s = torch.exp2(torch.randn([n], device=dev) * c.scale_std * m)
        g = g @ _scale(s, s)
        p_rot = 1 - math.sqrt(max(1 - c.rotate * p, 0))  # applied twice, around the anisotropic scaling
        m = _mask(n, p_rot, dev)
        g = g @ _rotate(-(torch.rand([n], device=dev) * 2 - 1) * math.pi * c.rotate_max * m)
        m = _mask(n, c.aniso * p, dev)
        s = torch.exp2(torch.randn([n], device=dev) * c.aniso_std * m)
        g = g @ _scale(s, 1 / s)
        m = _mask(n, p_rot, dev)
        g = g @ _rotate(-(torch.rand([n], device=dev) * 2 - 1) * math.pi * c.rotate_max * m)
        if not torch.equal(g, _eye(n, 3, dev)):
            images = self._resample(images, g)

        # Colour transforms: a 4×4 matrix on homogeneous RGB.
        cm = _eye(n, 4, dev)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=dev) / math.sqrt(3)
        vv = torch.outer(luma, luma)
        m = _mask(n, c.brightness * p, dev)
        b = torch.randn([n], device=dev) * c.brightness_std * m
        t = _eye(n, 4, dev)
        t[:, :3, 3] = b[:, None]
        cm = t @ cm
        m = _mask(n, c.contrast * p, dev)
        s = torch.exp2(torch.randn([n], device=dev) * c.contrast_std * m)
        t = _eye(n, 4, dev)
        t[:, [0, 1, 2], [0, 1, 2]] = s[:, None]
        cm = t @ cm
        m = _mask(n, c.lumaflip * p, dev) * torch.randint(0, 2, [n], device=dev).float()
        cm = (_eye(n, 4, dev) - 2 * vv * m[:, None, None]) @ cm
        m = _mask(n, c.hue * p, dev)
        theta = (torch.rand([n], device=dev) * 2 - 1) * math.pi * c.hue_max * m
        cm = _rotate_around_axis(luma[:3], theta) @ cm
        m = _mask(n, c.saturation * p, dev)
        s = torch.exp2(torch.randn([n], device=dev) * c.saturation_std * m)
        cm = (vv + (_eye(n, 4, dev) - vv) * s[:, None, None]) @ cm
        if not torch.equal(cm, _eye(n, 4, dev)):
            flat = images.reshape(n, 3, -1)
            flat = cm[:, :3, :3].to(images.dtype) @ flat + cm[:, :3, 3:].to(images.dtype)
            images = flat.reshape(images.shape)
        return images

    @staticmethod
    def _resample(images: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Sample ``images`` at ``g`` · (output pixel coordinates), reflecting at the borders (bilinear)."""
        n, _, h, w = images.shape
        # Pixel-unit matrix → normalised [-1, 1] coordinates (align_corners=False).
        to_norm = _scale(torch.full([n], 2 / w, device=g.device), torch.full([n], 2 / h, device=g.device))
        from_norm = _scale(torch.full([n], w / 2, device=g.device), torch.full([n], h / 2, device=g.device))
        theta = (to_norm @ g @ from_norm)[:, :2, :]
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _rotate_around_axis(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """4×4 rotations by ``theta`` ``[N]`` around the unit 3-vector ``axis`` (Rodrigues)."""
    n = theta.shape[0]
    x, y, z = axis.tolist()
    k = torch.tensor([[0, -z, y], [z, 0, -x], [-y, x, 0]], device=theta.device)
    s, c = torch.sin(theta)[:, None, None], torch.cos(theta)[:, None, None]
    r = torch.eye(3, device=theta.device) + s * k + (1 - c) * (k @ k)
    m = _eye(n, 4, theta.device)
    m[:, :3, :3] = r
    return m


@dataclass
class AdaController:
    """Adjusts ``pipe.p`` from the sign of D's outputs on real images (ADA's r_t heuristic)."""

    target: float = 0.6
    interval: int = 4
    speed_kimg: float = 100.0
    p: float = 0.0
    sign_sum: float = 0.0
    count: float = 0.0
    r_t: float = 0.0

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self.sign_sum += float(torch.sign(real_logits.detach().float()).sum())
        self.count += real_logits.numel()

    def adjust(self, batch_size: int, totals: tuple[float, float] | None = None) -> None:
        """Called every ``interval`` iterations; ``totals`` are (sign_sum, count) summed over ranks."""
        sign_sum, count = totals if totals is not None else (self.sign_sum, self.count)
        if count == 0:
            return
        self.r_t = sign_sum / count
        step = batch_size * self.interval / (self.speed_kimg * 1000)
        sign = (self.r_t > self.target) - (self.r_t < self.target)
        self.p = min(max(self.p + sign * step, 0.0), 1.0)
        self.sign_sum = self.count = 0.0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self.sign_sum, "count": self.count, "r_t": self.r_t}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.sign_sum, self.count, self.r_t = state["p"], state["sign_sum"], state["count"], state["r_t"]
