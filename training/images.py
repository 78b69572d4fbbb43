"""Image helpers shared by the stages' reports: preview grids (BGR uint8, as OpenCV writes them)."""

from __future__ import annotations

import cv2
import numpy as np


def preview_grid(photos: list[np.ndarray], rows: list[list[np.ndarray]], thumb: int = 160) -> np.ndarray:
    """Before/after grid: the photos on top, one row per stylized version (BGR uint8)."""

    def row(images: list[np.ndarray]) -> np.ndarray:
        return np.hstack([cv2.resize(im, (thumb, thumb), interpolation=cv2.INTER_AREA) for im in images])

    return np.vstack([row(photos)] + [row(r) for r in rows])
