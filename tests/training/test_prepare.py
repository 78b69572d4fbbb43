import json

import cv2
import numpy as np
import pytest
from skimage import data

from engine import tracking
from engine.align import similarity_from_landmarks, warp_crop
from engine.tracking import landmarks_from_image
from training import prepare
from training.errors import DatasetError
from training.prepare import PrepareConfig, Thumbnails, load_crops, split_of


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
    assert on_disk["items"] == manifest.items and len(on_disk["sources_done"]) == 4  # broken.jpg: tried again
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


def test_a_truncated_photo_is_skipped_and_tried_again_and_a_damaged_crop_is_made_again(tmp_path, astronaut):
    """cv2.imread returns a truncated JPEG with its missing part grey: it would have become a training crop."""
    src = tmp_path / "in"
    src.mkdir()
    jpeg = cv2.imencode(".jpg", astronaut)[1].tobytes()
    (src / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="no usable face"):
        prepare.prepare([src], out, PrepareConfig(holdout=0.0))
    assert json.loads((out / "manifest.json").read_text())["skipped"][0]["source"] == "cut.jpg"
    (src / "cut.jpg").write_bytes(jpeg)  # repaired: the next run reads it
    manifest = prepare.prepare([src], out, PrepareConfig(holdout=0.0))
    assert [it["source"] for it in manifest.items] == ["cut.jpg"] and manifest.skipped == []
    crop = out / manifest.items[0]["file"]
    good = crop.read_bytes()
    crop.write_bytes(b"")  # a damaged crop: its source is prepared again instead of failing the resume
    manifest = prepare.prepare([src], out, PrepareConfig(holdout=0.0))
    assert [it["source"] for it in manifest.items] == ["cut.jpg"] and crop.read_bytes() == good


def test_one_face_mesh_graph_serves_the_whole_run_and_crops_equal_one_shot_ones(tmp_path, astronaut, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    faces = {"a.png": astronaut, "b.png": cv2.convertScaleAbs(astronaut[:, ::-1], alpha=0.6)}
    for name, image in faces.items():
        cv2.imwrite(str(src / name), image)
    _video(src / "c.avi", [cv2.convertScaleAbs(astronaut, alpha=a, beta=b) for a, b in ((1.3, 0), (0.4, 0), (0.8, 60))])
    frames = prepare.read_frames(src / "c.avi", PrepareConfig(every_seconds=0.1))
    built = []

    class Counting(tracking.FaceMeshDetector):
        def __init__(self, *args, **kwargs):
            built.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tracking, "FaceMeshDetector", Counting)
    manifest = prepare.prepare([src], tmp_path / "out", PrepareConfig(every_seconds=0.1, dedup=0.0))
    assert len(built) == 1
    assert [it["source"] for it in manifest.items] == ["a.png", "b.png", "c.avi", "c.avi", "c.avi"]
    images = [faces["a.png"], cv2.imread(str(src / "b.png")), *(frame for _, frame in frames)]
    for item, image in zip(manifest.items, images, strict=True):  # each one-shot crop from a graph of its own
        expected = warp_crop(image, similarity_from_landmarks(landmarks_from_image(image)), 256)
        assert np.array_equal(cv2.imread(str(tmp_path / "out" / item["file"])), expected)


def test_near_duplicate_decisions_equal_a_comparison_with_every_kept_thumbnail():
    rng = np.random.default_rng(0)
    bases = rng.integers(0, 256, (100, 32, 32))
    kept, index, decisions = [], Thumbnails(3.0), []
    for _ in range(600):  # brightness-shifted copies of some bases, half with noise: duplicates and near misses
        base = bases[rng.integers(len(bases))] + rng.integers(-4, 5)
        thumb = np.clip(base + rng.integers(-2, 3, (32, 32)) * rng.integers(0, 2), 0, 255).astype(np.float32)
        brute = bool(kept) and float(np.abs(np.stack(kept) - thumb).mean(axis=(1, 2)).min()) < 3.0
        decisions.append(brute)
        assert index.is_duplicate(thumb) == brute
        if not brute:
            kept.append(thumb)
            index.add(thumb)
    assert 300 < sum(decisions) < 500 and len(kept) > 128  # both outcomes, past the array's growth


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


def test_video_frames_are_sampled_upright_and_an_undecodable_video_is_named(tmp_path):
    from tests.engine.test_sources import is_upright, write_portrait_clip

    write_portrait_clip(tmp_path / "phone.mp4", frames=25)  # 1 s at 25 fps
    frames = prepare.read_frames(tmp_path / "phone.mp4", PrepareConfig(every_seconds=0.2))
    assert [index for index, _ in frames] == [0, 5, 10, 15, 20]
    assert all(is_upright(image) for _, image in frames)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="junk.mp4: cannot decode"):
        prepare.read_frames(tmp_path / "junk.mp4", PrepareConfig())
