"""Style folders: broken files skipped with a reason, grey/RGBA/16-bit converted, mixed sizes, too few images."""

import logging

import cv2
import numpy as np
import pytest

from training.errors import DatasetError
from training.imagefolder import load_image_folder


def _write(folder, name, img):
    assert cv2.imwrite(str(folder / name), img)


def test_mixed_folder_loads_usable_images_and_names_the_skipped(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for i in range(6):
        _write(tmp_path, f"colour_{i}.jpg", rng.integers(0, 255, (40 + 10 * i, 70 - 5 * i, 3), dtype=np.uint8))
    _write(tmp_path, "grey.png", np.full((30, 30), 200, np.uint8))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 2] = 255  # red (BGR order) ...
    rgba[:16, :, 3] = 255  # ... opaque on the top half, transparent below
    _write(tmp_path, "alpha.png", rgba)
    _write(tmp_path, "deep.png", np.full((20, 20, 3), 65535, np.uint16))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    sub = tmp_path / "more"
    sub.mkdir()
    _write(sub, "nested.png", np.zeros((64, 64, 3), np.uint8))

    with caplog.at_level(logging.WARNING):
        data = load_image_folder(tmp_path, 16)
    assert data.images.shape == (10, 16, 16, 3) and data.images.dtype == np.uint8
    skipped = {p.name: reason for p, reason in data.skipped}
    assert set(skipped) == {"broken.jpg", "empty.png", "notes.txt"}
    assert "cannot be decoded" in skipped["broken.jpg"] and "not an image" in skipped["notes.txt"]
    assert all(name in caplog.text for name in skipped)
    by_name = {p.name: img for p, img in zip(data.paths, data.images)}
    assert np.all(by_name["grey.png"] == 200)
    assert np.all(by_name["deep.png"] == 255)
    alpha = by_name["alpha.png"]
    assert tuple(alpha[2, 8]) == (255, 0, 0)  # opaque red, RGB order
    assert tuple(alpha[13, 8]) == (255, 255, 255)  # transparent → white


def test_fewer_than_eight_usable_images_is_a_clear_error(tmp_path):
    for i in range(7):
        _write(tmp_path, f"{i}.png", np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"only 7 usable image\(s\), at least 8 are needed \(1 skipped"):
        load_image_folder(tmp_path, 16)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nope: not a folder"):
        load_image_folder(tmp_path / "nope", 16)


def test_several_folders_are_concatenated_in_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i in range(5):
        _write(a, f"{i}.png", np.full((10, 10, 3), 10, np.uint8))
        _write(b, f"{i}.png", np.full((10, 10, 3), 20, np.uint8))
    data = load_image_folder([a, b], 8)
    assert len(data) == 10 and data.images[0].max() == 10 and data.images[-1].max() == 20


def test_real_style_set_loads(shared_data):
    data = load_image_folder(shared_data / "styles" / "dsg_cartoon", 64)
    assert len(data) == 317 and data.images.shape[1:] == (64, 64, 3) and not data.skipped
