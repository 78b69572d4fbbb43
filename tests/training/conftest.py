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


def write_onnx_teacher(
    folder: Path,
    *,
    layout: str = "NHWC",
    dtype: str = "float32",
    color: str = "RGB",
    size: int = 64,
    multiple: int = 16,
    gains: tuple[float, float, float] = (1.0, -1.0, -1.0),
    fault: str | None = None,
    **overrides,
) -> Path:
    """A tiny ONNX stylizer teacher and its teacher.json, as a user would bring one.

    The network multiplies each channel (in its own colour order, range [-1, 1]) by ``gains``: with the
    default, red stays and green and blue are inverted, so a wrong colour order or range shows at once.
    ``fault``: "nan" (the output is NaN) or "shrink" (one row short). ``overrides`` replace json fields.
    """
    import hashlib

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    elem = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    shape = [1, "h", "w", 3] if layout == "NHWC" else [1, 3, "h", "w"]
    gain_shape = (1, 1, 1, 3) if layout == "NHWC" else (1, 3, 1, 1)
    inits = [numpy_helper.from_array(np.array(gains, np_dtype).reshape(gain_shape), "gains")]
    nodes = [helper.make_node("Mul", ["x", "gains"], ["y0"])]
    last = "y0"
    if fault == "nan":
        nodes += [helper.make_node("Sub", [last, last], ["zero"]), helper.make_node("Div", ["zero", "zero"], ["y1"])]
        last = "y1"
    elif fault == "shrink":
        axis = 1 if layout == "NHWC" else 2
        for name, value in (("starts", 0), ("ends", -1), ("axes", axis)):
            inits.append(numpy_helper.from_array(np.array([value], np.int64), name))
        nodes.append(helper.make_node("Slice", [last, "starts", "ends", "axes"], ["y1"]))
        last = "y1"
    nodes.append(helper.make_node("Identity", [last], ["out"]))
    graph = helper.make_graph(
        nodes,
        "teacher",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("out", elem, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "teacher.onnx"
    onnx.save(model, str(path))
    spec = {
        "schema": 1,
        "id": "toy",
        "kind": "stylizer",
        "name": "Toy teacher",
        "file": path.name,
        "runtime": "onnx",
        "input": {
            "name": "x",
            "dtype": dtype,
            "size": [size, size],
            "layout": layout,
            "color": color,
            "range": [-1, 1],
            "multiple": multiple,
        },  # fmt: skip
        "output": {"name": "out", "layout": layout, "color": color, "range": [-1, 1]},
        "license": "test fixture, no restrictions",
        "commercial_use": False,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        **overrides,
    }
    (folder / "teacher.json").write_text(json.dumps(spec))
    return folder
