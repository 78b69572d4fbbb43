"""Fixtures for the training tests: an aligned astronaut face crop (public-domain NASA portrait)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut_crop() -> np.ndarray:
    """(256, 256, 3) uint8 BGR: skimage's astronaut aligned with the run-time FFHQ template."""
    from skimage import data

    from engine.align import similarity_from_landmarks, warp_crop
    from engine.tracking import landmarks_from_image

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    landmarks = landmarks_from_image(image)
    assert landmarks is not None
    return warp_crop(image, similarity_from_landmarks(landmarks), 256)
