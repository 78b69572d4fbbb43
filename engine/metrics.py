"""Stream-quality metrics defined once for the engine, the benchmarks and training's evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from engine.align import Similarity


def sharpness(image: np.ndarray) -> float:
    """Mean |Laplacian| of the grey image per pixel (grey in 0..255, 3×3 Laplacian kernel).

    The published table sums |∇²| over the image; dividing by the pixel count makes images of
    different sizes comparable while keeping the same trend.
    """
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    lap = cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F, ksize=1)
    return float(np.abs(lap).mean())


def block_ratio(image: np.ndarray) -> float:
    """Neighbour differences inside 2×2 pixel blocks divided by those across block borders (grey image).

    About 1 for natural images; near 0 when an image is made of 2×2 blocks (nearest-neighbour or
    sub-pixel upsampling; far above 1 if the blocks sit off the even pixel grid). The Laplacian of
    :func:`sharpness` rewards block borders as if they were edges, so a sharpness gain is only real
    where this ratio stays near the reference's.
    """
    grey = (image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)).astype(np.float32)
    dx, dy = np.abs(np.diff(grey, axis=1)), np.abs(np.diff(grey, axis=0))
    inside = dx[:, 0::2].mean() + dy[0::2].mean()
    across = dx[:, 1::2].mean() + dy[1::2].mean()
    return float(inside / max(across, 1e-9))


def mean_abs_change(frames: Sequence[np.ndarray], mask: np.ndarray) -> float:
    """Mean absolute frame-to-frame difference inside ``mask`` (bool (H, W)), over all channels."""
    diffs = [np.abs(b.astype(np.int16) - a.astype(np.int16))[mask].mean() for a, b in zip(frames[:-1], frames[1:])]
    return float(np.mean(diffs))


def flicker_amplification(inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], mask: np.ndarray) -> float:
    """Output frame-to-frame change inside the face mask divided by the input's (static scene + noise).

    1.0 means the stylized face flickers as much as the sensor noise; below 1 the pipeline calms it.
    """
    return mean_abs_change(outputs, mask) / max(mean_abs_change(inputs, mask), 1e-9)


def transform_jitter(sims: Sequence[Similarity]) -> dict[str, float]:
    """Std (image pixels) of a face's crop placement over a static clip.

    centre: std of the centre (x and y pooled); side: std of the crop side; rotation: std of the
    angle as the displacement it causes at the crop's edge (angle × side / 2).
    """
    arr = np.array([[s.cx, s.cy, s.side, s.angle] for s in sims], dtype=np.float64)
    side = float(arr[:, 2].mean())
    centre = float(np.sqrt((arr[:, 0].var() + arr[:, 1].var()) / 2))
    out = {"centre_px": centre, "side_px": float(arr[:, 2].std()), "rotation_px": float(arr[:, 3].std() * side / 2)}
    out["max_px"] = max(out.values())
    return out
