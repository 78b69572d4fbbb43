"""Face alignment: FFHQ-style similarity transforms, their smoothing, and anti-aliased crops.

This is a public API shared by the live engine and by training's data preparation, so a face crop
seen during training is produced by exactly the same code as at run time.

Conventions
-----------
* A face's placement is a :class:`Similarity`: centre ``(cx, cy)`` in image pixels (the image point
  that lands in the middle of the crop), ``log_side`` (natural log of the crop's side length in image
  pixels) and ``angle`` (radians, rotation of the crop's x axis in the image, counter-clockwise in
  image coordinates with y pointing down).
* Unit crop coordinates ``q`` lie in [0, 1]²; crop pixel ``(u, v) = S * q`` for a crop of side ``S``.
  Image point ``p = c + side * R(angle) @ (q - 0.5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Landmark indices of mediapipe face mesh used for alignment: rigid points only (eye corners and
# mouth corners), never the jaw or brows, so expressions move the crop as little as possible.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
ALIGN_LANDMARKS = (RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER, MOUTH_RIGHT, MOUTH_LEFT)


@dataclass(frozen=True)
class AlignTemplate:
    """Where the alignment landmarks sit in a unit crop.

    points: (6, 2) float, unit crop coordinates, in the order of ``landmark_ids``.
    """

    name: str
    points: np.ndarray
    landmark_ids: tuple[int, ...] = ALIGN_LANDMARKS


# FFHQ framing. Measured by running mediapipe face mesh on the FFHQ/CelebA-HQ aligned crops of the
# shared data set (111 faces) and taking the median position of each landmark
# (`python -m bench.derive_template`), so our crops frame faces the way FFHQ-trained generators expect.
FFHQ_TEMPLATE = AlignTemplate(
    name="ffhq",
    points=np.array(
        [
            [0.3259, 0.4770],
            [0.4339, 0.4884],
            [0.5667, 0.4884],
            [0.6764, 0.4788],
            [0.3934, 0.7331],
            [0.6078, 0.7319],
        ],
        dtype=np.float64,
    ),
)

TEMPLATES = {FFHQ_TEMPLATE.name: FFHQ_TEMPLATE}


@dataclass(frozen=True)
class Similarity:
    """Placement of a square face crop in an image (see module docstring for conventions)."""

    cx: float
    cy: float
    log_side: float
    angle: float

    @property
    def side(self) -> float:
        """Crop side length in image pixels."""
        return math.exp(self.log_side)

    def to_crop_matrix(self, crop_size: int) -> np.ndarray:
        """(2, 3) float64 affine mapping image pixels to crop pixels of a ``crop_size`` crop."""
        k = crop_size / self.side
        cos, sin = math.cos(self.angle) * k, math.sin(self.angle) * k
        # crop = S/2 + k * R(-angle) @ (p - c)
        tx = crop_size / 2 - (cos * self.cx + sin * self.cy)
        ty = crop_size / 2 - (-sin * self.cx + cos * self.cy)
        return np.array([[cos, sin, tx], [-sin, cos, ty]], dtype=np.float64)

    def to_image_matrix(self, crop_size: int) -> np.ndarray:
        """(2, 3) float64 affine mapping crop pixels back to image pixels (exact inverse)."""
        return cv2.invertAffineTransform(self.to_crop_matrix(crop_size))

    def corners(self) -> np.ndarray:
        """(4, 2) image coordinates of the crop's corners."""
        unit = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
        return unit_to_image(self, unit)

    def as_vector(self) -> np.ndarray:
        return np.array([self.cx, self.cy, self.log_side, self.angle], dtype=np.float64)

    @staticmethod
    def from_vector(v: np.ndarray) -> Similarity:
        return Similarity(float(v[0]), float(v[1]), float(v[2]), float(v[3]))


def unit_to_image(sim: Similarity, unit_points: np.ndarray) -> np.ndarray:
    """Map (N, 2) unit crop coordinates to (N, 2) image pixels."""
    rot = sim.side * np.array([[math.cos(sim.angle), -math.sin(sim.angle)], [math.sin(sim.angle), math.cos(sim.angle)]])
    return (np.asarray(unit_points, dtype=np.float64) - 0.5) @ rot.T + np.array([sim.cx, sim.cy])


def fit_similarity(image_points: np.ndarray, unit_points: np.ndarray) -> Similarity:
    """Least-squares similarity (no reflection) taking ``unit_points`` onto ``image_points``.

    Closed form in complex numbers: p = a q + b with a = side·e^{iθ}. Every point counts (no RANSAC):
    face mesh landmarks have no gross outliers, and a plain fit is smooth over time.
    image_points, unit_points: (N, 2), N >= 2.
    """
    p = np.asarray(image_points, dtype=np.float64)
    q = np.asarray(unit_points, dtype=np.float64)
    pc = (p[:, 0] + 1j * p[:, 1]) - (p[:, 0] + 1j * p[:, 1]).mean()
    qz = q[:, 0] + 1j * q[:, 1]
    qc = qz - qz.mean()
    denom = float(np.sum(np.abs(qc) ** 2))
    if denom <= 0 or not np.all(np.isfinite(p)):
        raise ValueError("degenerate landmarks for a similarity fit")
    a = np.sum(pc * np.conj(qc)) / denom
    if abs(a) < 1e-9:
        raise ValueError("landmarks collapse to a point")
    b = (p[:, 0] + 1j * p[:, 1]).mean() - a * qz.mean()
    centre = b + a * (0.5 + 0.5j)
    return Similarity(float(centre.real), float(centre.imag), math.log(abs(a)), float(np.angle(a)))


