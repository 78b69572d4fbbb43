"""Outputs of the stream: preview callback, video recorder, still snapshots, virtual camera.

A sink that fails (disk full, device gone) raises :class:`SinkError` once, stops itself and keeps
what it already wrote; the runtime reports the error and the other sinks go on.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from engine.errors import BackendUnavailable, SinkError
from engine.pipeline import FrameResult
from engine.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where results go. The runtime stops feeding a sink after its first failed write, unless the sink has
    ``independent_writes = True``: then a failed write concerns that write only (a snapshot on a full disk)
    and the sink keeps its next requests."""

    name: str

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    """Hands each result to a function (the GUI preview, tests)."""

    def __init__(self, callback: Callable[[FrameResult], None], name: str = "preview") -> None:
        self.callback, self.name = callback, name

    def write(self, result: FrameResult) -> None:
        self.callback(result)

    def close(self) -> None:
        pass


def _even_size(image: np.ndarray) -> tuple[int, int]:
    h, w = image.shape[:2]
    return max(2, w - w % 2), max(2, h - h % 2)


PTS_TIME_BASE = Fraction(1, 1000)  # recordings are timed to the millisecond
MAX_GAP_S = 2.0  # a longer leap between two frames' timestamps starts a new time line


class _RecordingClock:
    """Presentation times (ms) from frame timestamps: from 0, strictly increasing. A timestamp that goes
    back (a looping file starts over) or leaps ahead by more than :data:`MAX_GAP_S` (a switch to a camera,
    whose clock counts from the machine's start) is a new time line: it continues one frame interval
    after the last frame."""

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self._first: float | None = None
        self._offset = 0.0
        self._last = 0.0
        self._last_pts = -1

    def pts(self, timestamp: float) -> int:
        if self._first is None:
            self._first = timestamp
        elif not 0 < timestamp + self._offset - self._last <= MAX_GAP_S:
            self._offset = self._last + self.interval - timestamp
        self._last = timestamp + self._offset
        pts = max(round((self._last - self._first) / PTS_TIME_BASE), self._last_pts + 1)
        self._last_pts = pts
        return pts


class VideoRecorder:
    """Records results to a video file: H.264 through PyAV, falling back to OpenCV's mp4v.

    MP4 output is fragmented (a self-contained fragment per keyframe group), so a recording cut short
    by a full disk or a crash stays playable up to the last complete fragment. The frame size is fixed
    by the first frame; later frames of another size are resized to it.

    H.264 frames are timed by their results' timestamps, so the file plays at the pace they were captured
    whatever the frame rate reached: a live stream that drops frames, or runs slower than ``fps``, is
    not sped up. A source that starts over (a looping file) continues the time line. ``fps`` is the
    nominal rate (keyframe spacing; the mp4v fallback, which has no timestamps, plays at it).
    """

    def __init__(self, path: Path | str, fps: float = 30.0, codec: str = "auto", crf: int = 20) -> None:
        self.path = Path(path)
        self.name = f"recorder:{self.path.name}"
        self.fps, self.crf = fps, crf
        self.codec = codec
        self.frames = 0
        self.failed: str | None = None
        self._size: tuple[int, int] | None = None
        self._container = None
        self._stream = None
        self._cv_writer: cv2.VideoWriter | None = None
        self._clock = _RecordingClock(fps)

    def _open(self, image: np.ndarray) -> None:
        self._size = _even_size(image)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.codec in ("auto", "h264"):
            try:
                self._open_pyav()
                self.codec = "h264"
                return
            except (ImportError, BackendUnavailable) as exc:
                if self.codec == "h264":
                    raise SinkError(f"{self.path}: H.264 recording unavailable: {exc}") from exc
                log.warning("H.264 unavailable (%s); recording with mp4v", exc)
        self._open_opencv()
        self.codec = "mp4v"

    def _open_pyav(self) -> None:
        import av

        if "libx264" not in av.codecs_available:
            raise BackendUnavailable("PyAV has no libx264 encoder")
        w, h = self._size
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if self.path.suffix == ".mp4" else {}
        try:
            self._container = av.open(str(self.path), mode="w", options=options)
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"{self.path}: cannot create recording: {exc}") from exc
        rate = Fraction(self.fps).limit_denominator(1001)
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = PTS_TIME_BASE
        stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        # a keyframe (and so an MP4 fragment) every 2 s at the nominal rate: a crash loses about that much
        stream.codec_context.gop_size = max(1, round(2 * self.fps))
        self._stream = stream

    def _open_opencv(self) -> None:
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
        if not writer.isOpened():
            raise SinkError(f"{self.path}: cannot create recording with mp4v")
        self._cv_writer = writer

    def write(self, result: FrameResult) -> None:
        if result.image is None or self.failed:
            return
        image = result.image
        try:
            if self._size is None:
                self._open(image)
            if (image.shape[1], image.shape[0]) != self._size:
                image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
            if self._stream is not None:
                import av

                frame = av.VideoFrame.from_ndarray(image, format="bgr24")
                frame.pts, frame.time_base = self._clock.pts(result.timestamp), PTS_TIME_BASE
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            else:
                self._cv_writer.write(image)
            self.frames += 1
        except SinkError as exc:
            self.failed = str(exc)
            raise
        except Exception as exc:  # av.FFmpegError / OSError (ENOSPC) and friends
            self.failed = f"{self.path}: recording stopped after {self.frames} frames: {exc}"
            self._abandon()
            raise SinkError(self.failed) from exc

    def _abandon(self) -> None:
        try:
            if self._container is not None:
                self._container.close()
        except Exception:  # the file system already refused us; keep what is on disk
            log.debug("closing a failed recording", exc_info=True)
        self._container = self._stream = None

    def close(self) -> None:
        try:
            if self._stream is not None:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
                self._container.close()
            if self._cv_writer is not None:
                self._cv_writer.release()
        except Exception as exc:
            self.failed = f"{self.path}: finishing the recording failed: {exc}"
            self._abandon()
            raise SinkError(self.failed) from exc
        finally:
            self._container = self._stream = self._cv_writer = None


