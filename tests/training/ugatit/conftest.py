"""Toy two-domain data for the U-GAT-IT tests: astronaut face crops (A) and colour-shifted crops (B)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def face_crops(n: int, size: int, seed: int) -> list[np.ndarray]:
    """``n`` BGR crops of the public-domain astronaut portrait around her face, jittered in position and scale."""
    from skimage import data

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        side = int(rng.integers(150, 220))
        cx, cy = 205 + int(rng.integers(-20, 21)), 95 + int(rng.integers(-15, 16))
        y0, x0 = max(cy - side // 2, 0), max(cx - side // 2, 0)
        crops.append(cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA))
    return crops


def stylize(bgr: np.ndarray) -> np.ndarray:
    """Domain B: red and blue swapped and the levels posterised to 4 steps — a strong, learnable shift."""
    return (bgr[:, :, ::-1] // 64 * 64 + 32).astype(np.uint8)


def write_folder(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks on a shared 2-core machine: one thread is faster and immune to oversubscription."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def toy_domains(tmp_path_factory) -> tuple[Path, Path]:
    """(faces folder, styles folder), 12 images of 48² each; B is made from other crops than A (unpaired)."""
    root = tmp_path_factory.mktemp("ugatit_toy")
    faces = write_folder(root / "faces", face_crops(12, 48, seed=1))
    styles = write_folder(root / "styles", [stylize(c) for c in face_crops(12, 48, seed=2)])
    return faces, styles
