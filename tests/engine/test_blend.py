import math

import cv2
import numpy as np

from engine.align import Similarity
from engine.blend import ColorMatcher, feather_mask, paste_back


def test_feather_mask_is_one_inside_and_zero_at_every_crop_edge():
    mask = feather_mask(256, 0.1)
    assert mask[128, 128] > 0.99
    edges = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    assert edges.max() < 0.01
    assert not mask.flags.writeable


def test_paste_back_matches_a_float_composite_of_the_warped_crop_and_mask():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    crop = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    mask = feather_mask(256, 0.1)
    sim = Similarity(640.0, 380.0, math.log(600.0), 0.3)
    to_image = sim.to_image_matrix(256)
    colour = cv2.warpAffine(crop, to_image, (1280, 720), flags=cv2.INTER_LINEAR).astype(np.float32)
    weight = 0.7 * cv2.warpAffine(mask, to_image, (1280, 720), flags=cv2.INTER_LINEAR)[..., None]
    expected = colour * weight + frame * (1 - weight)
    out = frame.copy()
    paste_back(out, crop, sim, mask, 0.7)
    error = np.abs(out - expected)
    assert np.percentile(error, 99) <= 2.0
    # premultiplied interpolation differs from this straight-alpha reference where both colour and
    # alpha change between neighbouring pixels (random noise here: the worst case)
    assert error.max() <= 8.0


def test_paste_back_blends_by_mask_and_alpha():
    frame = np.zeros((400, 400, 3), np.uint8)
    crop = np.full((256, 256, 3), 200, np.uint8)
    sim = Similarity(200.0, 200.0, math.log(300.0), 0.0)
    paste_back(frame, crop, sim, feather_mask(256, 0.1), 1.0)
    assert frame[200, 200].tolist() == [200, 200, 200]  # centre: full style
    assert frame[5, 5].tolist() == [0, 0, 0]  # outside the crop: untouched
    half = np.zeros_like(frame)
    paste_back(half, crop, sim, feather_mask(256, 0.1), 0.5)
    assert abs(int(half[200, 200, 0]) - 100) <= 1


def test_color_matcher_moves_toward_the_input_statistics_smoothly():
    mask = feather_mask(64, 0.1)
    source = np.full((64, 64, 3), 100, np.uint8)
    stylized = np.full((64, 64, 3), 180, np.uint8)
    matcher = ColorMatcher(smoothing=0.0)
    out = matcher(source, stylized, mask, strength=1.0)
    assert abs(int(out[32, 32, 0]) - 100) <= 2
    assert np.array_equal(ColorMatcher()(source, stylized, mask, strength=0.0), stylized)
