"""Blend-back: paste a stylized crop into the frame through a feathered mask, touching only the ROI.

The mask is built once per (crop size, feather) in crop space and warped with the exact inverse of
the crop transform, so the pasted face lines up with the crop the network saw. Compositing is uint8
arithmetic on the face's bounding box only: the cost does not grow with the frame size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from engine.align import TEMPLATES, Similarity, compose_affine


@lru_cache(maxsize=16)
def feather_mask(crop_size: int, feather: float) -> np.ndarray:
    """(S, S) float32 soft ellipse in [0, 1] covering the face and hair of an FFHQ-aligned crop (read-only).

    The mask for bundles whose students predict no alpha. feather: blur sigma as a fraction of the crop
    size. The blurred ellipse is multiplied by :func:`crop_edge_window`.
    """
    size = crop_size
    mask = np.zeros((size, size), np.float32)
    centre = (round(size * 0.5), round(size * 0.52))
    axes = (round(size * 0.40), round(size * 0.46))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(feather * size, 0.5)) * crop_edge_window(size)
    mask.flags.writeable = False
    return mask


@lru_cache(maxsize=16)
def crop_edge_window(crop_size: int) -> np.ndarray:
    """(S, S) float32 window, 1 inside and easing to 0 over the crop's outer 8 % (read-only).

    Every blend mask (the fixed feather and a network's predicted alpha) is multiplied by it, so no crop
    edge can ever show as a seam.
    """
    t = (np.arange(crop_size, dtype=np.float32) + 0.5) / crop_size
    edge = np.clip(np.minimum(t, 1.0 - t) / 0.08, 0.0, 1.0)
    ramp = edge * edge * (3.0 - 2.0 * edge)  # smoothstep
    window = ramp[:, None] * ramp[None, :]
    window.flags.writeable = False
    return window


def learned_mask(alpha: np.ndarray) -> np.ndarray:
    """(S, S) uint8 alpha predicted by a student -> (S, S) float32 blend mask in [0, 1], crop edges eased."""
    return cv2.multiply(alpha, crop_edge_window(alpha.shape[0]), scale=1 / 255, dtype=cv2.CV_32F)


def mix(photo: np.ndarray, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8: ``image`` where the (S, S) float ``mask`` in [0, 1] is 1, ``photo`` where it is 0."""
    m = mask[..., None]
    return np.clip(photo.astype(np.float32) * (1.0 - m) + image[:, :, :3] * m + 0.5, 0, 255).astype(np.uint8)


def face_roi(sim: Similarity, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Integer (x0, y0, x1, y1) box of the crop inside the frame, or None when it lies outside."""
    h, w = frame_shape[:2]
    corners = sim.corners()
    x0 = max(int(math.floor(corners[:, 0].min())), 0)
    y0 = max(int(math.floor(corners[:, 1].min())), 0)
    x1 = min(int(math.ceil(corners[:, 0].max())) + 1, w)
    y1 = min(int(math.ceil(corners[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste_back(frame: np.ndarray, crop: np.ndarray, sim: Similarity, mask: np.ndarray, alpha: float) -> None:
    """Composite ``crop`` (S, S, 3) uint8 into ``frame`` (H, W, 3) uint8 in place.

    mask: (S, S) float32 in [0, 1] from :func:`feather_mask`. alpha: overall opacity 0..1
    (intensity × track fade) applied on top of the mask. The crop is premultiplied by its 8-bit alpha
    in crop space (S² pixels, cheap), warped once as BGRA, and composited as ``warped + frame × (1 − a)``
    with saturating uint8 SIMD operations: one warp and three passes over the ROI, no float image of the
    ROI's size (about half the cost of warping colour and a float mask separately and blending in float).
    """
    if alpha <= 0:
        return
    roi = face_roi(sim, frame.shape)
    if roi is None:
        return
    x0, y0, x1, y1 = roi
    size = crop.shape[0]
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    to_roi = compose_affine(shift, sim.to_image_matrix(size))
    a8 = cv2.convertScaleAbs(mask, alpha=255.0 * min(alpha, 1.0))
    premultiplied = cv2.multiply(crop, cv2.cvtColor(a8, cv2.COLOR_GRAY2BGR), scale=1 / 255)
    bgra = cv2.merge([premultiplied, a8])
    # outside the crop the warp reads transparent black; the mask is zero at the crop's edges anyway
    warped = cv2.warpAffine(bgra, to_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    keep = cv2.cvtColor(cv2.bitwise_not(cv2.extractChannel(warped, 3)), cv2.COLOR_GRAY2BGR)
    region = frame[y0:y1, x0:x1]
    region[...] = cv2.add(cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR), cv2.multiply(region, keep, scale=1 / 255))


@dataclass(frozen=True)
class ColorStats:
    mean: np.ndarray  # (3,) float32
    std: np.ndarray  # (3,) float32


def masked_stats(crop: np.ndarray, mask: np.ndarray) -> ColorStats:
    mean, std = cv2.meanStdDev(crop, mask=(mask > 0.5).astype(np.uint8))
    return ColorStats(mean.ravel().astype(np.float32), np.maximum(std.ravel().astype(np.float32), 1.0))


class ColorMatcher:
    """Partial colour transfer: pull the stylized face's per-channel mean/std toward the input's.

    Keeps a stylized face consistent with the scene's lighting. Statistics are EMA-smoothed so the
    correction itself never flickers.
    """

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self._gain: np.ndarray | None = None
        self._offset: np.ndarray | None = None

    def reset(self) -> None:
        self._gain = self._offset = None

    def __call__(self, input_crop: np.ndarray, stylized: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
        """stylized: (S, S, 3) BGR or (S, S, 4) BGRA; an alpha channel passes through unchanged."""
        if strength <= 0:
            return stylized
        alpha = stylized[:, :, 3:]
        stylized = np.ascontiguousarray(stylized[:, :, :3])
        src, dst = masked_stats(stylized, mask), masked_stats(input_crop, mask)
        gain = 1.0 + strength * (dst.std / src.std - 1.0)
        offset = strength * dst.mean + (1.0 - strength) * src.mean - gain * src.mean
        if self._gain is None or self._offset is None:
            self._gain, self._offset = gain, offset
        else:
            k = self.smoothing
            self._gain = k * self._gain + (1 - k) * gain
            self._offset = k * self._offset + (1 - k) * offset
        out = np.clip(stylized.astype(np.float32) * self._gain + self._offset + 0.5, 0, 255).astype(np.uint8)
        return np.dstack([out, alpha]) if alpha.size else out


# L*: the guard's bound for styles trained to keep the photo's skin tone. The darkest quarter of faces may
# move by at most 8 L* (docs/styles.md). Measured by the skin model on held-out faces, a network lightens
# the whole skin, shadows most, about 1.5x as much as the guard's face-region mean shows; so the bound is
# tighter than 8.
SKIN_TONE_LIMIT = 4.0


@lru_cache(maxsize=16)
def face_skin_region(crop_size: int, template: str) -> np.ndarray:
    """(S, S) uint8 mask of the face oval without eyes, brows and mouth, in a crop aligned to ``template``.

    Mostly skin on any face, whatever the hair or the style's redrawn eyes: the skin-tone guard measures
    lightness there. Placed from the template's eye and mouth corners (read-only).
    """
    pts = TEMPLATES[template].points * crop_size
    eyes = (pts[0:2].mean(axis=0), pts[2:4].mean(axis=0))
    mouth = pts[4:6].mean(axis=0)
    between_eyes = float(np.linalg.norm(eyes[1] - eyes[0]))
    eyes_to_mouth = float(mouth[1] - (eyes[0][1] + eyes[1][1]) / 2)
    mask = np.zeros((crop_size, crop_size), np.uint8)

    def ellipse(centre, width: float, height: float, value: int) -> None:
        cv2.ellipse(mask, (round(centre[0]), round(centre[1])), (round(width), round(height)), 0, 0, 360, value, -1)

    centre_x = (eyes[0][0] + eyes[1][0]) / 2
    ellipse((centre_x, mouth[1] - 0.6 * eyes_to_mouth), between_eyes, 1.25 * eyes_to_mouth, 255)
    for eye in eyes:
        ellipse(eye, 0.39 * between_eyes, 0.22 * eyes_to_mouth, 0)
    ellipse(mouth, 0.55 * between_eyes, 0.22 * eyes_to_mouth, 0)
    mask.flags.writeable = False
    return mask


def mean_lightness(crop: np.ndarray, mask: np.ndarray) -> float:
    """Mean CIE L* (0..100) of a BGR or BGRA uint8 crop inside a uint8 mask (converted within its box only)."""
    x, y, w, h = cv2.boundingRect(mask)
    box = crop[y : y + h, x : x + w]
    if box.shape[2] == 4:
        box = cv2.cvtColor(box, cv2.COLOR_BGRA2BGR)
    return cv2.mean(cv2.cvtColor(box, cv2.COLOR_BGR2LAB), mask=mask[y : y + h, x : x + w])[0] * 100 / 255


# L* of each sRGB grey level: a lightness change becomes the grey-level offset that makes it
_GREY_LIGHTNESS = cv2.cvtColor(np.linspace(0, 1, 256, dtype=np.float32)[None, :, None].repeat(3, 2), cv2.COLOR_BGR2LAB)[
    0, :, 0
]


class SkinToneGuard:
    """Keeps a style from moving the face's skin lightness by more than ``limit`` L*.

    Teachers like anime_jp lighten dark skin by 30 L*. Training takes most of that away (the
    keep-skin-tone pairs); this takes away what a network still adds, on darker faces most: the mean L*
    of the face region in the photo and in the stylized crop are compared, and whatever lies beyond
    ``limit`` comes off the whole stylized crop's lightness, so shading and hue stay the style's. The
    correction is EMA-smoothed per face, so it never flickers.
    """

    def __init__(self, smoothing: float = 0.9) -> None:
        self.smoothing = smoothing
        self._excess: float | None = None

    def reset(self) -> None:
        self._excess = None

    def __call__(self, input_crop: np.ndarray, stylized: np.ndarray, region: np.ndarray, limit: float) -> np.ndarray:
        """stylized: (S, S, 3) BGR or (S, S, 4) BGRA; an alpha channel passes through unchanged."""
        if limit <= 0:
            return stylized
        now = mean_lightness(stylized, region)
        shift = now - mean_lightness(input_crop, region)
        excess = shift - float(np.clip(shift, -limit, limit))
        k = self.smoothing
        self._excess = excess if self._excess is None else k * self._excess + (1 - k) * excess
        if abs(self._excess) < 0.5:  # below a grey level: leave the network's output untouched
            return stylized
        # an equal offset on B, G and R moves lightness and keeps the hue, at a fraction of a Lab round trip
        grey = np.interp([now, now - self._excess], _GREY_LIGHTNESS, np.arange(256))
        offset = float(grey[1] - grey[0])
        return cv2.add(stylized, (offset, offset, offset, 0.0))
