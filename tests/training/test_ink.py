import cv2
import numpy as np
import pytest

from training.metrics import identity_similarity
from training.teachers.ink import InkTeacher


@pytest.fixture(scope="module")
def teacher():
    return InkTeacher()


def test_ink_is_deterministic_and_keeps_shape(teacher, astronaut_crop):
    a, b = teacher([astronaut_crop]), teacher([astronaut_crop])
    assert a[0].shape == astronaut_crop.shape and a[0].dtype == np.uint8
    assert np.array_equal(a[0], b[0])


def test_ink_flattens_colours_and_inks_edges(teacher):
    img = np.full((128, 128, 3), (60, 140, 200), np.uint8)
    cv2.rectangle(img, (40, 40), (88, 88), (200, 220, 240), -1)
    img = np.clip(img + np.random.default_rng(0).normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    out = teacher([img])[0].astype(int)
    grey = out.mean(axis=2)
    border, inside = grey[38:42, 50:80].mean(), grey[55:75, 55:75].mean()
    assert border < inside - 60  # a dark ink line on the square's edge
    assert out[55:75, 55:75].std(axis=(0, 1)).max() < 2.0  # noise flattened away inside


def test_ink_keeps_the_identity_of_a_face(teacher, astronaut_crop):
    styled = teacher([astronaut_crop])[0]
    assert identity_similarity([astronaut_crop], [styled])[0] > 0.6
    assert len(np.unique(styled.reshape(-1, 3), axis=0)) < len(np.unique(astronaut_crop.reshape(-1, 3), axis=0)) / 4
