"""The one image convention: tensors are RGB in [-1, 1] whatever order the arrays they came from."""

import numpy as np
import pytest
import torch

from training.errors import TrainingError
from training.images import grid, to_tensor, to_uint8, to_uint8_tensor


def test_round_trips_are_exact_in_either_colour_order():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    for order in ("bgr", "rgb"):
        x = to_tensor(images, order)
        assert x.shape == (3, 3, 8, 6) and x.dtype == torch.float32 and -1 <= x.min() <= x.max() <= 1
        assert np.array_equal(to_uint8(x, order), images)
    assert np.array_equal(to_uint8(to_tensor(images, "bgr"), "rgb"), images[..., ::-1])
    held = to_uint8_tensor(images, "bgr")  # the compact form training sets are held in
    assert held.dtype == torch.uint8 and torch.equal(held.float() / 127.5 - 1, to_tensor(images, "bgr"))


def test_the_tensor_channel_order_is_rgb():
    red_bgr = np.zeros((1, 2, 2, 3), np.uint8)
    red_bgr[..., 2] = 255
    x = to_tensor(red_bgr, "bgr")
    assert x[0, 0].min() == 1 and x[0, 1:].max() == -1
    assert torch.equal(x, to_tensor(red_bgr[..., ::-1], "rgb"))
    assert to_tensor(list(red_bgr), "bgr").shape == (1, 3, 2, 2)


def test_out_of_range_values_clip_and_bad_arrays_are_refused():
    assert np.array_equal(to_uint8(torch.tensor([[[[3.0]], [[-5.0]], [[0.0]]]]), "rgb"), [[[[255, 0, 128]]]])
    with pytest.raises(TrainingError, match="uint8 BGR"):
        to_tensor(np.zeros((1, 4, 4, 3), np.float32), "bgr")
    with pytest.raises(TrainingError, match=r"\(N, H, W, 3\)"):
        to_tensor(np.zeros((4, 4, 3), np.uint8), "rgb")


def test_grid_tiles_with_white_gaps():
    tiles = np.zeros((5, 4, 4, 3), np.uint8)
    out = grid(tiles, cols=3, pad=1)
    assert out.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert out[0].min() == 255 and out[1:5, 1:5].max() == 0 and out[6:10, 11:15].min() == 255  # 6th slot empty