def similarity_from_landmarks(landmarks: np.ndarray, template: AlignTemplate = FFHQ_TEMPLATE) -> Similarity:
    """Alignment of one face from its face mesh landmarks, (>=468, 2) image pixels."""
    return fit_similarity(landmarks[list(template.landmark_ids)], template.points)


def warp_crop(image: np.ndarray, sim: Similarity, crop_size: int) -> np.ndarray:
    """Anti-aliased aligned crop: (H, W, C) uint8 image -> (crop_size, crop_size, C) uint8.

    Only the region under the crop is touched. When the crop shrinks the face, that region is first
    low-passed (pyramid halving plus a matched blur), so a bilinear warp does not alias fine detail
    into shimmering.
    Outside the image the border is replicated (the network sees plausible content; blend-back only
    uses the part inside the frame).
    """
    h, w = image.shape[:2]
    corners = sim.corners()
    x0 = min(max(int(math.floor(corners[:, 0].min())) - 2, 0), w - 1)
    y0 = min(max(int(math.floor(corners[:, 1].min())) - 2, 0), h - 1)
    x1 = max(min(int(math.ceil(corners[:, 0].max())) + 3, w), x0 + 1)
    y1 = max(min(int(math.ceil(corners[:, 1].max())) + 3, h), y0 + 1)
    roi = image[y0:y1, x0:x1]
    step = 1  # image pixels per roi pixel
    scale = crop_size / sim.side  # crop pixels per image pixel
    # Halve with pyrDown (Gaussian + decimate, an order of magnitude faster than INTER_AREA) while
    # the crop shrinks by 2 or more, then blur for what is left, so the bilinear warp never aliases.
    while scale * step <= 0.5 and min(roi.shape[:2]) >= 4:
        roi = cv2.pyrDown(roi)  # roi pixel i sits on previous pixel 2i
        step *= 2
    rest = scale * step
    if rest < 0.9:
        roi = cv2.GaussianBlur(roi, (0, 0), 0.6 * math.sqrt(1.0 / rest**2 - 1.0))
    roi_to_image = np.array([[step, 0, x0], [0, step, y0]], dtype=np.float64)
    matrix = compose_affine(sim.to_crop_matrix(crop_size), roi_to_image)
    return cv2.warpAffine(roi, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affine applying ``inner`` first, then ``outer``."""
    return outer[:, :2] @ inner + np.hstack([np.zeros((2, 2)), outer[:, 2:]])


class OneEuroFilter:
    """One Euro filter (Casiez et al. 2012) on a vector, driven by real timestamps.

    Low cutoff when still (kills jitter), higher cutoff when moving fast (kills lag). The speed that
    raises the cutoff is divided by a caller-given ``scale`` per step, so thresholds can be stated in
    face sizes per second instead of pixels.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float = 1.0) -> None:
        self.min_cutoff = np.asarray(min_cutoff, dtype=np.float64)
        self.beta = np.asarray(beta, dtype=np.float64)
        self.d_cutoff = d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / dt)

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float, scale: np.ndarray | float = 1.0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or t <= self._t:
            if self._x is None or self._t is None:
                self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return self._x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx / scale)
        a = self._alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


@dataclass(frozen=True)
class SmoothingConfig:
    """One Euro settings for the face transform. Speeds are in face sizes (or radians) per second."""

    min_cutoff: float = 0.6
    beta: float = 4.0
    d_cutoff: float = 1.0
    enabled: bool = True


class SimilaritySmoother:
    """Smooths a face's (cx, cy, log side, angle) over time, with the centre's speed in face sizes/s."""

    def __init__(self, config: SmoothingConfig = SmoothingConfig()) -> None:
        self.config = config
        self._filter = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff)
        self._last_angle: float | None = None

    def reset(self) -> None:
        self._filter.reset()
        self._last_angle = None

    def __call__(self, sim: Similarity, t: float) -> Similarity:
        angle = sim.angle
        if self._last_angle is not None:  # unwrap so a ±π crossing is not a jump
            angle = self._last_angle + math.remainder(angle - self._last_angle, 2 * math.pi)
        self._last_angle = angle
        raw = np.array([sim.cx, sim.cy, sim.log_side, angle])
        if not self.config.enabled:
            return Similarity.from_vector(raw)
        side = sim.side
        return Similarity.from_vector(self._filter(raw, t, scale=np.array([side, side, 1.0, 1.0])))
