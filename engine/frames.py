"""Frame values shared by every stage, and normalisation of whatever a source delivers to BGR uint8."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    image: (H, W, 3) uint8 BGR. timestamp: seconds, monotonic within a source. index: 0-based.
    cut: the frame does not continue the one before (another still image): tracks start over.
    """

    image: np.ndarray
    timestamp: float
    index: int
    cut: bool = False


def decode_image(data: np.ndarray) -> np.ndarray | None:
    """An encoded image file's pixels as OpenCV decodes them (grey, BGR or BGRA; 8 or 16 bit), upright: a
    JPEG is turned by its EXIF orientation, as phone photos need. Other formats keep their alpha channel
    (OpenCV applies the orientation only when it may drop alpha). None when the data is no image."""
    if data.size == 0:
        return None
    is_jpeg = data[:3].tobytes() == b"\xff\xd8\xff"  # JPEG has no alpha to keep
    return cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if is_jpeg else cv2.IMREAD_UNCHANGED)


def read_image_file(path) -> np.ndarray | None:
    """:func:`decode_image` of a file (None when it cannot be read or decoded). Unlike ``cv2.imread``, a
    truncated JPEG is refused rather than returned with its missing part grey."""
    try:
        return decode_image(np.fromfile(path, np.uint8))
    except OSError:
        return None


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Return a contiguous (H, W, 3) uint8 BGR view/copy of a grey, BGR, BGRA or 16-bit/float image.

    Sources and callers hand us whatever their device produces; every later stage assumes BGR uint8.
    Raises ValueError for shapes that are not an image.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"not an image: {type(image).__name__} {getattr(image, 'shape', None)}")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif np.issubdtype(image.dtype, np.floating):
            image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
        else:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if channels != 3:
        raise ValueError(f"unsupported channel count {channels}")
    return np.ascontiguousarray(image)
