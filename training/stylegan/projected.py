"""Projected discriminator (Sauer et al., "Projected GANs Converge Faster", 2021) on EfficientNet-Lite0.

The image is upsampled to ``feature_size``² and passed through the frozen ImageNet EfficientNet-Lite0
(training/pretrained.py), tapping four scales (strides 4, 8, 16, 32). Random, frozen 1×1 convolutions
mix channels within each scale (CCM) and a random, frozen top-down path mixes coarse scales into fine
ones (CSM: upsample + add + 3×3 conv). Only the small per-scale discriminators on top are trained.
Each returns a patch map of logits; ``forward`` returns all of them, flattened, as ``[N, K]``.

Pretrained features make a discriminator useful from the first iterations, which is what a few CPU-hours
need. Because the same network defines FID-EL0, runs with this discriminator are also judged on FID-VGG.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.pretrained import LITE0_FEATURE_CHANNELS, efficientnet_lite0


def _random_conv(cin: int, cout: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Kaiming-uniform weights from a seeded generator (the mixing is random but reproducible)."""
    bound = (6 / (cin * k * k)) ** 0.5
    return (torch.rand([cout, cin, k, k], generator=gen) * 2 - 1) * bound


class _ScaleDiscriminator(nn.Module):
    """Strided 4×4 convs (spectral norm, BN, lrelu) down to ≤ 4², then a 4×4 → 1 logit map."""

    def __init__(self, channels: int, size: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        while size > 4:
            out = min(width * 2, 512) if layers else width
            layers += [
                nn.utils.spectral_norm(nn.Conv2d(c, out, 4, 2, 1, bias=False)),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            c, size = out, size // 2
        layers.append(nn.utils.spectral_norm(nn.Conv2d(c, 1, min(4, size), 1, 0)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class ProjectedDiscriminator(nn.Module):
    """Image ``[N, 3, R, R]`` in [-1, 1] → logits ``[N, K]`` from four feature scales."""

    def __init__(
        self, resolution: int, channels: int = 64, feature_size: int = 128, device: str = "cpu", seed: int = 0
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.feature_size = feature_size
        self.features = efficientnet_lite0(device)
        gen = torch.Generator().manual_seed(10_000 + seed)
        mixed = [channels * m for m in (1, 2, 4, 8)]
        for i, (cin, cout) in enumerate(zip(LITE0_FEATURE_CHANNELS, mixed)):
            self.register_buffer(f"ccm{i}", _random_conv(cin, cout, 1, gen))
        for i in range(3):  # CSM: coarse scale i+1 (mixed[i+1] ch) → fine scale i (mixed[i] ch)
            self.register_buffer(f"csm_up{i}", _random_conv(mixed[i + 1], mixed[i], 1, gen))
            self.register_buffer(f"csm_conv{i}", _random_conv(mixed[i], mixed[i], 3, gen))
        sizes = [feature_size // s for s in (4, 8, 16, 32)]
        self.heads = nn.ModuleList(_ScaleDiscriminator(c, s, channels) for c, s in zip(mixed, sizes))

    def trainable_named_parameters(self):
        return ((f"heads.{n}", p) for n, p in self.heads.named_parameters())

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self.features.train(False)  # frozen BatchNorm statistics
        return self

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(img, size=(self.feature_size, self.feature_size), mode="bilinear", align_corners=False)
        feats = self.features.features(x)
        mixed = [F.conv2d(f, getattr(self, f"ccm{i}").to(f.dtype)) for i, f in enumerate(feats)]
        out = [mixed[3]]
        coarse = mixed[3]
        for i in (2, 1, 0):
            up = F.interpolate(coarse, size=mixed[i].shape[-2:], mode="bilinear", align_corners=False)
            up = F.conv2d(up, getattr(self, f"csm_up{i}").to(up.dtype))
            coarse = F.conv2d(mixed[i] + up, getattr(self, f"csm_conv{i}").to(up.dtype), padding=1)
            out.insert(0, coarse)
        return torch.cat([head(f) for head, f in zip(self.heads, out)], dim=1)
