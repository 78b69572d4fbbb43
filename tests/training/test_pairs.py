import json

import cv2
import numpy as np
import pytest

from training.errors import DatasetError
from training.pairs import FolderPairs, TeacherPairs, write_pairs


def _folder(root, photos, stylized, size=32):
    for sub, names in (("photos", photos), ("stylized", stylized)):
        (root / sub).mkdir(parents=True)
        for n in names:
            cv2.imwrite(str(root / sub / f"{n}.png"), np.full((size, size, 3), len(n), np.uint8))
    return root


def test_folder_pairs_match_by_name_and_read_splits(tmp_path):
    root = _folder(tmp_path / "p", ["a", "b", "c"], ["a", "b", "c"])
    (root / "pairs.json").write_text(json.dumps({"splits": {"c": "heldout"}}))
    pairs = FolderPairs(root)
    assert len(pairs) == 3 and pairs.names() == ["a", "b", "c"]
    assert [pairs.split(k) for k in pairs.names()] == ["train", "train", "heldout"]
    pair = pairs.pair("b")
    assert pair.photo.shape == (32, 32, 3) and pair.stylized.shape == (32, 32, 3)


def test_mismatched_names_are_reported_by_name(tmp_path):
    root = _folder(tmp_path / "p", ["a", "b", "only_photo"], ["a", "b", "only_style"])
    with pytest.raises(DatasetError, match=r"1 photos without a stylized version \['only_photo'\].*\['only_style'\]"):
        FolderPairs(root)


def test_missing_subfolder_empty_folder_and_size_mismatch_are_refused(tmp_path):
    (tmp_path / "x" / "photos").mkdir(parents=True)
    with pytest.raises(DatasetError, match="needs 'stylized/'"):
        FolderPairs(tmp_path / "x")
    with pytest.raises(DatasetError, match="no image pairs"):
        FolderPairs(_folder(tmp_path / "e", [], []))
    root = _folder(tmp_path / "s", ["a"], [])
    cv2.imwrite(str(root / "stylized" / "a.png"), np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="differs from its photo"):
        FolderPairs(root).pair("a")


def test_teacher_pairs_are_written_once_and_read_back(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        cv2.imwrite(str(photos / f"f{i}.png"), np.full((24, 24, 3), 40 * i, np.uint8))
    calls = []

    def invert(images):
        calls.append(len(images))
        return [255 - im for im in images]

    out = tmp_path / "pairs"
    assert write_pairs(TeacherPairs(photos, invert, "invert"), out, batch=2) == 5
    assert calls == [2, 2, 1]
    back = FolderPairs(out)
    pair = back.pair("f3")
    assert np.array_equal(pair.stylized, 255 - pair.photo)
    (out / "stylized" / "f4.png").unlink()  # as if interrupted before the last pair
    assert write_pairs(TeacherPairs(photos, invert, "invert"), out) == 1
    assert calls[-1] == 1 and len(FolderPairs(out)) == 5


def test_an_unreadable_photo_is_left_out_and_the_others_become_pairs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"f{i}.png"), np.full((24, 24, 3), 40 * i, np.uint8))
    (photos / "f1.png").write_bytes(b"")  # zero bytes, as an interrupted copy leaves a file
    out = tmp_path / "pairs"
    assert write_pairs(TeacherPairs(photos, lambda ims: [255 - im for im in ims], "invert"), out, batch=2) == 2
    assert FolderPairs(out).names() == ["f0", "f2"]


def test_a_damaged_pairs_record_is_named_and_a_folder_without_pairs_takes_other_settings(tmp_path):
    from training.errors import TrainingError
    from training.pairs import SOURCE_FILE, check_source

    root = _folder(tmp_path / "p", ["a"], ["a"])
    (root / "pairs.json").write_text("{")
    with pytest.raises(DatasetError, match="pairs.json: unreadable"):
        FolderPairs(root)
    (root / SOURCE_FILE).write_text("[]")
    with pytest.raises(DatasetError, match="teacher.json: not a JSON object"):
        check_source(root, {"teacher": {"id": "toy"}})
    (root / SOURCE_FILE).write_text(json.dumps({"teacher": {"id": "toy"}, "masks": ["m1"]}))
    with pytest.raises(TrainingError, match=r"other settings \(masks differ\)"):
        check_source(root, {"teacher": {"id": "toy"}, "masks": []})
    # a run that failed before its first pair (a broken mask model) leaves no pair to mix with
    (root / "stylized" / "a.png").unlink()
    check_source(root, {"teacher": {"id": "toy"}, "masks": []})


def test_a_styles_tier_teaches_under_its_first_teachers_licence(tmp_path, fixture_bundle_root):
    """``--teacher tier:BUNDLE:TIER`` (a teacher assistant): the tier's colour at the crop's size; the pairs
    record the first teacher's licence, which the exported bundle inherits, and the tier and file that
    taught; a bundle with no teacher of its own passes on its own licence; bad names say what is wrong."""
    import shutil

    from engine.backends import load_tier
    from engine.bundle import load_bundle
    from training.pairs import resolve_teacher

    style = tmp_path / "fixture"
    shutil.copytree(fixture_bundle_root / "fixture", style)
    manifest = json.loads((style / "manifest.json").read_text())
    first = {"id": "toy", "name": "Toy", "license": "CC BY-NC", "commercial_use": False}
    (style / "manifest.json").write_text(json.dumps({**manifest, "created": {"teacher": first}}))

    teacher = resolve_teacher(f"tier:{style}:standard")
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (size, size, 3), np.uint8) for size in (256, 320)]
    bundle = load_bundle(style)
    tier = load_tier(bundle, bundle.tier("standard"), "onnx")
    for out, crop in zip(teacher.stylize(crops), crops):
        assert out.shape == crop.shape and np.array_equal(out, tier.stylize(crop))
    onnx = next(f for f in bundle.tier("standard").files if f.runtime == "onnx")
    via = {"bundle": "fixture", "tier": "standard", "file": onnx.file, "sha256": onnx.sha256}
    assert teacher.record == {**first, "via": via}
    own = resolve_teacher(f"tier:{fixture_bundle_root / 'fixture'}:light").record
    assert own["license"] == "test fixture" and own["kind"] == "bundle tier" and own["via"]["tier"] == "light"
    for name, message in (
        (f"tier:{style}:huge", "no tier 'huge'"),
        (f"tier:{tmp_path / 'nowhere'}:light", "nowhere"),
        (f"tier:{style}", "name a bundle folder and its tier"),
    ):
        with pytest.raises(DatasetError, match=message):
            resolve_teacher(name)
