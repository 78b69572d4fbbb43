"""Paired augmentation on batches of tensors, on the training device.

Mirroring and colour jitter apply identically to the photo, its target and the edge-smoothed target, so
pairs stay aligned and the teacher's mapping stays consistent. Geometry is changed only in ways that move
whole pixels (mirroring here, the random crop position in the sampler): any resampling is a low-pass
filter, and the small rotations and zooms used before took the targets' mean sharpness to 0.74 of the
teacher's (anime pairs, 64 random 256² targets), teaching the students to blur. Run-time crops are
aligned anyway. Camera
degradations (blur, sensor noise, JPEG) apply to the *photo only*: the student learns to produce the
clean teacher output from the imperfect frames a webcam delivers.

All tensors are (N, 3, H, W) RGB in [-1, 1]; H and W multiples of 8 (JPEG blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    brightness: float = 0.12
    contrast: float = 0.15
    saturation: float = 0.2
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.3)
    noise_p: float = 0.3
    noise_sigma: float = 0.04
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 90)


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, device="cpu").to(device) * (high - low) + low


def mirror(tensors: list[torch.Tensor], cfg: AugmentConfig) -> list[torch.Tensor]:
    """The same random left-right mirroring per sample for every tensor in ``tensors`` (exact: no resampling)."""
    n = tensors[0].shape[0]
    flip = (torch.rand(n) < cfg.flip).to(tensors[0].device).view(n, 1, 1, 1)
    return [torch.where(flip, t.flip(-1), t) for t in tensors]


def colour_jitter(tensors: list[torch.Tensor], cfg: AugmentConfig) -> list[torch.Tensor]:
    """Same random brightness / contrast / saturation per sample for every tensor."""
    x = tensors[0]
    n, dev = x.shape[0], x.device
    b = _uniform(n, -cfg.brightness, cfg.brightness, dev).view(n, 1, 1, 1)
    c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, dev).view(n, 1, 1, 1)
    s = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, dev).view(n, 1, 1, 1)
    out = []
    for t in tensors:
        grey = (0.299 * t[:, :1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]).expand_as(t)
        t = grey + (t - grey) * s
        mean = t.mean(dim=(1, 2, 3), keepdim=True)
        out.append(((t - mean) * c + mean + b).clamp(-1, 1))
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur; sigma: (N,) in pixels."""
    n, ch, h, w = x.shape
    radius = int(math.ceil(3 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (N*C, K)
    y = x.reshape(1, n * ch, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * ch)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=n * ch)
    return y.reshape(n, ch, h, w)


_LUMA_Q = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22,
           29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103,
           121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]  # fmt: skip
_CHROMA_Q = [17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 38


def _dct_matrix(device, dtype) -> torch.Tensor:
    i = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * i[None] + 1) * i[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m.to(device=device, dtype=dtype)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG round trip (YCbCr, 4:2:0 chroma, 8×8 DCT quantised with the standard tables).

    quality: (N,) in 1..100 (the libjpeg scaling of the tables). Matches a real encoder's artefacts
    (blocking, ringing, chroma bleeding) closely enough for augmentation, and runs on any device.
    """
    n, _, h, w = x.shape
    rgb = (x + 1) * 127.5
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    chroma = F.interpolate(F.avg_pool2d(torch.stack([cb, cr], 1), 2), scale_factor=2.0, mode="nearest")
    planes = torch.cat([y[:, None] - 128, chroma], 1)  # (N, 3, H, W)
    q = quality.to(x.device, x.dtype).clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q) / 100
    tables = torch.tensor([_LUMA_Q, _CHROMA_Q, _CHROMA_Q], device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 8, 8)
    tables = (tables * scale.view(n, 1, 1, 1, 1, 1)).floor().clamp(min=1)
    d = _dct_matrix(x.device, x.dtype)
    blocks = planes.reshape(n, 3, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)  # (N, 3, H/8, W/8, 8, 8)
    coeffs = d @ blocks @ d.T
    coeffs = torch.round(coeffs / tables) * tables
    planes = (d.T @ coeffs @ d).permute(0, 1, 2, 4, 3, 5).reshape(n, 3, h, w)
    y, cb, cr = planes[:, 0] + 128, planes[:, 1], planes[:, 2]
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return (out / 127.5 - 1).clamp(-1, 1)


def degrade(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Camera degradations on the photo: blur, sensor noise, JPEG — each with its probability per sample."""
    n, dev = x.shape[0], x.device
    pick = torch.rand(n, 3).to(dev)
    blurred = gaussian_blur(x, _uniform(n, *cfg.blur_sigma, dev))
    x = torch.where((pick[:, 0] < cfg.blur_p).view(n, 1, 1, 1), blurred, x)
    noise = torch.randn(x.shape).to(dev) * (torch.rand(n).to(dev) * cfg.noise_sigma).view(n, 1, 1, 1)
    x = torch.where((pick[:, 1] < cfg.noise_p).view(n, 1, 1, 1), (x + noise).clamp(-1, 1), x)
    compressed = jpeg(x, _uniform(n, *cfg.jpeg_quality, dev).round())
    return torch.where((pick[:, 2] < cfg.jpeg_p).view(n, 1, 1, 1), compressed, x)


def augment_batch(
    photo: torch.Tensor, targets: list[torch.Tensor], cfg: AugmentConfig, masks: list[torch.Tensor] = ()
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Augment a batch: paired mirroring (masks too) and colour (images only), then degradations of the
    photo alone. Masks are (N, 1, H, W)."""
    moved = mirror([photo, *targets, *masks], cfg)
    images, masks = moved[: 1 + len(targets)], moved[1 + len(targets) :]
    out = colour_jitter(images, cfg)
    return degrade(out[0], cfg), out[1:], masks
