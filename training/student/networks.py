"""Export-safe student networks: an encoder-decoder family in compute tiers, plus MAC counting.

Every op exports to ONNX opset 17 and converts to MNN: 3×3 / depthwise / 1×1 convolutions, BatchNorm
(folded into the convolutions at export), ReLU, global average pooling and sigmoid (squeeze-excitation),
bilinear ×2 resize, add and concat. The network is fully convolutional with a static graph.

Layout (S = input side)::

    input S ─ stem 3×3/2 ─► S/2 (c1) ─ DS/2 ─► S/4 (c2) ─ N residual inverted-bottleneck blocks (opt. SE)
                                 │                                   │
    output ◄ head ◄ DS ◄ concat(input) ◄ ×2 ◄ DS ◄ add(skip) ◄ ×2 ◄──┘

Early downsampling keeps the full-resolution work to two thin layers; the skips carry the input's
detail past the bottleneck, which keeps ink lines sharp and faces recognisable. The head is a 3×3 conv,
or a 1×1 (:class:`StudentSpec`).
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
    channel, the learned blend mask. ``head``: the output conv's kernel size, 3 or 1.

    A 1×1 head makes the light tier 13–25 % faster in onnxruntime: it runs the full-resolution head in its
    blocked layout, where four output channels are padded to a whole block, so the 3×3 head over 12
    channels takes a fifth of the light tier's time for a tenth of its multiply-adds. The DS block before
    it already mixes 3×3 neighbourhoods, which was enough for sketch's line art but not for anime's eyes
    or hayao's shading (docs/styles.md), so 3 stays the default.
    """

    c0: int = 16
    c1: int = 16
    c2: int = 48
    blocks: int = 4
    expand: int = 2
    se: bool = False
    alpha: bool = False
    head: int = 3


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

    def __init__(
        self, c0: int, c1: int, c2: int, blocks: int, expand: int, se: bool, alpha: bool = False, head: int = 3
    ) -> None:
        super().__init__()
        self.stem = conv_bn(3, c1, 3, 2)
        self.down = ds_conv(c1, c2, 2)
        self.body = nn.Sequential(*[InvertedResidual(c2, expand, se) for _ in range(blocks)])
        self.up1 = ds_conv(c2, c1)
        self.skip1 = conv_bn(c1, c1, 1, act=False)
        self.up0 = ds_conv(c1 + 3, c0)
        self.head = nn.Conv2d(c0, 4 if alpha else 3, head, 1, head // 2)

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


def _conv_bn_blocks(net: StudentNet) -> list[tuple[str, nn.Sequential]]:
    """The network's conv + BatchNorm pairs in execution order, by name."""
    return [
        (name, m)
        for name, m in net.named_modules()
        if isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[1], nn.BatchNorm2d)
    ]


def _calibrate_batchnorms(blocks: list[nn.Sequential], net: nn.Module, photos: torch.Tensor) -> None:
    """Give each identity BatchNorm of ``blocks`` the statistics its convolution produces on ``photos``,
    scaled back so that it still computes the identity in eval mode, and nearly so in training mode."""
    stats: dict[nn.Sequential, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        seq[0].register_forward_hook(
            lambda _m, _i, y, seq=seq: stats.__setitem__(seq, (y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)))
        )
        for seq in blocks
    ]
    try:
        with torch.no_grad():
            net.eval()(photos)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for seq, (mean, var) in stats.items():
            bn = seq[1]
            bn.weight.copy_((var + bn.eps).sqrt())
            bn.bias.add_(mean)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)


# InferenceStudent's own modules: the wrapped StudentNet and the split full-resolution block
_INFERENCE_MODULES = ("net", "dw_features", "dw_input", "pw_features", "pw_input")


