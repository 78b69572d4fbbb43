"""The **ink** teacher: learned HED edges inked over an edge-preserving, colour-quantised photo.

Three steps per aligned face crop (BGR uint8):

1. *Flatten*: repeated bilateral filtering removes skin texture and noise but keeps contours.
2. *Quantise*: k-means in Lab space (seeded, so deterministic) reduces the flattened crop to a small
   palette — flat cel-like colour regions; a 3×3 median removes isolated pixels.
3. *Ink*: the HED edge detector (offline VGG16/HED weights) gives soft edge probabilities, mapped
   through a smoothstep to ink coverage and painted over the colours.

It is far too slow for live use (a full VGG16 pass plus k-means per frame; ``make bench`` measures it),
which is why a student distils it. It is also fully deterministic, which makes it the tests' teacher.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from training import pretrained
from training.images import to_tensor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InkConfig:
    flatten_passes: int = 3
    flatten_diameter: int = 7
    sigma_color: float = 28.0
    sigma_space: float = 5.0
    colors: int = 10  # palette size of the quantisation
    edge_low: float = 0.35  # HED probability where ink starts ...
    edge_high: float = 0.85  # ... and where it is full
    ink_strength: float = 0.9
    ink_bgr: tuple[int, int, int] = (28, 24, 22)
    seed: int = 0


def smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class InkTeacher:
    """Callable: list of (S, S, 3) uint8 BGR crops -> list of stylized crops of the same shape."""

    name = "ink"

    def __init__(self, config: InkConfig = InkConfig(), device: str = "cpu") -> None:
        self.config = config
        self.device = device
        self._hed = pretrained.hed(device)

    def flatten(self, image: np.ndarray) -> np.ndarray:
        c = self.config
        out = image
        for _ in range(c.flatten_passes):
            out = cv2.bilateralFilter(out, c.flatten_diameter, c.sigma_color, c.sigma_space)
        return out

    def quantise(self, image: np.ndarray) -> np.ndarray:
        c = self.config
        lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)
        cv2.setRNGSeed(c.seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
        _, _, centres = cv2.kmeans(lab[::7], c.colors, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
        labels = np.argmin(((lab[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        quant = centres[labels].reshape(image.shape).round().clip(0, 255).astype(np.uint8)
        return cv2.medianBlur(cv2.cvtColor(quant, cv2.COLOR_LAB2BGR), 3)

    @torch.no_grad()
    def edges(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, H, W) float32 HED edge probabilities in [0, 1]."""
        return self._hed(to_tensor(images, "bgr").to(self.device))[:, 0].float().cpu().numpy()

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        c = self.config
        if not len(images):
            return []
        edges = self.edges(images)
        ink_colour = np.array(c.ink_bgr, np.float32)
        out = []
        for image, edge in zip(images, edges):
            colours = self.quantise(self.flatten(image)).astype(np.float32)
            ink = (c.ink_strength * smoothstep(edge, c.edge_low, c.edge_high))[..., None]
            out.append((colours * (1 - ink) + ink_colour * ink + 0.5).clip(0, 255).astype(np.uint8))
        return out
