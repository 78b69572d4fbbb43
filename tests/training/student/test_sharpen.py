import cv2
import numpy as np
import pytest
import torch
from torch import nn

from engine.metrics import sharpness
from training import metrics
from training.images import to_tensor, to_uint8
from training.student.sharpen import MAX_AMOUNT, SEARCH_STEPS, EdgeSharpen, SharpenSettings, calibrate


def _blurred_step_with_grain(seed: int = 0) -> np.ndarray:
    """(64, 64, 3) float grey 0..255: a blurred vertical step on the left, faint grain on a flat right half."""
    img = np.full((64, 64), 100.0, np.float32)
    img[:, :16] = 40.0
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img[:, 32:] += np.random.default_rng(seed).normal(0, 1.0, (64, 32)).astype(np.float32)
    return np.repeat(img[..., None], 3, axis=2)


def _apply(layer: nn.Module, img: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(img).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        return ((layer(x)[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.float32)


def test_gate_steepens_edges_but_leaves_faint_grain_nearly_alone():
    img = _blurred_step_with_grain()
    gated = _apply(EdgeSharpen(SharpenSettings(2.0)), img)
    plain = _apply(EdgeSharpen(SharpenSettings(2.0, threshold=0.0)), img)  # ungated unsharp mask

    def edge(a):  # mean |Laplacian| of the half with the step
        return sharpness(np.clip(a[:, :32], 0, 255).astype(np.uint8))

    def grain(a):
        return float(a[4:-4, 36:-4, 0].std())

    assert edge(gated) > 1.3 * edge(img)
    assert grain(gated) < 1.4 * grain(img)  # the gate stays nearly shut on 1-grey-level grain
    assert grain(plain) > 2.0 * grain(img)  # which plain unsharp masking amplifies


class _Blur(nn.Module):
    """A stand-in student that returns its input blurred: its outputs are softer than the 'teacher'."""

    def forward(self, x):
        from training.student.augment import gaussian_blur

        return gaussian_blur(x, torch.full((x.shape[0],), 0.7))


def _ink_like(n: int) -> list[np.ndarray]:
    """Flat colour regions with hard borders, like the ink teacher's outputs."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        img = np.zeros((64, 64, 3), np.uint8)
        for _ in range(6):
            x, y, r = rng.integers(0, 64, 3)
            cv2.circle(img, (int(x), int(y)), int(r) // 2 + 4, rng.integers(0, 255, 3).tolist(), -1)
        out.append(img)
    return out


def test_calibration_matches_the_teachers_sharpness_on_the_given_pairs():
    targets = _ink_like(6)
    settings, record = calibrate(_Blur(), targets, targets)
    assert record["sharpness_vs_teacher_before"] < 0.8
    assert record["sharpness_vs_teacher_after"] == pytest.approx(1.0, abs=0.02)
    assert 0 < settings.amount < MAX_AMOUNT
    with torch.no_grad():
        out = to_uint8(EdgeSharpen(settings)(_Blur()(to_tensor(np.stack(targets), "bgr"))), "bgr")
    assert metrics.mean_block_ratio(list(out)) == pytest.approx(metrics.mean_block_ratio(targets), abs=0.15)


def test_a_student_as_sharp_as_its_teacher_gets_no_sharpening_layer():
    targets = _ink_like(4)
    settings, record = calibrate(nn.Identity(), targets, targets)
    assert settings is None and record["amount"] == 0.0
    assert record["sharpness_vs_teacher_before"] == pytest.approx(1.0) == record["sharpness_vs_teacher_after"]


class _Counting(_Blur):
    """_Blur that counts the images it is given."""

    seen = 0

    def forward(self, x):
        self.seen += len(x)
        return super().forward(x)


def _unbounded_amount(net: nn.Module, photos: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """The calibration as it was before the bound: every raw output held, the layer run on all at once."""
    with torch.no_grad():
        raw = net(to_tensor(np.stack(photos), "bgr"))
    goal = metrics.mean_sharpness(targets)

    def ratio(amount):
        with torch.no_grad():
            return metrics.mean_sharpness(to_uint8(EdgeSharpen(SharpenSettings(amount))(raw), "bgr")) / goal

    lo, hi = 0.0, MAX_AMOUNT
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio(mid) < 1.0 else (lo, mid)
    return round(lo, 3)


def test_calibration_within_the_bound_matches_the_unbounded_search():
    targets = _ink_like(40)  # more than one chunk of the layer
    settings, record = calibrate(_Blur(), targets, targets, max_pairs=40)
    assert settings.amount == _unbounded_amount(_Blur(), targets, targets)
    assert record["calibrated_on"] == "40 training pairs"


def test_calibration_runs_the_student_on_at_most_max_pairs_evenly_spaced_pairs():
    targets = _ink_like(10)
    net = _Counting()
    settings, record = calibrate(net, targets, targets, max_pairs=4)
    assert net.seen == 4 and record["calibrated_on"] == "4 of 10 training pairs"
    spaced = [targets[i] for i in (0, 2, 5, 7)]
    assert settings.amount == calibrate(_Blur(), spaced, spaced)[0].amount == _unbounded_amount(_Blur(), spaced, spaced)
