"""Image conversions, sample grids and interpolation videos for the StyleGAN stages."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch

from training.errors import TrainingError

log = logging.getLogger(__name__)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` float in [-1, 1] → ``[N, H, W, 3]`` uint8 RGB."""
    x = (images.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 RGB → ``[N, 3, H, W]`` float in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise TrainingError(f"{path}: could not write the image")
    return path


def save_grid(path: Path | str, images: torch.Tensor | np.ndarray, cols: int | None = None) -> Path:
    arr = to_uint8(images) if isinstance(images, torch.Tensor) else images
    return save_rgb(path, grid(arr, cols))


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
