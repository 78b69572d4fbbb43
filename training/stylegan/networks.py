"""StyleGAN2 generator (mapping + modulated-conv synthesis, noise, skip toRGB) and residual discriminator.

The module tree and every parameter/buffer name and shape mirror the official StyleGAN2-ADA PyTorch
networks (``mapping.fc0.weight``, ``synthesis.b64.conv0.affine.bias``, ``b4.fc.weight``...), and the
weights are stored the same way (equalised learning rate: unit-variance storage, runtime gains), so
an official state dict loads by name (see ``official.py`` for what was and was not verified).

Images are NCHW float in [-1, 1] (RGB). Latents: ``z`` ``[N, z_dim]``, ``ws`` ``[N, num_ws, w_dim]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.stylegan import ops


@dataclass(frozen=True)
class GeneratorConfig:
    resolution: int = 256
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    img_channels: int = 3
    conv_clamp: float | None = 256.0
    mapping_lr: float = 0.01

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DiscriminatorConfig:
    resolution: int = 256
    channel_base: int = 32768
    channel_max: int = 512
    img_channels: int = 3
    conv_clamp: float | None = 256.0
    mbstd_group_size: int = 4
    mbstd_channels: int = 1

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        """Blocks from the input resolution down to 8 (the 4² epilogue is ``b4``)."""
        return [2**i for i in range(int(math.log2(self.resolution)), 2, -1)]

    def to_dict(self) -> dict:
        return asdict(self)


def _check_resolution(res: int) -> None:
    if res < 4 or res & (res - 1):
        raise ValueError(f"resolution must be a power of two ≥ 4, got {res}")


# ----- layers ------------------------------------------------------------------------------------


class FullyConnectedLayer(nn.Module):
    """Equalised-lr linear layer: weights stored at unit variance / lr_multiplier, scaled at run time."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype) * self.bias_gain if self.bias_gain != 1 else b.to(x.dtype)
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution with optional FIR down/upsampling, bias, activation and clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter())
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ops.LRELU_GAIN if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = ops.conv2d_resample(x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


# ----- generator ---------------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """z → w through ``num_layers`` lrelu FC layers (lr multiplier 0.01), broadcast to ``num_ws``.

    ``w_avg`` (the running mean of w, updated by the training loop) is the truncation centre.
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        features = [z_dim] + [w_dim] * num_layers
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation="lrelu", lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        x = ops.normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = truncate(x, self.w_avg, truncation_psi, truncation_cutoff)
        return x

    @torch.no_grad()
    def update_w_avg(self, w_mean: torch.Tensor, beta: float) -> None:
        self.w_avg.copy_(w_mean.to(self.w_avg.dtype).lerp(self.w_avg, beta))


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """Pull ``ws`` towards ``w_avg`` by ``psi`` (1 = unchanged) on the first ``cutoff`` layers (all if None)."""
    ws = ws.clone()
    n = ws.shape[1] if cutoff is None else cutoff
    ws[:, :n] = w_avg.lerp(ws[:, :n], psi)
    return ws


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally 2× up) + per-pixel noise + bias + lrelu."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter())
        self.padding = 1
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused: bool = True, gain: float = 1.0
    ) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
            )
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        elif noise_mode != "none":
            raise ValueError(f"noise_mode must be random, const or none, got {noise_mode!r}")
        x = ops.modulated_conv2d(
            x,
            self.weight,
            styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            fused=fused,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias, act="lrelu", gain=ops.LRELU_GAIN * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv to RGB, no demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return ops.bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | 2× up conv0) → conv1 → toRGB added to the upsampled image (skip arch)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", ops.setup_filter())
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str, fused: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused=fused)
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused=fused)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused=fused)
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused=fused).to(torch.float32)
        img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        _check_resolution(cfg.resolution)
        self.w_dim = cfg.w_dim
        self.img_resolution = cfg.resolution
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = cfg.channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(in_ch, cfg.channels(res), cfg.w_dim, res, cfg.img_channels, cfg.conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's toRGB

    def block_ws(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """Each block's slice of ws: its convs plus the toRGB (which shares the next block's first w)."""
        out, idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            out.append(ws.narrow(1, idx, block.num_conv + block.num_torgb))
            idx += block.num_conv
        return out

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused: bool | None = None) -> torch.Tensor:
        if fused is None:
            fused = not self.training
        ws = ws.to(torch.float32)
        x = img = None
        for res, cur in zip(self.block_resolutions, self.block_ws(ws)):
            x, img = getattr(self, f"b{res}")(x, img, cur, noise_mode=noise_mode, fused=fused)
        return img

    def ws_layer_resolutions(self) -> list[int]:
        """The resolution each entry of ws drives (for per-resolution mixing and fusion)."""
        out = []
        for res in self.block_resolutions:
            out += [res] * getattr(self, f"b{res}").num_conv
        return out + [self.block_resolutions[-1]]


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.w_dim = cfg.w_dim
        self.img_resolution = cfg.resolution
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers, cfg.mapping_lr)

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
    ) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


# ----- discriminator -----------------------------------------------------------------------------


class DiscriminatorBlock(nn.Module):
    """Residual block: (fromRGB) → conv0 → conv1 (2× down), plus a 1×1 down-sampled skip, each scaled by √½."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", ops.setup_filter())
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Append the mean over channels and pixels of the per-group standard deviation (groups interleaved)."""

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size else n
        if n % g:
            raise ValueError(f"batch {n} is not a multiple of the minibatch-std group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, resolution: int, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        self.mbstd = MinibatchStdLayer(cfg.mbstd_group_size, cfg.mbstd_channels)
        self.conv = Conv2dLayer(
            in_channels + cfg.mbstd_channels, in_channels, 3, activation="lrelu", conv_clamp=cfg.conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.mbstd(x.to(torch.float32)))
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: image ``[N, 3, R, R]`` in [-1, 1] → logits ``[N, 1]``."""

    def __init__(self, cfg: DiscriminatorConfig) -> None:
        super().__init__()
        _check_resolution(cfg.resolution)
        self.cfg = cfg
        self.img_resolution = cfg.resolution
        self.block_resolutions = cfg.block_resolutions
        for res in self.block_resolutions:
            in_ch = cfg.channels(res) if res < cfg.resolution else 0
            block = DiscriminatorBlock(
                in_ch, cfg.channels(res), cfg.channels(res // 2), res, cfg.img_channels, cfg.conv_clamp
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(cfg.channels(4), 4, cfg)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        return self.b4(x)