def write_image(path: Path, image: np.ndarray) -> None:
    """Write ``image`` in the format its suffix names, its folder made if need be. Raises OSError with the
    reason (a full disk, an unknown suffix) where ``cv2.imwrite`` only returns False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok, data = cv2.imencode(path.suffix, image)
    except cv2.error as exc:
        raise OSError(f"cannot encode it as '{path.suffix}': {exc}") from exc
    if not ok:
        raise OSError(f"cannot encode it as '{path.suffix}'")
    path.write_bytes(data.tobytes())


class SnapshotSink:
    """Saves the next frame after :meth:`request` as a still image."""

    independent_writes = True

    def __init__(self) -> None:
        self.name = "snapshot"
        self._pending: list[Path] = []
        self._lock = threading.Lock()
        self.saved: list[Path] = []

    def request(self, path: Path | str) -> None:
        with self._lock:
            self._pending.append(Path(path))

    def write(self, result: FrameResult) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        failed = []
        for path in pending:
            if result.image is None:
                continue
            try:
                write_image(path, result.image)
            except OSError as exc:
                failed.append(f"{path} ({exc})")
            else:
                self.saved.append(path)
        if failed:
            raise SinkError(f"could not write the snapshot: {', '.join(failed)}")

    def close(self) -> None:
        pass


class StylizedPhotos:
    """One stylized image per photo of an image source: the last frame each photo was shown for (its face
    confirmed and faded in), written when the next photo starts and at the end.

    ``out`` is an image file (by its suffix) for a single photo, else a folder that gets each photo's file
    name; neither ever overwrites a photo.
    ``photo_of`` tells which photo a frame index showed (:meth:`engine.sources.ImageFolderSource.photo_of`).
    """

    def __init__(self, out: Path | str, photo_of: Callable[[int], Path | None], sources: list[Path]) -> None:
        self.out = Path(out)
        self.name = f"photos:{self.out.name}"
        self.single = self.out.suffix.lower() in IMAGE_SUFFIXES
        if self.single and len(sources) > 1:
            raise SinkError(f"{self.out}: the source holds {len(sources)} photos; give a folder to write them to")
        if self.single and cv2.haveImageWriter(str(self.out)) is False:
            raise SinkError(f"{self.out}: no image format is known for '{self.out.suffix}' (use .png or .jpg)")
        targets = [self.out] if self.single else [self.out / p.name for p in sources]
        if {t.resolve() for t in targets} & {p.resolve() for p in sources}:
            raise SinkError(f"{self.out}: would overwrite the photos themselves; write them elsewhere")
        self._photo_of = photo_of
        self._pending: tuple[Path, np.ndarray] | None = None
        self.written: list[Path] = []

    def write(self, result: FrameResult) -> None:
        photo = self._photo_of(result.index)
        if result.image is None or photo is None:
            return
        finished = self._pending if self._pending is not None and self._pending[0] != photo else None
        self._pending = (photo, result.image)
        if finished is not None:
            self._save(*finished)

    def _save(self, photo: Path, image: np.ndarray) -> None:
        path = self.out if self.single else self.out / photo.name
        try:
            write_image(path, image)
        except OSError as exc:
            raise SinkError(f"{path}: writing the stylized photo failed: {exc}") from exc
        self.written.append(path)

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._save(*pending)


def default_virtual_camera_backend() -> str:
    """The pyvirtualcam backend of this platform; always passed explicitly (no silent fallback)."""
    if sys.platform.startswith("linux"):
        return "v4l2loopback"
    if sys.platform == "win32":
        return "obs"
    return "obs"


class VirtualCameraSink:
    """Sends frames to a virtual camera (v4l2loopback, OBS, Unity Capture) through pyvirtualcam.

    The device opens on the first frame with that frame's size; later frames are resized to it.
    """

    def __init__(self, fps: float = 30.0, backend: str | None = None, device: str | None = None) -> None:
        self.fps = fps
        self.backend = backend or default_virtual_camera_backend()
        self.device = device
        self.name = f"virtualcam:{self.backend}"
        self._camera = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        if result.image is None:
            return
        image = result.image
        if self._camera is None:
            try:
                import pyvirtualcam
            except ImportError as exc:
                raise SinkError(f"virtual camera needs pyvirtualcam: {exc}") from exc
            h, w = image.shape[:2]
            try:
                self._camera = pyvirtualcam.Camera(
                    w, h, self.fps, fmt=pyvirtualcam.PixelFormat.BGR, backend=self.backend, device=self.device
                )
            except Exception as exc:  # pyvirtualcam raises RuntimeError when no device exists
                raise SinkError(f"virtual camera ({self.backend}) is not available: {exc}") from exc
            self._size = (w, h)
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._camera.send(np.ascontiguousarray(image))
        self.frames += 1

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None


class SinkSlot:
    """A sink position whose target can be attached and detached while the stream runs.

    The runtime's sink list is fixed when it starts; the GUI starts and stops recordings and the
    virtual camera at any time, so each gets a slot (with its own thread and mailbox) up front. A slot
    outlives streams: its target survives a source switch. Detaching closes the old target on the sink
    thread's next write, never mid-frame, or at the end of the stream.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._target: Sink | None = None
        self._retired: list[Sink] = []
        self.last_error: str | None = None

    def attach(self, target: Sink | None) -> None:
        with self._lock:
            if self._target is not None:
                self._retired.append(self._target)
            self._target = target
            self.last_error = None

    @property
    def attached(self) -> bool:
        return self._target is not None

    def _close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for sink in retired:
            try:
                sink.close()
            except SinkError as exc:
                self.last_error = str(exc)

    def write(self, result: FrameResult) -> None:
        self._close_retired()
        target = self._target
        if target is None:
            return
        try:
            target.write(result)
        except SinkError as exc:  # the slot survives; only this target is dropped
            self.last_error = str(exc)
            with self._lock:
                if self._target is target:
                    self._target = None
            log.error("%s", exc)

    def close(self) -> None:
        """End of one stream (the runtime calls this): targets already detached are closed, the attached
        one stays, so a recording goes on into the next stream (a source switch). :meth:`release` ends it."""
        self._close_retired()

    def release(self) -> None:
        """Detach and finalise the target (stop recording, app shutdown). Call when no stream writes to it."""
        self.attach(None)
        self._close_retired()
