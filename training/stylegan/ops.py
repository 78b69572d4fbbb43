"""Resampling, convolution and activation primitives of StyleGAN2, in plain PyTorch ops.

The official StyleGAN2-ADA code builds CUDA kernels for these at import; here each one is the
reference formulation (pad → zero-insert upsample → FIR filter → decimate) written with ``conv2d`` /
``conv_transpose2d``, so the networks run anywhere, support double backward (R1, path length) and
are exactly reproducible on CPU. The semantics (padding rules, filter gain, activation gain, clamp)
follow the official ops.

Tensors are NCHW float; filters are 2-D ``[fh, fw]`` float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def setup_filter(taps: list[float] | tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable low-pass taps → normalised 2-D filter ``[k, k]`` (DC gain 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), FIR-filter, then keep every ``down``-th pixel.

    ``padding`` is (x0, x1, y0, y1) relative to the upsampled image, as in the official op.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # Convolution (not correlation) with the filter; our filters are symmetric but keep it exact.
    weight = (f * gain).to(x.dtype).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2× FIR upsampling (the skip-architecture image path)."""
    k = f.shape[-1]
    p = ((k + 1) // 2, (k - 2) // 2)
    return upfirdn2d(x, f, up=2, padding=(p[0], p[1], p[0], p[1]), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2× FIR downsampling."""
    k = f.shape[-1]
    p = ((k - 1) // 2, (k - 2) // 2)
    return upfirdn2d(x, f, down=2, padding=(p[0], p[1], p[0], p[1]))


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """Correlation (like ``F.conv2d``) with optional FIR-filtered 2× downsampling, or a convolution with
    2× upsampling (the official layers' convention for ``up=2``).

    Upsampling uses a strided transposed convolution followed by the FIR filter; downsampling filters
    first and then runs a strided convolution — the same arithmetic as the official fast paths.
    """
    out_ch, in_per_group, kh, kw = w.shape
    px0 = px1 = py0 = py1 = padding
    if up > 1 or down > 1:
        assert f is not None
        fk = f.shape[-1]
    if up > 1:
        px0 += (fk + up - 1) // 2
        px1 += (fk - up) // 2
        py0, py1 = px0, px1
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        # The kernel is not flipped: upsampling layers convolve (official ``flip_weight=False``),
        # which official weights depend on.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = F.conv_transpose2d(x, wt, stride=up, padding=[pyt, pxt], groups=groups)
        return upfirdn2d(x, f, padding=(px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt), gain=float(up * up))
    if down > 1:
        px0 += (fk - down + 1) // 2
        px1 += (fk - down) // 2
        if kh == 1 and kw == 1:
            x = upfirdn2d(x, f, down=down, padding=(px0, px1, px0, px1))
            return F.conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, padding=(px0, px1, px0, px1))
        return F.conv2d(x, w, stride=down, groups=groups)
    return F.conv2d(x, w, padding=padding, groups=groups)


def bias_act(
    x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float | None = None, clamp: float | None = None
) -> torch.Tensor:
    """Add a per-channel bias, apply ``linear`` or ``lrelu`` (slope 0.2), scale by the gain, clamp.

    The default gain is the activation's (√2 for lrelu, 1 for linear), as in the official op.
    """
    if b is not None:
        shape = [1, -1] + [1] * (x.ndim - 2)
        x = x + b.to(x.dtype).reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        default_gain = LRELU_GAIN
    elif act == "linear":
        default_gain = 1.0
    else:
        raise ValueError(f"unknown activation {act!r}")
    g = default_gain if gain is None else gain
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution: scale input channels by ``styles`` ``[N, I]``, convolve,
    and (with ``demodulate``) renormalise each output channel to unit expected variance.

    ``fused`` runs one grouped convolution with per-sample weights (fast at inference, batch 1);
    otherwise activations are scaled before and after a shared-weight convolution (faster in
    training). Both compute the same function.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    w = None
    dcoefs = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, groups=n)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
