"""Fixtures for the training tests: the aligned astronaut face (public-domain NASA portrait), ink pairs."""

from __future__ import annotations

import json
from pathlib import Path

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


def _variants(crop: np.ndarray, n: int) -> list[np.ndarray]:
    """n distinct views of one aligned face: small rotations, shifts, zooms, flips and brightness changes."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        angle, scale = rng.uniform(-8, 8), rng.uniform(0.92, 1.08)
        m = cv2.getRotationMatrix2D((128 + rng.uniform(-6, 6), 128 + rng.uniform(-6, 6)), angle, scale)
        view = cv2.warpAffine(crop, m, (256, 256), borderMode=cv2.BORDER_REFLECT)
        view = cv2.convertScaleAbs(view, alpha=rng.uniform(0.85, 1.15), beta=rng.uniform(-15, 15))
        out.append(view[:, ::-1].copy() if i % 2 else view)
    return out


@pytest.fixture(scope="session")
def ink_pairs(tmp_path_factory, astronaut_crop) -> Path:
    """A pairs folder of 8 ink-teacher pairs (6 train, 2 held out) made from the astronaut crop."""
    from training.pairs import TeacherPairs, write_pairs
    from training.teachers.ink import InkTeacher

    photos = tmp_path_factory.mktemp("photos")
    for i, view in enumerate(_variants(astronaut_crop, 8)):
        cv2.imwrite(str(photos / f"astro_{i}.png"), view)
    out = tmp_path_factory.mktemp("ink_pairs")
    source = TeacherPairs(photos, InkTeacher(), "ink")
    write_pairs(source, out)
    meta = json.loads((out / "pairs.json").read_text())
    meta["splits"].update({"astro_6": "heldout", "astro_7": "heldout"})
    (out / "pairs.json").write_text(json.dumps(meta))
    return out


def make_student_run(root, tier="light", seed=0):
    """A run directory holding a random-weight student checkpoint, as the student stage writes it."""
    from dataclasses import asdict

    import torch

    from training.runs import RunDir
    from training.student.networks import TIERS, build_student

    torch.manual_seed(seed)
    net = build_student(tier)
    ema = build_student(tier)
    run = RunDir.open(root, "student", {"tier": tier})
    run.save_checkpoint(
        {"arch": "student", "init_kwargs": asdict(TIERS[tier]), "params": net.state_dict(),
         "params_ema": ema.state_dict(), "step": 1, "tier": tier},
        {"step": 1},
    )  # fmt: skip
    run.close()
    return root, ema.eval()
