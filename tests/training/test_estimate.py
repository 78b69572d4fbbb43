"""`train estimate`: the route's minutes come from what it measures on this machine."""

import json

import av
import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from training.errors import TrainingError
from training.estimate import count_faces, estimate


def test_faces_count_images_and_the_sampled_frames_of_videos(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    for _ in range(30):  # 3 s at 10 fps, sampled every 0.5 s: frames 0, 5, ..., 25
        writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    assert count_faces([tmp_path]) == 1 + 6
    with av.open(str(tmp_path / "clip.mkv"), "w") as container:  # Matroska declares no frame count
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for frame in [av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="bgr24")] * 30 + [None]:
            for packet in stream.encode(frame):
                container.mux(packet)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert count_faces([tmp_path]) == 1 + 6 + 6


def test_the_ink_route_is_timed_and_the_parts_add_up(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.resize(astronaut()[:, :, ::-1], (256, 256)))
    record = estimate("ink", [tmp_path], "tiny", None, threads=1)
    assert record["faces"] == 4 and record["steps"] == 24 and record["tiers"] == ["light"]
    assert record["measured"]["teacher_s_per_face"] > 0 and record["measured"]["student_s_per_step"] > 0
    students = record["steps"] * record["measured"]["student_s_per_step"] / 60
    assert record["parts"]["students"] == pytest.approx(students, abs=0.06)
    assert record["minutes"] == pytest.approx(sum(record["parts"].values()), abs=0.2)
    # 4 faces give at most 3 training faces after the held-out split; the tiny preset needs 4
    assert "at most about 3 training faces" in record["warning"] and "needs at least 4" in record["warning"]
    json.dumps(record)  # the wizard reads it as one JSON line
    from gui.wizard import describe_estimate

    assert describe_estimate(record).endswith(f"Too little data: {record['warning']}.")


def test_routes_that_cannot_be_estimated_say_why(tmp_path):
    with pytest.raises(TrainingError, match="needs a GPU"):
        estimate("styles", [tmp_path], "cpu", None, 1)
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(TrainingError, match="needs --teacher"):
        estimate("teacher", [tmp_path], "cpu", None, 1)


def test_the_students_schedule_is_weighted_by_its_phases():
    from dataclasses import replace

    from training.estimate import phase_shares
    from training.student.train import config_from

    cfg = replace(config_from("cpu"), steps=100, perceptual_start=40, gan_start=60)
    assert phase_shares(cfg) == pytest.approx({(False, False): 0.4, (True, False): 0.2, (True, True): 0.4})
    no_vgg = replace(cfg, weights=replace(cfg.weights, perceptual=0.0))
    assert phase_shares(no_vgg) == pytest.approx({(False, False): 0.6, (False, True): 0.4})
    assert phase_shares(replace(cfg, perceptual_start=0, gan_start=500)) == {(True, False): 1.0}
