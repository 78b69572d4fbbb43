import json

import cv2
import numpy as np
import pytest
from skimage import data

from engine.align import similarity_from_landmarks, warp_crop
from engine.tracking import landmarks_from_image
from training import prepare
from training.errors import DatasetError
from training.prepare import PrepareConfig, load_crops, split_of


@pytest.fixture(scope="module")
def astronaut():
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, frames[0].shape[1::-1])
    for f in frames:
        writer.write(f)
    writer.release()


def test_prepare_aligns_with_the_runtime_code_and_explains_every_skip(tmp_path, astronaut):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "astronaut.png"), astronaut)
    (src / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    cv2.imwrite(str(src / "noface.png"), np.full((200, 200, 3), 90, np.uint8))
    cv2.imwrite(str(src / "tiny.png"), cv2.resize(astronaut, (96, 96), interpolation=cv2.INTER_AREA))
    # a still video of the same photo: its frames duplicate the photo's crop
    _video(src / "clip.avi", [astronaut] * 12)
    out = tmp_path / "out"
    manifest = prepare.prepare([src], out, PrepareConfig(every_seconds=0.3, holdout=0.0))

    assert [it["source"] for it in manifest.items] == ["astronaut.png"]
    crop = cv2.imread(str(out / manifest.items[0]["file"]))
    expected = warp_crop(astronaut, similarity_from_landmarks(landmarks_from_image(astronaut)), 256)
    assert crop.shape == (256, 256, 3) and np.array_equal(crop, expected)
    reasons = {(s["source"], s["reason"].split(" (")[0]) for s in manifest.skipped}
    assert ("broken.jpg", "not a readable image") in reasons
    assert ("noface.png", "no face found") in reasons
    assert ("tiny.png", "face too small") in reasons
    assert ("clip.avi", "near-duplicate of an earlier crop") in reasons
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["items"] == manifest.items and len(on_disk["sources_done"]) == 5
    assert load_crops(out) == [out / manifest.items[0]["file"]]


def test_prepare_resumes_without_redoing_finished_sources(tmp_path, astronaut, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), astronaut)
    out = tmp_path / "out"
    prepare.prepare([src], out, PrepareConfig())
    cv2.imwrite(str(src / "b.png"), astronaut[:, ::-1])
    calls = []
    real = prepare.align_face
    monkeypatch.setattr(prepare, "align_face", lambda img, *a: calls.append(1) or real(img, *a))
    manifest = prepare.prepare([src], out, PrepareConfig(dedup=0.0))
    assert len(calls) == 1  # only the new file
    assert [it["source"] for it in manifest.items] == ["a.png", "b.png"]


def test_empty_or_faceless_inputs_raise_a_dataset_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images or videos"):
        prepare.prepare([empty], tmp_path / "o1", PrepareConfig())
    (empty / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="no usable face in 1 files"):
        prepare.prepare([empty], tmp_path / "o2", PrepareConfig())
    with pytest.raises(DatasetError, match="no such file"):
        prepare.prepare([tmp_path / "missing"], tmp_path / "o3", PrepareConfig())


def test_split_is_per_source_stable_and_near_the_asked_fraction():
    names = [f"videos/clip_{i}.mp4" for i in range(2000)]
    held = [n for n in names if split_of(n, 0.15) == "heldout"]
    assert held == [n for n in names if split_of(n, 0.15) == "heldout"]
    assert 0.12 < len(held) / len(names) < 0.18
    assert all(split_of(n, 0.0) == "train" for n in names)
