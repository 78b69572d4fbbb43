"""Load a folder (or several) of style images into one uint8 array at the training resolution.

Real style folders are messy: some files are broken or not images, some are grey or carry an alpha
channel, sizes differ. Each usable file is decoded with OpenCV, converted to RGB (grey replicated,
alpha composited over white, 16-bit scaled down), centre-cropped to a square and resized with area
averaging (cubic when enlarging). Unusable files are skipped and the reason is logged and returned;
fewer than ``min_images`` usable images is an error, since a GAN cannot learn a style from so few.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.frames import decode_image
from training.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MIN_IMAGES = 8


@dataclass(frozen=True)
class ImageSet:
    """``images``: ``[N, R, R, 3]`` uint8 RGB; ``paths[i]`` is the source of ``images[i]``."""

    images: np.ndarray
    paths: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]

    def __len__(self) -> int:
        return len(self.paths)


def to_rgb8(image: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Any OpenCV-decoded image (grey, BGR, BGRA; 8 or 16 bit) → ``[H, W, 3]`` uint8 RGB."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DatasetError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        bgr = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return cv2.cvtColor(bgr.round().astype(np.uint8), cv2.COLOR_BGR2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise DatasetError(f"{path}: unsupported channel count {channels}")


def square_resize(rgb: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crop to a square, then resize to ``resolution``² (area when shrinking, cubic when enlarging)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    rgb = rgb[y0 : y0 + s, x0 : x0 + s]
    if s == resolution:
        return np.ascontiguousarray(rgb)
    interp = cv2.INTER_AREA if s > resolution else cv2.INTER_CUBIC
    return cv2.resize(rgb, (resolution, resolution), interpolation=interp)


def list_image_files(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursively), sorted, so the dataset order is reproducible."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def load_image_folder(
    folders: Path | str | Iterable[Path | str], resolution: int, min_images: int = MIN_IMAGES
) -> ImageSet:
    """Decode every image under ``folders`` at ``resolution``²; raise DatasetError when too few are usable."""
    if isinstance(folders, str | Path):
        folders = [folders]
    folders = [Path(f) for f in folders]
    images: list[np.ndarray] = []
    paths: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"{folder}: not a folder of images")
        for path in list_image_files(folder):
            reason = None
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                reason = f"not an image file (suffix {path.suffix or 'none'})"
            else:
                decoded = decode_image(np.fromfile(path, dtype=np.uint8))
                if decoded is None:
                    reason = "cannot be decoded (broken or truncated file)"
                elif min(decoded.shape[:2]) < 8:
                    reason = f"too small ({decoded.shape[1]}x{decoded.shape[0]})"
                else:
                    try:
                        images.append(square_resize(to_rgb8(decoded, path), resolution))
                        paths.append(path)
                    except DatasetError as exc:
                        reason = str(exc).split(": ", 1)[-1]
            if reason is not None:
                log.warning("skipping %s: %s", path, reason)
                skipped.append((path, reason))
    names = ", ".join(str(f) for f in folders)
    if len(images) < min_images:
        raise DatasetError(
            f"{names}: only {len(images)} usable image(s), at least {min_images} are needed"
            + (f" ({len(skipped)} skipped, see the log)" if skipped else "")
        )
    log.info("loaded %d images from %s at %d² (%d skipped)", len(images), names, resolution, len(skipped))
    return ImageSet(np.stack(images), tuple(paths), tuple(skipped))
