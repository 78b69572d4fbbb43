"""Export-safe student networks: an encoder-decoder family in compute tiers, plus MAC counting.

Every op exports to ONNX opset 17 and converts to MNN: 3×3 / depthwise / 1×1 convolutions, BatchNorm
(folded into the convolutions at export), ReLU, global average pooling and sigmoid (squeeze-excitation),
bilinear ×2 resize, add and concat. The network is fully convolutional with a static graph.

Layout (S = input side)::

    input S ─ stem 3×3/2 ─► S/2 (c1) ─ DS/2 ─► S/4 (c2) ─ N residual inverted-bottleneck blocks (opt. SE)
                                 │                                   │
    output ◄ 3×3 ◄ DS ◄ concat(input) ◄ ×2 ◄ DS ◄ add(skip) ◄ ×2 ◄──┘

Early downsampling keeps the full-resolution work to two thin layers; the skips carry the input's
detail past the bottleneck, which keeps ink lines sharp and faces recognisable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from training.errors import TrainingError
from training.runs import find_model_file, load_model_file


@dataclass(frozen=True)
class StudentSpec:
    """Width and depth of a student. ``c0``/``c1``/``c2``: channels at S, S/2, S/4. ``alpha``: a 4th output
    channel, the learned blend mask."""

    c0: int = 16
    c1: int = 16
    c2: int = 48
    blocks: int = 4
    expand: int = 2
    se: bool = False
    alpha: bool = False


# Compute tiers at 256²: light <= 0.3 GMAC, standard <= 1 GMAC, high <= 3 GMAC (tested).
TIERS: dict[str, StudentSpec] = {
    "light": StudentSpec(c0=12, c1=16, c2=48, blocks=4, expand=2, se=False),
    "standard": StudentSpec(c0=16, c1=24, c2=64, blocks=6, expand=3, se=True),
    "high": StudentSpec(c0=24, c1=32, c2=96, blocks=8, expand=4, se=True),
}
TIER_BUDGET_GMACS = {"light": 0.3, "standard": 1.0, "high": 3.0}


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def ds_conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise-separable 3×3 conv: depthwise 3×3 then pointwise 1×1, each with BN + ReLU."""
    return nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1))


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int, reduction: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(ch, max(8, ch // reduction), 1)
        self.expand = nn.Conv2d(max(8, ch // reduction), ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand, depthwise 3×3, optional SE, 1×1 project (linear), plus the input."""

    def __init__(self, ch: int, expand: int, se: bool) -> None:
        super().__init__()
        mid = ch * expand
        layers: list[nn.Module] = [conv_bn(ch, mid, 1), conv_bn(mid, mid, 3, groups=mid)]
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(conv_bn(mid, ch, 1, act=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class StudentNet(nn.Module):
    """(N, 3, S, S) RGB [-1, 1] -> (N, 3, S, S) RGB [-1, 1], or (N, 4, S, S) RGBA with ``alpha``; S divisible
    by 4. The alpha channel shares the colour's range: -1 keeps the photo, 1 shows the style."""

    arch = "student"

    def __init__(self, c0: int, c1: int, c2: int, blocks: int, expand: int, se: bool, alpha: bool = False) -> None:
        super().__init__()
        self.stem = conv_bn(3, c1, 3, 2)
        self.down = ds_conv(c1, c2, 2)
        self.body = nn.Sequential(*[InvertedResidual(c2, expand, se) for _ in range(blocks)])
        self.up1 = ds_conv(c2, c1)
        self.skip1 = conv_bn(c1, c1, 1, act=False)
        self.up0 = ds_conv(c1 + 3, c0)
        self.head = nn.Conv2d(c0, 4 if alpha else 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up0(torch.cat([self.upsampled_features(x), x], 1))
        return torch.tanh(self.head(h))

    def upsampled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything below full resolution, brought back to S; the full-resolution stage combines it with x."""
        s1 = self.stem(x)
        h = self.body(self.down(s1))
        h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
        h = self.up1(h) + self.skip1(s1)
        return F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)


def _conv_like(weight: torch.Tensor, bias: torch.Tensor | None, groups: int = 1) -> nn.Conv2d:
    k = weight.shape[-1]
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], k, 1, k // 2, groups=groups, bias=bias is not None)
    conv.weight.data.copy_(weight)
    if bias is not None:
        conv.bias.data.copy_(bias)
    return conv


class InferenceStudent(nn.Module):
    """A trained :class:`StudentNet` rearranged for CPU runtimes; the same function (to ~1e-6).

    The full-resolution depthwise-separable conv runs over concat(features, input): c1 + 3 channels,
    which onnxruntime cannot keep in its blocked (NCHWc) layout, so that one depthwise conv took a fifth
    of the light tier's time. Depthwise convolution and ReLU act per channel and the pointwise conv is
    linear, so (BatchNorm folded) it splits exactly into a features branch and an input branch whose
    pointwise outputs are added: no concat, and the wide branch stays blocked. Measured with onnxruntime,
    2 threads, sharpening layer included: light 5.3 → 3.9 ms, standard −18 %, high −14 %; MNN unchanged.
    """

    def __init__(self, net: StudentNet) -> None:
        super().__init__()
        self.net = net
        dw = fuse_conv_bn_eval(net.up0[0][0], net.up0[0][1])
        pw = fuse_conv_bn_eval(net.up0[1][0], net.up0[1][1])
        c = dw.weight.shape[0] - 3
        self.dw_features, self.dw_input = (
            _conv_like(dw.weight[:c], dw.bias[:c], c),
            _conv_like(dw.weight[c:], dw.bias[c:], 3),
        )
        self.pw_features, self.pw_input = _conv_like(pw.weight[:, :c], pw.bias), _conv_like(pw.weight[:, c:], None)
        self.eval()  # inference only: the wrapped network's BatchNorm must keep its running statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pw_features(F.relu(self.dw_features(self.net.upsampled_features(x))))
        h = F.relu(h + self.pw_input(F.relu(self.dw_input(x))))
        return torch.tanh(self.net.head(h))


def build_student(tier: str | None = None, **kwargs) -> StudentNet:
    """A student of a named tier, or of explicit :class:`StudentSpec` fields (what checkpoints store)."""
    if tier is not None:
        kwargs = {**asdict(TIERS[tier]), **kwargs}
    return StudentNet(**kwargs)


def count_macs(model: nn.Module, size: int = 256) -> int:
    """Multiply-accumulates of one (1, 3, size, size) inference, counted with forward hooks.

    Convolutions count out_elements × in_channels/groups × kh × kw; linear layers in × out. BatchNorm
    (folded at export), activations, pooling and resizing are not MACs.
    """
    total = 0

    def conv_hook(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    def linear_hook(mod: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


ARCHS = {"student": build_student}  # literal registry of exportable architectures


def load_student(path: Path) -> tuple[StudentNet, dict]:
    """EMA student from a run directory or its model file, in eval mode on the CPU."""
    path = Path(path)
    file = find_model_file(path)
    record = load_model_file(file)
    if record["arch"] not in ARCHS:
        raise TrainingError(f"{file}: architecture '{record['arch']}' cannot be exported (known: {list(ARCHS)})")
    net = ARCHS[record["arch"]](**record["init_kwargs"])
    net.load_state_dict(record.get("params_ema") or record["params"])
    return net.eval(), record
