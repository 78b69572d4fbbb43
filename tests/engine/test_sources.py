import gc
import struct
import weakref

import cv2
import numpy as np
import pytest

from engine import sources
from engine.errors import SourceError
from engine.sources import CameraSource, DemoConfig, DemoSource, ImageFolderSource, VideoFileSource, open_source


def test_demo_is_deterministic_and_moves():
    a = [DemoSource(DemoConfig(frames=3)).read() for _ in range(1)][0]
    b = DemoSource(DemoConfig(frames=3)).read()
    assert np.array_equal(a.image, b.image) and a.image.shape == (720, 1280, 3)
    src = DemoSource(DemoConfig(frames=40, noise_sigma=0))
    frames = [src.read() for _ in range(40)]
    assert src.read() is None
    assert [f.index for f in frames] == list(range(40))
    assert all(t1 > t0 for t0, t1 in zip([f.timestamp for f in frames], [f.timestamp for f in frames[1:]]))
    assert np.abs(frames[0].image.astype(int) - frames[39].image.astype(int)).mean() > 10


def test_demo_portrait_is_read_without_scikit_image_and_a_missing_one_is_named(monkeypatch, tmp_path):
    from skimage import data

    assert np.array_equal(sources.astronaut(), data.astronaut()[:, :, ::-1])
    assert sources.astronaut(64).shape == (64, 64, 3)
    # the installer's layout: no scikit-image package, the file under the bundle folder (here: absent)
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sources.sys, "_MEIPASS", str(tmp_path), raising=False)
    with pytest.raises(SourceError, match="astronaut.png"):
        DemoSource()


def test_demo_still_changes_only_by_noise():
    src = DemoSource(DemoConfig(frames=2, still=True, noise_sigma=2.0))
    a, b = src.read().image.astype(float), src.read().image.astype(float)
    diff = a - b
    assert 2.0 < diff.std() < 3.5  # difference of two σ=2 noises: σ≈2.8 (less where clipped)


def _write_video(path, n=20, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), i * 10, np.uint8))
    writer.release()


def test_video_file_lockstep_and_loop(tmp_path):
    path = tmp_path / "clip.avi"
    _write_video(path)
    src = VideoFileSource(path)
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert len(frames) == 20 and src.fps == 25.0 and not src.truncated
    assert frames[1].timestamp == pytest.approx(0.04)
    looped = VideoFileSource(path, loop=True, max_frames=45)
    out = [looped.read() for _ in range(46)]
    assert out[-1] is None
    ts = [f.timestamp for f in out[:-1]]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    closed = VideoFileSource(path, loop=True)
    closed.read()
    closed.close()
    assert closed.read() is None  # a looping source does not open its file again once closed


def test_sampling_a_video_converts_only_the_frames_it_returns(tmp_path, monkeypatch):
    """Training samples a frame every half second: the frames between are decoded, never turned into pixels,
    and the sampled ones are the frames, indices and timestamps that reading every frame gives."""
    path = tmp_path / "clip.avi"
    _write_video(path)
    every = [f for f in iter(VideoFileSource(path).read, None)]
    converted = []
    upright = sources._upright
    monkeypatch.setattr(sources, "_upright", lambda frame: converted.append(1) or upright(frame))
    sampled = VideoFileSource(path, loop=True, max_frames=30)
    got = [f for f in iter(lambda: sampled.read(every=7), None)]
    assert [f.index for f in got] == [0, 7, 14, 21, 28] and len(converted) == 5
    for f in got[:3]:
        assert np.array_equal(f.image, every[f.index].image) and f.timestamp == every[f.index].timestamp
    assert got[3].timestamp == pytest.approx(21 / 25.0)  # past the loop, time goes on
    with pytest.raises(ValueError, match="every"):
        sampled.read(every=0)


def test_a_closed_video_is_freed_at_once_not_by_the_cycle_collector(tmp_path):
    """Each file's decoder holds megabytes: a window switching between files grew by 1 MB a switch while
    closed sources waited in reference cycles for the collector."""
    path = tmp_path / "clip.avi"
    _write_video(path)
    gc.disable()
    try:
        src = VideoFileSource(path, loop=True)
        for _ in range(25):  # past the end: the file is opened again
            src.read()
        gone = weakref.ref(src)
        src.close()
        del src
        assert gone() is None
    finally:
        gc.enable()


