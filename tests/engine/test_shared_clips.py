"""Acceptance on real clips from ../shared/data/videos (skipped when the folder is absent)."""

import json

import pytest

from engine.session import SessionOptions, run_session

pytestmark = pytest.mark.shared_data

SINGLE_PERSON = ["deepfacelive_Twitch1", "liveportrait_d9", "liveportrait_s18"]


@pytest.mark.parametrize("clip", SINGLE_PERSON)
def test_single_person_clips_track_one_stable_face(shared_data, tmp_path, clip):
    out = tmp_path / f"{clip}.mp4"
    report = run_session(SessionOptions(source=str(shared_data / "videos" / f"{clip}.mp4"), style="none", out=str(out)))
    faces = report["faces"]
    print(json.dumps({clip: faces}))
    assert faces["face_fraction"] >= 0.95
    assert faces["id_switches"] == 0 and faces["distinct_track_ids"] == 1
    assert report["output"]["frames"] == faces["frames"] and out.stat().st_size > 10_000


def test_walking_crowd_finds_several_faces_and_writes_output(shared_data, tmp_path):
    out = tmp_path / "crowd.mp4"
    report = run_session(
        SessionOptions(
            source=str(shared_data / "videos" / "facenet_pytorch_walking_crowd.mp4"), style="none", out=str(out)
        )
    )
    faces = report["faces"]
    print(json.dumps({"crowd": faces}))
    assert faces["max_faces"] >= 2 and faces["face_fraction"] >= 0.5
    assert report["output"]["frames"] == faces["frames"] and out.stat().st_size > 10_000


def test_light_tracking_follows_the_crowd_as_well_as_the_full_scheme(shared_data):
    """Faces found by the full-range detector stay followed from frame to frame by their own region mesh."""
    from engine.sources import VideoFileSource
    from engine.tracking import MultiScaleDetector

    several = {}
    for light in (True, False):
        source, detector = VideoFileSource(shared_data / "videos" / "facenet_pytorch_walking_crowd.mp4"), None
        try:
            detector = MultiScaleDetector(max_faces=4, light=light)
            counts = [len(detector(frame.image)) for frame in iter(source.read, None)]
        finally:
            source.close()
            if detector is not None:
                detector.close()
        several[light] = sum(c >= 2 for c in counts)
    print(json.dumps({"frames_with_two_or_more_faces": several}))
    assert several[True] >= 0.95 * several[False] > 0


def test_propagated_landmarks_keep_the_crowd_followed(shared_data):
    """Between mesh updates the followed faces' regions move with the propagated landmarks: walking people
    stay found as often as with face mesh on every frame."""
    from engine.pipeline import Pipeline
    from engine.sources import VideoFileSource
    from engine.tracking import MeshFaceTracker

    three_or_more = {}  # frames showing at least three of the people (left behind, one drops out for good)
    for mesh_every in (2, 1):
        pipeline = Pipeline(MeshFaceTracker(max_faces=4, mesh_every=mesh_every))
        source = VideoFileSource(shared_data / "videos" / "facenet_pytorch_walking_crowd.mp4")
        try:
            three_or_more[mesh_every] = sum(len(pipeline.track(f).faces) >= 3 for f in iter(source.read, None))
        finally:
            source.close()
            pipeline.close()
    print(json.dumps({"frames_with_three_or_more_faces_by_mesh_every": three_or_more}))
    assert three_or_more[2] >= 0.95 * three_or_more[1] > 0
