"""``train reexport``: an installed style's tiers exported again with the current exporter compute what
they computed before, through both runtimes, and a style blending through a head mask needs that head mask."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from engine.backends import load_tier
from engine.bundle import MANIFEST, load_bundle
from tests.training.student.test_head_mask import export_alpha_style, pairs_with_head, train
from training.errors import TrainingError

MODELS = Path(__file__).resolve().parents[3] / "models"


def stylized(bundle, photo: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    return {
        (tier.id, runtime): load_tier(bundle, tier, runtime, threads=1).stylize(photo).astype(int)
        for tier in bundle.manifest.tiers
        for runtime in ("onnx", "mnn")
    }


def test_a_shipped_style_exported_again_computes_the_same_with_the_current_graph(tmp_path, astronaut_crop):
    """models/ink: three tiers, each ending in the sharpening layer, rebuilt from their ONNX files."""
    if not (MODELS / "ink" / MANIFEST).is_file():
        pytest.skip("models/ink is not installed")
    from training.student.reexport import reexport_bundle

    style = tmp_path / "ink"
    shutil.copytree(MODELS / "ink", style)
    before = load_bundle(style)
    old = stylized(before, astronaut_crop)

    reexport_bundle(style)
    after = load_bundle(style)
    for tier in after.manifest.tiers:  # the current exporter's sharpening blur: two 1-D passes
        graph = onnx.load(str(style / tier.files[0].file)).graph
        kernels = {tuple(i.dims) for i in graph.initializer}
        assert {(3, 1, 1, 5), (3, 1, 5, 1)} <= kernels, tier.id
    for key, image in stylized(after, astronaut_crop).items():
        assert np.abs(image - old[key]).max() <= 2, key
    assert after.manifest.metrics["reexported"]["date"]
    assert after.manifest.model_card == before.manifest.model_card
    assert not list(tmp_path.glob(".*"))  # no staging copy left beside it


def test_a_style_with_a_head_mask_is_exported_again_only_with_that_head_mask(tmp_path, ink_pairs):
    from training.student.graft import graft_bundle
    from training.student.reexport import reexport_bundle

    pairs = pairs_with_head(tmp_path, ink_pairs)
    train(pairs, tmp_path / "head", 2)
    train(pairs, tmp_path / "other", 60)  # far from the first: below the tier's alpha outside the face
    style = export_alpha_style(tmp_path, ink_pairs)
    with pytest.raises(TrainingError, match="blends through no head mask"):
        reexport_bundle(style, tmp_path / "head")
    graft_bundle(style, tmp_path / "head")
    files = {p.name: p.read_bytes() for p in style.iterdir()}

    with pytest.raises(TrainingError, match="--head-mask"):
        reexport_bundle(style)
    with pytest.raises(TrainingError, match="differs from the reference"):
        reexport_bundle(style, tmp_path / "other")  # another head mask: not the function the style computes
    assert {p.name: p.read_bytes() for p in style.iterdir()} == files

    photo = cv2.resize(cv2.imread(str(next((pairs / "photos").iterdir()))), (64, 64), interpolation=cv2.INTER_AREA)
    old = stylized(load_bundle(style), photo)
    reexport_bundle(style, tmp_path / "head")
    for key, image in stylized(load_bundle(style), photo).items():
        assert np.abs(image - old[key]).max() <= 2, key
    assert "reexported" in json.loads((style / MANIFEST).read_text())["metrics"]


def test_a_style_exported_with_its_head_mask_is_exported_again(tmp_path, ink_pairs):
    """The teacher route exports the head mask in torch (HeadMasked), which names the tier's layers 'tier.'."""
    from training.student.reexport import reexport_bundle

    pairs = pairs_with_head(tmp_path, ink_pairs)
    train(pairs, tmp_path / "head", 2)
    style = export_alpha_style(tmp_path, ink_pairs, head_mask=tmp_path / "head")
    photo = cv2.resize(cv2.imread(str(next((pairs / "photos").iterdir()))), (64, 64), interpolation=cv2.INTER_AREA)
    old = stylized(load_bundle(style), photo)
    reexport_bundle(style, tmp_path / "head")
    for key, image in stylized(load_bundle(style), photo).items():
        assert np.abs(image - old[key]).max() <= 2, key


def test_a_damaged_style_is_refused_by_name_and_left_as_it_was(tmp_path):
    """A review's cases: a malformed sharpening record (reexport), a missing manifest, and a tier file that
    is no ONNX model although its sha256 matches (graft): clear errors, no raw traceback."""
    if not (MODELS / "ink" / MANIFEST).is_file():
        pytest.skip("models/ink is not installed")
    import hashlib

    from engine.errors import BundleError
    from training.student.graft import grafted_head_mask
    from training.student.networks import read_onnx
    from training.student.reexport import reexport_bundle

    style = tmp_path / "ink"
    shutil.copytree(MODELS / "ink", style)
    document = json.loads((style / MANIFEST).read_text())
    document["metrics"]["sharpen"]["light"] = {"amount": 0.5}
    (style / MANIFEST).write_text(json.dumps(document))
    files = {p.name: p.read_bytes() for p in style.iterdir()}
    with pytest.raises(TrainingError, match="metrics.sharpen.light is not a sharpening record"):
        reexport_bundle(style)
    assert {p.name: p.read_bytes() for p in style.iterdir()} == files

    (style / "light.onnx").write_bytes(b"garbage")
    document["tiers"][0]["files"][0]["sha256"] = hashlib.sha256(b"garbage").hexdigest()
    (style / MANIFEST).write_text(json.dumps(document))
    with pytest.raises(TrainingError, match="light.onnx: not a readable ONNX model"):
        read_onnx(style / "light.onnx")
    (style / MANIFEST).unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        grafted_head_mask(style)
