import cv2
import numpy as np
import pytest

from engine.errors import SinkError
from engine.pipeline import FrameResult
from engine.sinks import SnapshotSink, StylizedPhotos, VideoRecorder, VirtualCameraSink


def _result(i, shape=(72, 128, 3)):
    image = np.zeros(shape, np.uint8)
    image[:, : (i * 4) % shape[1]] = 200
    return FrameResult(image, i, i / 30, (), {}, None, None, None)


def _decode(path):
    import av

    with av.open(str(path)) as c:
        return c.streams.video[0].codec_context.name, [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_recorder_writes_h264_that_decodes(tmp_path):
    rec = VideoRecorder(tmp_path / "out.mp4", fps=30)
    for i in range(40):
        rec.write(_result(i))
    rec.close()
    codec, frames = _decode(tmp_path / "out.mp4")
    assert codec == "h264" and len(frames) == 40 and frames[0].shape == (72, 128, 3)
    assert abs(int(frames[20][:, :70].mean()) - 200) < 10


@pytest.mark.parametrize("timestamps", ["slower than fps", "a file looping", "a switch to a camera"])
def test_a_recording_plays_at_the_pace_its_frames_were_captured(tmp_path, timestamps):
    """A live stream at 10 FPS recorded with a nominal 30 used to play three times too fast."""
    import av

    seconds = {
        "slower than fps": [i / 10 for i in range(20)],
        "a file looping": [i / 10 for i in range(10)] * 2,
        "a switch to a camera": [i / 10 for i in range(10)] + [254_321 + i / 10 for i in range(10)],  # its uptime
    }[timestamps]
    rec = VideoRecorder(tmp_path / "out.mp4", fps=30)
    for i, t in enumerate(seconds):
        rec.write(FrameResult(_result(i).image, i, t, (), {}, None, None, None))
    rec.close()
    with av.open(str(tmp_path / "out.mp4")) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    assert len(times) == 20 and times == sorted(times)
    # 20 frames 0.1 s apart, as captured; a new time line starts one frame interval (of the nominal 30 FPS) on
    expected = 1.9 if timestamps == "slower than fps" else 1.8 + 1 / 30
    assert times[-1] - times[0] == pytest.approx(expected, abs=0.002)


def test_recorder_mp4v_fallback_and_odd_sizes(tmp_path):
    rec = VideoRecorder(tmp_path / "out.mp4", fps=30, codec="mp4v")
    rec.write(_result(0, (71, 127, 3)))  # odd size -> even
    rec.write(_result(1, (100, 50, 3)))  # size change -> resized to the first
    rec.close()
    codec, frames = _decode(tmp_path / "out.mp4")
    assert codec == "mpeg4" and len(frames) == 2 and frames[1].shape == (70, 126, 3)


def test_full_disk_stops_the_recorder_with_a_clear_error():
    rec = VideoRecorder("/dev/full", fps=30)
    rec.name = "rec"
    with pytest.raises(SinkError, match="dev/full"):
        for i in range(200):
            rec.write(_result(i))
    assert rec.failed
    rec.write(_result(999))  # ignored, no exception: the stream goes on
    rec.close()


def test_fragmented_mp4_survives_an_abrupt_end(tmp_path):
    """A recording cut off without close() (crash, power loss) still decodes up to the last fragment."""
    path = tmp_path / "cut.mp4"
    rec = VideoRecorder(path, fps=30)
    rng = np.random.default_rng(0)
    for i in range(200):  # noisy frames: enough bytes that the muxer's I/O buffer reaches the disk
        rec.write(FrameResult(rng.integers(0, 255, (72, 128, 3), dtype=np.uint8), i, i / 30, (), {}, None, None, None))
    # what is on disk mid-recording is what a crash would leave behind
    (tmp_path / "copy.mp4").write_bytes(path.read_bytes())
    rec.close()
    import av

    decoded = 0
    with av.open(str(tmp_path / "copy.mp4")) as c:
        try:
            for packet in c.demux(video=0):
                decoded += len(packet.decode())
        except av.error.InvalidDataError:
            pass  # the fragment being written when the copy was taken is incomplete
    assert decoded >= 60  # at least the first complete 2-second fragment


def test_snapshot(tmp_path):
    snap = SnapshotSink()
    snap.write(_result(0))
    assert snap.saved == []
    snap.request(tmp_path / "still.png")
    snap.write(_result(5))
    assert snap.saved == [tmp_path / "still.png"] and (tmp_path / "still.png").stat().st_size > 0


class FakeCam:
    instances = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.frames = width, height, []
        FakeCam.instances.append(self)

    def send(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True

    def device(self):
        return "fake0"

    def native_fourcc(self):
        return None


def test_virtual_camera_through_an_explicit_fake_backend():
    import pyvirtualcam

    pyvirtualcam.register_backend("stylecast-fake", FakeCam)
    sink = VirtualCameraSink(fps=30, backend="stylecast-fake")
    sink.write(_result(0))
    sink.write(_result(1, (50, 60, 3)))  # resized to the first size
    sink.close()
    cam = FakeCam.instances[-1]
    assert (cam.width, cam.height) == (128, 72) and len(cam.frames) == 2 and cam.closed


def test_virtual_camera_without_a_device_is_a_sink_error():
    sink = VirtualCameraSink(backend="v4l2loopback", device="/dev/video-does-not-exist")
    with pytest.raises(SinkError, match="virtual camera"):
        sink.write(_result(0))


def test_stylized_photos_keep_each_photos_last_frame_and_a_failed_one_fails_alone(tmp_path):
    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)  # a.png cannot be written there: a folder of that name is in the way
    sink = StylizedPhotos(out, lambda index: photos[index // 3], photos)
    results = [FrameResult(np.full((4, 6, 3), i, np.uint8), i, i / 30, (), {}, None, None, None) for i in range(6)]
    for result in results[:4]:
        try:
            sink.write(result)
        except SinkError as exc:  # the runtime reports it and goes on writing to this sink
            assert "a.png" in str(exc) and result.index == 3
    for result in results[4:]:
        sink.write(result)
    sink.close()
    assert sink.written == [out / "b.png"] and cv2.imread(str(out / "b.png"))[0, 0, 0] == 5  # b's last frame
