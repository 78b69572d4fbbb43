"""Image helpers shared by the stages: anti-aliased resizing and preview grids (BGR uint8, as OpenCV reads
and writes them)."""

from __future__ import annotations

import cv2
import numpy as np


def preview_grid(photos: list[np.ndarray], rows: list[list[np.ndarray]], thumb: int = 160) -> np.ndarray:
    """Before/after grid: the photos on top, one row per stylized version (BGR uint8)."""

    def row(images: list[np.ndarray]) -> np.ndarray:
        return np.hstack([cv2.resize(im, (thumb, thumb), interpolation=cv2.INTER_AREA) for im in images])

    return np.vstack([row(photos)] + [row(r) for r in rows])


def resize_antialiased(image: np.ndarray, h: int, w: int | None = None) -> np.ndarray:
    """``image`` at (h, w) (w = h by default): area averaging when shrinking, bicubic when enlarging."""
    w = h if w is None else w
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
