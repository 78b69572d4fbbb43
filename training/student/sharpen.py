"""Edge-gated sharpening appended to an exported student, with its strength calibrated on training pairs.

Why: a student trained with pixel and perceptual losses predicts the conditional mean of the teacher's
output, so where the position of a colour step is uncertain it draws a ramp; the trained ink students look
like the teacher blurred by σ ≈ 0.6 px (docs/ink.md). Unsharp masking restores that edge contrast, and a gate
on the local detail magnitude keeps it from amplifying the faint texture of flat regions, which plain
unsharp masking does and the teacher (flat cel colours) does not draw.

The layer is fixed (no trainable weights), made of ops that export to ONNX and MNN (two 1-D depthwise
convolutions, sub, abs, mean, mul, add, div) and costs ~2 MMAC at 256² (left out of the tiers' GMAC figures). Its
amount is chosen per tier on the *training* pairs so that the student's mean sharpness matches the
teacher's there; the held-out pairs then measure what it did (sharpness, 2×2 block ratio, FID-EL0/VGG,
identity, L1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.metrics import sharpness
from training import metrics
from training.images import to_tensor, to_uint8

SIGMA = 0.8  # px: the blur the detail is measured against (students behave like the teacher blurred ~0.6 px)
THRESHOLD = 3.0  # grey levels of mean |detail| where the gate is half open
MAX_AMOUNT = 6.0
SEARCH_STEPS = 12
CALIBRATION_PAIRS = 128  # the most pairs calibrate() uses (see there why that is enough)
# A student this close to its teacher's sharpness gets no layer: it would add little, and on the light tier
# the layer's passes over the 256² output are about a fifth of the graph's time (onnxruntime, 2 threads).
NEEDLESS_WITHIN = 0.03


@dataclass(frozen=True)
class SharpenSettings:
    amount: float
    sigma: float = SIGMA
    threshold: float = THRESHOLD


class EdgeSharpen(nn.Module):
    """x + amount · detail · gate, detail = x − blur_σ(x), gate = m² / (m² + t²), m = mean_c |detail|.

    Works on RGB in [-1, 1] (the bundle's I/O); the engine clips what leaves that range. Folded for
    speed (every op at 256² costs ~0.1 ms on two threads): the amount scales the detail once, and the gate
    compares it with amount · t. The Gaussian blur runs as two 1-D depthwise passes: onnxruntime has no
    blocked kernel for a 3-channel depthwise convolution, and its generic one took 0.63 ms for the 5×5.
    """

    def __init__(self, settings: SharpenSettings):
        super().__init__()
        self.radius = math.ceil(2.5 * settings.sigma)  # the taps further out weigh < 0.1 %
        taps = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32)
        g = torch.exp(-(taps**2) / (2 * settings.sigma**2))
        g = g / g.sum()
        self.register_buffer("across", g.view(1, 1, 1, -1).expand(3, 1, 1, -1).contiguous())
        self.register_buffer("down", g.view(1, 1, -1, 1).expand(3, 1, -1, 1).contiguous())
        self.amount = settings.amount
        self.t2 = (settings.amount * settings.threshold / 127.5) ** 2 + 1e-12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x[:, :3]  # a 4th (alpha) channel passes through unsharpened
        padded = F.pad(rgb, (self.radius,) * 4, mode="reflect")
        blurred = F.conv2d(F.conv2d(padded, self.across, groups=3), self.down, groups=3)
        detail = (rgb - blurred) * self.amount
        m = detail.abs().mean(dim=1, keepdim=True)
        m2 = m * m
        out = rgb + detail * (m2 / (m2 + self.t2))
        return out if x.shape[1] == 3 else torch.cat([out, x[:, 3:]], 1)


def sharpened(net: nn.Module, settings: SharpenSettings | None) -> nn.Module:
    """The student followed by the sharpening layer (``net`` itself when ``settings`` is None)."""
    return net if settings is None else nn.Sequential(net, EdgeSharpen(settings)).eval()


def calibrate(
    net: nn.Module, photos: list[np.ndarray], targets: list[np.ndarray], max_pairs: int = CALIBRATION_PAIRS
) -> tuple[SharpenSettings | None, dict]:
    """The amount at which the student's mean sharpness on these (training) pairs matches the teacher's, or
    None when the student is already within :data:`NEEDLESS_WITHIN` of it (or sharper).

    Bisection over [0, MAX_AMOUNT] (sharpness rises monotonically with the amount); returns the settings
    and a record of the calibration for the manifest. Of more than ``max_pairs`` pairs, ``max_pairs``
    evenly spaced ones are used (the student's and the teacher's side alike). The student runs once on
    each and its raw outputs are kept for the bisection, so memory is bounded by ``max_pairs`` of them
    (128 × 3 × 256² float32 = 96 MiB) whatever the number of pairs; the layer's outputs are measured a
    chunk at a time. 128 are enough: the amount matches a mean over faces, and on ink 128 evenly spaced
    training pairs gave the same held-out sharpness as all 524 within the calibration's own noise
    (0.899 / 0.937 / 0.938 against 0.905 / 0.939 / 0.942 for the three tiers, docs/ink.md).
    """
    n = len(photos)
    picked = [i * n // max_pairs for i in range(max_pairs)] if n > max_pairs else range(n)
    photos, targets = [photos[i] for i in picked], [targets[i] for i in picked]
    with torch.no_grad():
        raw = torch.cat([net(to_tensor(photos[i : i + 16], "bgr"))[:, :3] for i in range(0, len(photos), 16)])
    goal = metrics.mean_sharpness(targets)

    def ratio(amount: float) -> float:
        layer = EdgeSharpen(SharpenSettings(amount))
        with torch.no_grad():
            values = [sharpness(im) for i in range(0, len(raw), 32) for im in to_uint8(layer(raw[i : i + 32]), "bgr")]
        return float(np.mean(values)) / goal

    before = ratio(0.0)
    calibrated_on = f"{len(photos)} training pairs" if n <= max_pairs else f"{len(photos)} of {n} training pairs"
    if before >= 1.0 - NEEDLESS_WITHIN:
        record = {"amount": 0.0, "calibrated_on": calibrated_on, "sharpness_vs_teacher_before": before}
        return None, {**record, "sharpness_vs_teacher_after": before}
    lo, hi = 0.0, MAX_AMOUNT
    if ratio(hi) <= 1.0:
        lo = hi
    else:
        for _ in range(SEARCH_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if ratio(mid) < 1.0 else (lo, mid)
    settings = SharpenSettings(round(lo, 3))
    record = {
        **asdict(settings),
        "calibrated_on": calibrated_on,
        "sharpness_vs_teacher_before": before,
        "sharpness_vs_teacher_after": ratio(settings.amount),
    }
    return settings, record