def read_onnx(path: Path):
    """The ONNX model in ``path``; a TrainingError naming the file when it is damaged."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends for a damaged file
        raise TrainingError(f"{path}: not a readable ONNX model: {exc}") from exc


def student_from_onnx(path: Path, spec: dict, photos: torch.Tensor) -> StudentNet:
    """A trainable :class:`StudentNet` computing an exported tier's function (``path``: its ONNX file), so a
    style whose training run is gone can still be fine-tuned.

    Export folds every BatchNorm into its convolution and splits the full-resolution block
    (:class:`InferenceStudent`); this undoes both, and drops the sharpening layer after the head. The head
    keeps the file's kernel size, whatever ``spec`` says (:func:`fit_head` changes it). Each
    BatchNorm gets the statistics its convolution produces on ``photos`` ((N, 3, S, S) in [-1, 1]): the
    network then computes the exported function exactly in eval mode, and up to the batch's statistics
    in training mode, so fine-tuning starts where the style is rather than from a rescaled network.
    """
    from onnx import numpy_helper

    graph = read_onnx(path).graph
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    for node in graph.node:  # the exporter shares equal tensors (all-zero biases) through Identity nodes
        if node.op_type == "Identity" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]]
    convs = [n for n in graph.node if n.op_type == "Conv" and n.input[1] in weights]
    head = next((i for i, n in enumerate(convs) if n.input[1].endswith("net.head.weight")), None)
    if head is None:
        raise TrainingError(f"{path}: not an exported student (no net.head convolution)")

    def weight_bias(node) -> tuple[torch.Tensor, torch.Tensor | None]:
        return weights[node.input[1]], weights[node.input[2]] if len(node.input) > 2 else None

    def name_in_student(weight: str) -> str:
        """The conv's name inside :class:`InferenceStudent`, whatever wrapped it at export (the sharpening
        layer's Sequential: '0.', a head mask's HeadMasked: 'tier.')."""
        parts = weight.removesuffix(".weight").split(".")
        return ".".join(next((parts[i:] for i, p in enumerate(parts) if p in _INFERENCE_MODULES), parts))

    # folded convolutions lost their names (onnx::Conv_N); the others keep the module's name
    folded = [weight_bias(n) for n in convs[: head + 1] if n.input[1].startswith("onnx::")]
    named = {name_in_student(n.input[1]): weight_bias(n) for n in convs[: head + 1]}
    net = build_student(**{**spec, "head": weights[convs[head].input[1]].shape[-1]})  # the file's own head
    blocks = _conv_bn_blocks(net)
    if len(folded) != len(blocks) - 2 or not {"dw_features", "dw_input", "pw_features", "pw_input"} <= set(named):
        raise TrainingError(f"{path}: its layers do not match a student of {spec}")
    (dw_f, dw_fb), (dw_i, dw_ib) = named["dw_features"], named["dw_input"]
    (pw_f, pw_fb), (pw_i, _) = named["pw_features"], named["pw_input"]
    folded += [(torch.cat([dw_f, dw_i]), torch.cat([dw_fb, dw_ib])), (torch.cat([pw_f, pw_i], 1), pw_fb)]
    plain = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None}
    try:
        for (weight, bias), (_, seq) in zip(folded, blocks):  # up0's two come last in both
            seq[0].weight.data.copy_(weight)
            seq[1].reset_parameters()
            seq[1].running_var.fill_(1.0 - seq[1].eps)
            seq[1].bias.data.copy_(bias)
        for name, conv in plain.items():
            weight, bias = named[f"net.{name}"]
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(bias)
    except (KeyError, RuntimeError) as exc:
        raise TrainingError(f"{path}: its layers do not match a student of {spec}: {exc}") from exc

    _calibrate_batchnorms([seq for _, seq in blocks], net, photos)
    return net


def fit_head(state: dict[str, torch.Tensor], net: StudentNet) -> dict[str, torch.Tensor]:
    """``state`` (a student's weights) with its head's kernel made the size of ``net``'s, to fine-tune a
    student into a tier whose head changed: a 1×1 head becomes the 3×3 with it at the centre (the same
    function); a 3×3 head becomes the 1×1 of its taps' sum (the same on locally constant features; the
    fine-tuning recovers the rest)."""
    weight, size = state["head.weight"], net.head.kernel_size[0]
    if weight.shape[-1] == size:
        return state
    if size == 1:
        fitted = weight.sum((2, 3), keepdim=True)
    else:
        fitted = torch.zeros(*weight.shape[:2], size, size, dtype=weight.dtype)
        fitted[:, :, size // 2, size // 2] = weight[:, :, 0, 0]
    return {**state, "head.weight": fitted}


def same_body(spec: dict, other: dict) -> bool:
    """Whether two students' specs differ at most in the head's kernel size (a record without one has 3)."""
    return {**spec, "head": None} == {**other, "head": None}


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