def test_truncated_video_delivers_what_it_has(tmp_path, caplog):
    path = tmp_path / "clip.avi"
    _write_video(path, n=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    src = VideoFileSource(path)
    n = 0
    while src.read() is not None:
        n += 1
    assert 0 < n < 40
    assert src.truncated and "truncated" in caplog.text


def write_portrait_clip(path, frames=3, matrix=(0, 1, -1, 0)):
    """A phone's portrait clip: landscape pixels (64×32, the top of the scene white at the left edge) and a
    90° turn in the track header (tkhd) that players apply. ``matrix``: its (a, b, c, d), in whole units."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        image = np.zeros((32, 64, 3), np.uint8)
        image[:, :8] = 255
        image[:4, :8] = (0, 0, 255)  # a red corner: the top of the white edge
        for frame in [av.VideoFrame.from_ndarray(image, format="bgr24")] * frames + [None]:
            for packet in stream.encode(frame):
                container.mux(packet)
    data = bytearray(path.read_bytes())
    a, b, c, d = (v << 16 for v in matrix)
    at = data.index(b"tkhd") + 44  # after the box's version, times, id, duration, layer, group, volume
    data[at : at + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(data)


def is_upright(image):
    return image.shape == (64, 32, 3) and image[:4].mean() > 200 and image[8:].mean() < 40 and red_at(image) == (0, 1)


def red_at(image):
    """(row, column) half of the image, 0 or 1, that holds the red corner."""
    rows, cols = np.nonzero((image[:, :, 2] > 150) & (image[:, :, 1] < 100))
    return int(rows.mean() > image.shape[0] / 2), int(cols.mean() > image.shape[1] / 2)


def test_a_phone_clip_is_turned_upright_as_its_display_matrix_says(tmp_path):
    """OpenCV showed it on its side."""
    write_portrait_clip(tmp_path / "portrait.mp4")
    frame = VideoFileSource(tmp_path / "portrait.mp4").read()
    assert is_upright(frame.image) and frame.image.flags["C_CONTIGUOUS"]
    # the other quarter turn and the half turn: the red corner at the bottom left, at the bottom right
    for matrix, red in (((0, -1, 1, 0), (1, 0)), ((-1, 0, 0, -1), (1, 1))):
        write_portrait_clip(tmp_path / "other.mp4", matrix=matrix)
        assert red_at(VideoFileSource(tmp_path / "other.mp4").read().image) == red, matrix


def test_a_codec_without_decoder_is_refused_and_foreign_metadata_plays(tmp_path):
    """An unknown codec crashed FFmpeg on the first packet; a Latin-1 title (Windows tools) raised a
    UnicodeDecodeError out of the constructor. OpenCV refused the one and played the other."""
    path = tmp_path / "clip.avi"
    _write_video(path, n=10)
    unknown = tmp_path / "unknown.avi"
    unknown.write_bytes(path.read_bytes().replace(b"MJPG", b"ZZZZ"))
    with pytest.raises(SourceError, match="no decoder"):
        VideoFileSource(unknown)

    import av

    titled = tmp_path / "titled.avi"
    with av.open(str(path)) as source, av.open(str(titled), "w") as target:
        target.metadata["title"] = "CafX"
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.size:
                packet.stream = stream
                target.mux(packet)
    titled.write_bytes(titled.read_bytes().replace(b"CafX", b"Caf\xe9"))
    src = VideoFileSource(titled)
    assert sum(1 for _ in iter(src.read, None)) == 10


def test_frames_decoded_before_a_damaged_container_stops_all_come_out(tmp_path):
    """The decoder holds frames back (its threads work ahead): they are drained when demuxing fails."""
    import av

    from engine.sources import _decoded_frames

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in [*range(30), None]:
            frame = None if i is None else av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8, np.uint8), "bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)

    class DamagedAfter20:
        def __init__(self, container):
            self.container = container

        def demux(self, stream):
            for i, packet in enumerate(self.container.demux(stream)):
                if i == 20:
                    raise av.error.InvalidDataError(1094995529, "damaged")
                yield packet

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        assert sum(1 for _ in _decoded_frames(DamagedAfter20(container), stream, path)) == 20


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(SourceError, match="no such video"):
        VideoFileSource(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot decode"):
        VideoFileSource(junk)
    with pytest.raises(SourceError, match="unknown source"):
        open_source(str(tmp_path / "nothing"))


def test_image_folder_skips_broken_files(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((10, 12), np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"broken")
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((10, 12, 4), np.uint8))
    src = ImageFolderSource(tmp_path, hold_s=0)
    frames = [src.read(), src.read()]
    assert src.read() is None
    assert all(f.image.shape == (10, 12, 3) for f in frames)
    assert src.skipped == ["b.jpg"]


def test_a_looping_slideshow_remembers_which_photo_each_recent_frame_showed_in_bounded_memory(tmp_path):
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((10, 12), np.uint8))
    src = ImageFolderSource(tmp_path, fps=30, hold_s=1 / 30, loop=True)  # one frame a photo
    shown = 3 * sources.REMEMBERED_PHOTOS
    frames = [src.read() for _ in range(shown)]
    assert [src.photo_of(f.index).name for f in frames[-10:]] == ["a.png", "b.png"] * 5
    assert src.photo_of(0) is None  # long forgotten
    assert len(src._starts) <= 2 * sources.REMEMBERED_PHOTOS


def test_still_images_are_held_long_enough_to_be_stylized_and_each_starts_with_a_cut(tmp_path):
    from engine.pipeline import Pipeline
    from engine.tracking import MeshFaceTracker

    portrait = sources.astronaut()
    cv2.imwrite(str(tmp_path / "a_face.png"), portrait)
    cv2.imwrite(str(tmp_path / "b_blank.png"), np.full(portrait.shape, 90, np.uint8))
    src = open_source(str(tmp_path))  # batch: each photo held 0.5 s at 30 FPS
    frames = []
    while (frame := src.read()) is not None:
        frames.append(frame)
    assert len(frames) == 30 and [i for i, f in enumerate(frames) if f.cut] == [0, 15]
    single = open_source(str(tmp_path / "a_face.png"))
    assert sum(1 for _ in iter(single.read, None)) == 15
    pipe = Pipeline(MeshFaceTracker())
    results = [pipe.process(f) for f in frames]
    assert results[14].faces  # the face was confirmed within its photo's time
    # the blank photo's first frame shows no face: the portrait's track did not carry over the cut
    assert not results[15].faces
    pipe.close()


def _jpeg_turned_by_exif(image, orientation):
    """JPEG bytes of ``image`` with an EXIF APP1 segment whose Orientation tag is ``orientation``, as phones
    write them: the pixels stay as the sensor saw them, the tag says how to turn them."""
    import struct

    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_image_folder_turns_phone_photos_upright(tmp_path):
    sensor = np.zeros((40, 60, 3), np.uint8)
    sensor[:, :10] = 255  # a white band on the left; orientation 6 turns it 90° clockwise: onto the top
    (tmp_path / "phone.jpg").write_bytes(_jpeg_turned_by_exif(sensor, 6))
    frame = ImageFolderSource(tmp_path).read()
    assert frame.image.shape == (60, 40, 3)
    assert frame.image[:8].mean() > 200 and frame.image[-20:].mean() < 50


class FakeCapture:
    """A camera that delivers ``frames`` frames, then fails, optionally coming back after ``down`` opens."""

    def __init__(self, plan):
        self.plan = plan

    def isOpened(self):  # noqa: N802
        return self.plan["open"]()

    def read(self):
        if self.plan["budget"] <= 0:
            return False, None
        self.plan["budget"] -= 1
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self):
        pass

    def set(self, prop, value):
        return True


def test_camera_unplug_and_reopen():
    now = [0.0]
    opens = iter([True, False, True])
    plan = {"budget": 3, "open": lambda: next(opens)}
    cam = CameraSource(0, open_capture=lambda d: FakeCapture(plan), clock=lambda: now[0], retry_s=1.0)
    assert [cam.read().index for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SourceError, match="stopped delivering"):
        cam.read()
    with pytest.raises(SourceError, match="disconnected"):  # too early to retry
        cam.read()
    now[0] = 1.5
    with pytest.raises(SourceError, match="disconnected"):  # retried, still unplugged
        cam.read()
    now[0] = 3.0
    plan["budget"] = 1
    assert cam.read().index == 3  # plugged back in


def test_missing_camera_is_a_source_error():
    plan = {"budget": 0, "open": lambda: False}
    with pytest.raises(SourceError, match="cannot be opened"):
        CameraSource(5, open_capture=lambda d: FakeCapture(plan))
