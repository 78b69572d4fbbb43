"""U-GAT-IT networks (Kim et al., ICLR 2020), after the authors' PyTorch reference, plain ops only.

Generator (``S`` = image side; tensors are ``[B, 3, S, S]`` in [-1, 1])::

    7×7 conv ─ 2 × (3×3/2 conv) ─ n residual blocks (IN)  →  features x  [B, 4·ngf, S/4, S/4]
    CAM: logits from global avg- and max-pooled x (two bias-free linear units, ``cam_logit`` [B, 2]);
         x is re-weighted by those units' weights, both maps concatenated, 1×1 conv → attended x
    MLP on x (flattened, or avg-pooled for ``light``) → γ, β  [B, 4·ngf]
    n residual blocks with AdaLIN(γ, β) ─ 2 × (nearest ×2, 3×3 conv, LIN) ─ 7×7 conv ─ tanh

AdaLIN mixes instance and layer normalisation with a learned per-channel ρ ∈ [0, 1] (kept there by
:func:`clip_rho` after every optimizer step), then applies the MLP's γ, β. The discriminators are
PatchGAN stacks with spectral norm and the same CAM head; the "global" one (7 layers) sees the whole
face, the "local" one (5 layers) 70×70-ish patches.

Deviation from the reference, on purpose: the CAM map of the spectrally normalised discriminator uses
the *normalised* weight of the logit unit (the reference re-weights with the raw ``weight_orig``), so
the map and the logit come from the same unit, as CAM defines it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from training.errors import TrainingError

N_DOWN = 2  # generator down/up-sampling steps: features at S/4


@dataclass(frozen=True)
class GeneratorConfig:
    img_size: int = 256
    ngf: int = 64
    n_blocks: int = 4
    light: bool = False  # the paper's light version: the γ/β MLP reads avg-pooled features (far fewer params)

    def __post_init__(self) -> None:
        if self.img_size % (2**N_DOWN) or self.img_size < 8:
            raise TrainingError(f"generator image size must be a multiple of {2**N_DOWN} and ≥ 8, got {self.img_size}")
        if self.ngf < 1 or self.n_blocks < 1:
            raise TrainingError(f"generator needs ngf ≥ 1 and n_blocks ≥ 1, got {self.ngf}, {self.n_blocks}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DiscriminatorConfig:
    img_size: int = 256
    ndf: int = 64
    n_layers: int = 7

    def __post_init__(self) -> None:
        # n_layers - 2 stride-2 convs, then two 4×4 stride-1 convs (each shrinks the side by 1).
        side = self.img_size >> (self.n_layers - 2) if self.n_layers >= 3 else 0
        if self.n_layers < 3 or side << (self.n_layers - 2) != self.img_size or side < 4:
            raise TrainingError(
                f"a {self.n_layers}-layer discriminator needs an image side divisible by 2^{max(self.n_layers - 2, 0)}"
                f" with at least 4 pixels left, got {self.img_size}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


# ----- normalisation -----------------------------------------------------------------------------


def _instance_layer_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Instance- and layer-normalised ``x`` (unbiased variance, as the reference), computed in fp32."""
    x = x.float()
    x_in = (x - x.mean(dim=(2, 3), keepdim=True)) / torch.sqrt(x.var(dim=(2, 3), keepdim=True) + eps)
    x_ln = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(x.var(dim=(1, 2, 3), keepdim=True) + eps)
    return x_in, x_ln


class AdaLIN(nn.Module):
    """Adaptive layer-instance norm: ``(ρ·IN(x) + (1-ρ)·LN(x))·γ + β`` with γ, β ``[B, C]`` from the MLP."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), 0.9))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        x_in, x_ln = _instance_layer_stats(x, self.eps)
        out = self.rho * x_in + (1 - self.rho) * x_ln
        return (out * gamma[:, :, None, None] + beta[:, :, None, None]).to(x.dtype)


class LIN(nn.Module):
    """Layer-instance norm with learned ρ, γ, β (the decoder's up-sampling blocks)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in, x_ln = _instance_layer_stats(x, self.eps)
        out = self.rho * x_in + (1 - self.rho) * x_ln
        return (out * self.gamma + self.beta).to(x.dtype)


@torch.no_grad()
def clip_rho(module: nn.Module) -> None:
    """Clamp every AdaLIN/LIN ρ into [0, 1] (the paper's ρ clipping, after each generator step)."""
    for m in module.modules():
        if isinstance(m, AdaLIN | LIN):
            m.rho.clamp_(0.0, 1.0)


# ----- generator ---------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int, stride: int = 1, bias: bool = False) -> list[nn.Module]:
    """Reflection-padded convolution (the reference pads every conv by reflection)."""
    return [nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride, 0, bias=bias)]


class ResnetBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv(ch, ch, 3), nn.InstanceNorm2d(ch), nn.ReLU(True), *_conv(ch, ch, 3), nn.InstanceNorm2d(ch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetAdaLINBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_conv(ch, ch, 3))
        self.norm1 = AdaLIN(ch)
        self.conv2 = nn.Sequential(*_conv(ch, ch, 3))
        self.norm2 = AdaLIN(ch)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(y), gamma, beta)


class Generator(nn.Module):
    """``forward(x [B,3,S,S]) -> (image [B,3,S,S], cam_logit [B,2], heatmap [B,1,S/4,S/4])``."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ngf, ch = cfg.ngf, cfg.ngf * 2**N_DOWN
        down: list[nn.Module] = [*_conv(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for i in range(N_DOWN):
            c = ngf * 2**i
            down += [*_conv(c, 2 * c, 3, stride=2), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
        down += [ResnetBlock(ch) for _ in range(cfg.n_blocks)]
        self.down = nn.Sequential(*down)
        self.gap_fc = nn.Linear(ch, 1, bias=False)
        self.gmp_fc = nn.Linear(ch, 1, bias=False)
        self.conv1x1 = nn.Conv2d(2 * ch, ch, 1, 1, bias=True)
        fc_in = ch if cfg.light else ch * (cfg.img_size // 2**N_DOWN) ** 2
        self.mlp = nn.Sequential(
            nn.Linear(fc_in, ch, bias=False), nn.ReLU(True), nn.Linear(ch, ch, bias=False), nn.ReLU(True)
        )
        self.gamma = nn.Linear(ch, ch, bias=False)
        self.beta = nn.Linear(ch, ch, bias=False)
        self.blocks = nn.ModuleList(ResnetAdaLINBlock(ch) for _ in range(cfg.n_blocks))
        up: list[nn.Module] = []
        for i in range(N_DOWN):
            c = ch // 2**i
            up += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv(c, c // 2, 3), LIN(c // 2), nn.ReLU(True)]
        up += [*_conv(ngf, 3, 7), nn.Tanh()]
        self.up = nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.cfg.light and x.shape[-1] != self.cfg.img_size:
            raise TrainingError(f"this generator (not light) takes {self.cfg.img_size}² images, got {x.shape[-1]}²")
        x = self.down(x)
        x, cam_logit = _cam(x, self.gap_fc.weight, self.gmp_fc.weight)
        x = F.relu(self.conv1x1(x))
        heatmap = x.sum(dim=1, keepdim=True)
        h = F.adaptive_avg_pool2d(x, 1).flatten(1) if self.cfg.light else x.flatten(1)
        h = self.mlp(h)
        gamma, beta = self.gamma(h), self.beta(h)
        for block in self.blocks:
            x = block(x, gamma, beta)
        return self.up(x), cam_logit, heatmap


def _cam(x: torch.Tensor, w_gap: torch.Tensor, w_gmp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class activation map: logits of the pooled features, and the features weighted by the logit units.

    ``x`` [B, C, H, W], ``w_*`` [1, C] → (``[B, 2C, H, W]``, cam logits ``[B, 2]``: avg then max).
    """
    gap_logit = F.adaptive_avg_pool2d(x, 1).flatten(1) @ w_gap.t()
    gmp_logit = F.adaptive_max_pool2d(x, 1).flatten(1) @ w_gmp.t()
    maps = torch.cat([x * w_gap[0, :, None, None], x * w_gmp[0, :, None, None]], dim=1)
    return maps, torch.cat([gap_logit, gmp_logit], dim=1)


# ----- discriminator -----------------------------------------------------------------------------


class Discriminator(nn.Module):
    """``forward(x) -> (patch logits [B,1,h,w], cam_logit [B,2], heatmap [B,1,h+1,w+1])`` (LSGAN targets)."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ndf = cfg.ndf
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(3, ndf, 4, 2, 0, bias=True)),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, cfg.n_layers - 2):
            c = ndf * 2 ** (i - 1)
            layers += [
                nn.ReflectionPad2d(1),
                spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 0, bias=True)),
                nn.LeakyReLU(0.2, True),
            ]
        c = ndf * 2 ** (cfg.n_layers - 3)
        layers += [
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, 1, 0, bias=True)),
            nn.LeakyReLU(0.2, True),
        ]
        self.model = nn.Sequential(*layers)
        ch = 2 * c
        self.gap_fc = spectral_norm(nn.Linear(ch, 1, bias=False))
        self.gmp_fc = spectral_norm(nn.Linear(ch, 1, bias=False))
        self.conv1x1 = nn.Conv2d(2 * ch, ch, 1, 1, bias=True)
        self.head = nn.Sequential(nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch, 1, 4, 1, 0, bias=False)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.model(x)
        # One read of each normalised weight per forward: each read runs a power iteration in training mode.
        x, cam_logit = _cam(x, self.gap_fc.weight, self.gmp_fc.weight)
        x = F.leaky_relu(self.conv1x1(x), 0.2)
        heatmap = x.sum(dim=1, keepdim=True)
        return self.head(x), cam_logit, heatmap
