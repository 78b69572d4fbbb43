"""The training side's one image convention, and the helpers every stage shares.

Arrays are ``(N, H, W, 3)`` uint8 and say their colour order: BGR where they come from or go to OpenCV
(crops, pairs, files), RGB where they are grids and videos. Tensors are always ``(N, 3, H, W)`` float RGB
in [-1, 1], the range every network here trains in. Conversions name the array's order explicitly, so a
channel swap can only happen in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from training.errors import TrainingError

log = logging.getLogger(__name__)

Order = Literal["bgr", "rgb"]


def to_uint8_tensor(images: Sequence[np.ndarray] | np.ndarray, order: Order) -> torch.Tensor:
    """uint8 images in colour ``order`` (a list or an (N, H, W, 3) array) → (N, 3, H, W) uint8 RGB, the
    compact form training sets are held in."""
    arr = images if isinstance(images, np.ndarray) else np.stack([np.asarray(im) for im in images])
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise TrainingError(f"expected (N, H, W, 3) uint8 {order.upper()} images, got {arr.shape} {arr.dtype}")
    if order == "bgr":
        arr = arr[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def to_tensor(
    images: Sequence[np.ndarray] | np.ndarray, order: Order, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """uint8 images in colour ``order`` (a list or an (N, H, W, 3) array) → (N, 3, H, W) float RGB in [-1, 1]."""
    return to_uint8_tensor(images, order).to(device).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor, order: Order) -> np.ndarray:
    """(N, 3, H, W) float RGB in [-1, 1] → (N, H, W, 3) uint8 in colour ``order`` (clipped, rounded)."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(arr[..., ::-1]) if order == "bgr" else arr


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``[N, H, W, 3]`` uint8 images into one ``[rows·H, cols·W, 3]`` image with white gaps."""
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y : y + h, x : x + w] = images[i]
    return out


def save_rgb(path: Path | str, rgb: np.ndarray) -> Path:
    """Write one RGB uint8 image (parent folders created); a TrainingError when it cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise TrainingError(f"{path}: could not write the image")
    return path


def save_grid(path: Path | str, images: torch.Tensor | np.ndarray, cols: int | None = None) -> Path:
    """A grid of network outputs (a tensor) or RGB uint8 images."""
    arr = to_uint8(images, "rgb") if isinstance(images, torch.Tensor) else images
    return save_rgb(path, grid(arr, cols))


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


def write_video(path: Path | str, frames: Iterable[np.ndarray], fps: float = 24.0) -> Path:
    """Write RGB uint8 frames: H.264 through PyAV for ``.mp4`` when available, else OpenCV (mp4v/MJPG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    try:
        import av
    except ImportError:
        av = None
    if av is not None and path.suffix.lower() == ".mp4":
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=int(round(fps)))
            stream.width, stream.height = w - w % 2, h - h % 2
            stream.pix_fmt = "yuv420p"
            for frame in _chain(first, frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: h - h % 2, : w - w % 2]), format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        return path
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (w, h))
    if not writer.isOpened():
        raise TrainingError(f"{path}: OpenCV cannot open a video writer")
    try:
        for frame in _chain(first, frames):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def _chain(first, rest):
    yield first
    yield from rest
