"""Frame sources: camera, video file, image folder, and the generated demo.

Every source yields :class:`Frame` values (BGR uint8, monotonic timestamps in seconds). ``read()``
returns None at the end of a finite stream and raises :class:`SourceError` when the device fails;
the runtime reports the error and keeps calling, and a camera reopens itself after an unplug.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.util
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from engine.errors import SourceError
from engine.frames import Frame, read_image_file, to_bgr_uint8

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STILL_HOLD_S = 0.5  # s each still image is shown: the tracker confirms its face and fades it in
STILL_HOLD_PACED_S = 3.0  # s each still image is shown in a paced stream (the window)
REMEMBERED_PHOTOS = 256  # photo_of answers for the frames still in the pipeline; a looping slideshow runs for hours


class FrameSource(Protocol):
    name: str
    fps: float

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class Capture(Protocol):
    """The part of cv2.VideoCapture a camera needs (a seam for tests with a failing fake camera)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...

    def set(self, prop: int, value: float) -> bool: ...


def _open_capture(device: int | str) -> Capture:
    return cv2.VideoCapture(device)


class CameraSource:
    """A live camera by index or device path. Only the newest frame matters (buffer of one).

    After a failed read (an unplug) the device is released and reopened, at most once per
    ``retry_s``; until it is back, ``read`` raises SourceError so the caller can show the state.
    """

    def __init__(
        self,
        device: int | str,
        width: int | None = None,
        height: int | None = None,
        fps: float = 30.0,
        retry_s: float = 1.0,
        open_capture: Callable[[int | str], Capture] = _open_capture,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device, self.name, self.fps = device, f"camera:{device}", fps
        self._size = (width, height)
        self._open_capture, self._clock, self.retry_s = open_capture, clock, retry_s
        self._cap: Capture | None = None
        self._next_retry = 0.0
        self._index = 0
        self._last_t = -math.inf
        self._open()
        if self._cap is None:
            raise SourceError(f"camera {device!r} cannot be opened (not connected, or in use by another app)")

    def _open(self) -> None:
        cap = self._open_capture(self.device)
        if not cap.isOpened():
            cap.release()
            self._cap = None
            self._next_retry = self._clock() + self.retry_s
            return
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self._size[0] and self._size[1]:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self._size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self._size[1])
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap
        log.info("camera %s opened", self.device)

    def read(self) -> Frame | None:
        if self._cap is None:
            if self._clock() < self._next_retry:
                raise SourceError(f"camera {self.device!r} is disconnected; retrying")
            self._open()
            if self._cap is None:
                raise SourceError(f"camera {self.device!r} is disconnected; retrying")
        ok, image = self._cap.read()
        if not ok or image is None:
            self._cap.release()
            self._cap = None
            self._next_retry = self._clock() + self.retry_s
            raise SourceError(f"camera {self.device!r} stopped delivering frames (unplugged?); retrying")
        t = max(self._clock(), self._last_t + 1e-6)
        self._last_t = t
        frame = Frame(to_bgr_uint8(image), t, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class _Pacer:
    """Sleeps until a frame's time has come: a paced source plays in real time (no-op when not paced)."""

    def __init__(self, paced: bool) -> None:
        self.paced = paced
        self._start: float | None = None

    def wait(self, t: float) -> None:
        if not self.paced:
            return
        if self._start is None:
            self._start = time.monotonic() - t
        delay = self._start + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class VideoFileSource:
    """Frames of a video file, in lockstep (as fast as they are consumed) or paced to real time.

    Decoded by PyAV, whose FFmpeg also records; OpenCV's own FFmpeg serves nothing the app needs (the
    installer leaves it out: packaging/stub_libs.py). Frames are upright as the file's display matrix
    says (a phone's portrait clip). Timestamps are frame index ÷ frame rate. A damaged packet is skipped;
    a file that ends before its declared frame count is reported as truncated, and the frames before the
    damage are still delivered. A closed source delivers nothing more.
    """

    def __init__(self, path: Path | str, paced: bool = False, loop: bool = False, max_frames: int | None = None):
        self.path = Path(path)
        self.name = self.path.name
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        self._container, self._frames = self._open()
        stream = self._container.streams.video[0]
        fps = float(stream.average_rate or 0)
        self.fps = fps if 1.0 <= fps <= 240.0 else 30.0
        self.declared_frames = stream.frames or 0
        # what a container that declares no count (Matroska, WebM) holds, from its duration
        if stream.duration:
            seconds = float(stream.duration * stream.time_base)
        else:
            seconds = (self._container.duration or 0) / 1e6  # the container's duration is in microseconds
        self.expected_frames = self.declared_frames or round(seconds * self.fps)
        self.paced, self.loop, self.max_frames = paced, loop, max_frames
        self.truncated = False
        self._index = 0
        self._file_index = 0
        self._loop_offset = 0.0
        self._pacer = _Pacer(paced)
        self._closed = False

    def _open(self):
        """(container, iterator over its decoded video frames)."""
        import av

        try:  # metadata in another encoding than UTF-8 (a title written on Windows) is no reason to refuse
            container = av.open(str(self.path), metadata_errors="replace")
        except (OSError, av.FFmpegError) as exc:
            raise SourceError(f"{self.path}: cannot decode this file as video ({exc})") from exc
        stream = container.streams.video[0] if container.streams.video else None
        if stream is None or stream.codec_context is None:  # decoding without a decoder would crash FFmpeg
            container.close()
            problem = "it has no video stream" if stream is None else "no decoder for its video codec"
            raise SourceError(f"{self.path}: cannot decode this file as video ({problem})")
        stream.thread_type = "AUTO"
        return container, _decoded_frames(container, stream, self.path)

    def _next_decoded(self):
        """The next decoded PyAV frame, from the start again when looping; None at the end."""
        frame = next(self._frames, None)
        if frame is not None:
            return frame
        if self.declared_frames and self._file_index < self.declared_frames - 1:
            if not self.truncated:
                log.warning(
                    "%s ended at frame %d of %d declared: the file is truncated or damaged",
                    self.path,
                    self._file_index,
                    self.declared_frames,
                )
            self.truncated = True
        if not self.loop or self._file_index == 0:
            return None
        self._loop_offset += self._file_index / self.fps
        self._file_index = 0
        self._release()
        self._container, self._frames = self._open()
        return next(self._frames, None)

    def read(self, every: int = 1) -> Frame | None:
        """The next frame, or with ``every`` > 1 the next whose index is a multiple of it: the frames between
        are decoded (a video's frames depend on each other) but never converted to pixels."""
        if every < 1:
            raise ValueError(f"read(every={every}): every must be 1 or more")
        while not self._closed and (self.max_frames is None or self._index < self.max_frames):
            decoded = self._next_decoded()
            if decoded is None:
                return None
            t, index = self._loop_offset + self._file_index / self.fps, self._index
            image = to_bgr_uint8(_upright(decoded)) if index % every == 0 else None
            self._file_index += 1
            self._index += 1
            if image is not None:
                self._pacer.wait(t)  # after the conversion, as a camera's frame is ready when it is shown
                return Frame(image, t, index)
        return None

    def _release(self) -> None:
        self._frames.close()
        self._container.close()

    def close(self) -> None:
        self._closed = True
        self._release()


def _upright(frame) -> np.ndarray:
    """A PyAV frame's BGR pixels, turned as the file's display matrix says. Only the turn: a mirror in the
    matrix (rare) is not undone, since PyAV 16 leaks memory on every frame whose side data (where the whole
    matrix is) is read; its ``rotation`` reads the angle without leaking."""
    image = frame.to_ndarray(format="bgr24")
    turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise quarter turns to show it upright
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _decoded_frames(container, stream, path: Path):
    """The stream's frames, skipping damaged packets. A plain function: a generator holding its source
    would make a reference cycle, and each closed file's decoder (megabytes) would wait for the cycle
    collector (the window soak grew by 91 MB over 503 source switches)."""
    import av

    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.FFmpegError as exc:  # a damaged packet: the next keyframe decodes again
                log.debug("%s: packet skipped: %s", path, exc)
    except av.FFmpegError as exc:  # the container itself is damaged from here on: what was decoded comes out
        log.debug("%s: demuxing stopped: %s", path, exc)
        with contextlib.suppress(av.FFmpegError):
            yield from stream.decode(None)


class ImageFolderSource:
    """Still images, a folder's in name order or one image file, as a stream at ``fps``.

    Each image is shown for ``hold_s`` seconds (at least one frame): the tracker confirms a face over a
    few frames and fades it in, so a photo shown for one frame would never be stylized. The first frame
    of each image is a cut (:class:`engine.frames.Frame`): tracking starts over on it, and no face of the
    previous photo is drawn onto it. Unreadable files are skipped. ``loop`` starts over after the last
    image; ``paced`` plays in real time.
    """

    def __init__(
        self, path: Path | str, fps: float = 30.0, hold_s: float = 0.5, loop: bool = False, paced: bool = False
    ) -> None:
        self.folder = Path(path)
        self.name, self.fps, self.loop = self.folder.name, fps, loop
        if self.folder.is_dir():
            self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            self._files = [self.folder] if self.folder.suffix.lower() in IMAGE_SUFFIXES else []
        if not self._files:
            raise SourceError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self._frames_each = max(1, round(hold_s * fps))
        self._pacer = _Pacer(paced)
        self._pos = 0
        self._index = 0
        self._image: np.ndarray | None = None
        self._image_path: Path | None = None
        self._cut = False
        self._shown = 0
        self._starts: list[tuple[int, Path]] = []  # (first frame index, photo): which photo a frame showed
        self.skipped: list[str] = []

    @property
    def photos(self) -> list[Path]:
        """The image files the source shows, in order (unreadable ones included)."""
        return list(self._files)

    def photo_of(self, index: int) -> Path | None:
        """The photo that frame ``index`` showed (None before the first, or before the last
        :data:`REMEMBERED_PHOTOS` photos shown)."""
        at = bisect.bisect_right(self._starts, index, key=lambda start: start[0]) - 1
        return self._starts[at][1] if at >= 0 else None

    def _next_image(self) -> bool:
        """Move to the next readable image (starting over with ``loop``); False at the end."""
        for _ in range(2 if self.loop else 1):
            while self._pos < len(self._files):
                path = self._files[self._pos]
                self._pos += 1
                image = read_image_file(path)
                if image is None:
                    if path.name not in self.skipped:  # said once, not on every round of a slideshow
                        log.warning("%s: not a readable image, skipped", path)
                        self.skipped.append(path.name)
                    continue
                self._image, self._shown = to_bgr_uint8(image), 0
                self._starts.append((self._index, path))
                if len(self._starts) > 2 * REMEMBERED_PHOTOS:
                    del self._starts[:-REMEMBERED_PHOTOS]
                self._cut, self._image_path = path != self._image_path, path  # one photo looping is no cut
                return True
            self._pos = 0
        return False

    def read(self) -> Frame | None:
        if (self._image is None or self._shown >= self._frames_each) and not self._next_image():
            return None
        t = self._index / self.fps
        self._pacer.wait(t)
        frame = Frame(self._image, t, self._index, cut=self._cut)
        self._cut = False
        self._shown += 1
        self._index += 1
        return frame

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class DemoConfig:
    """The generated demo: the astronaut portrait moving along a smooth path with sensor noise."""

    width: int = 1280
    height: int = 720
    fps: float = 30.0
    frames: int | None = 300
    noise_sigma: float = 2.0
    still: bool = False
    paced: bool = False
    seed: int = 0


# Face centre of skimage's astronaut (512², measured with face mesh) and the base scale that makes
# the face about webcam size in a 720p frame.
_ASTRONAUT_FACE = (225.0, 110.0)
_BASE_SCALE = 2.0
_NOISE_PAD = 64


def astronaut(size: int | None = None) -> np.ndarray:
    """scikit-image's public-domain astronaut portrait (512², BGR; ``size``² area-resampled when given),
    read straight from its package data.

    scikit-image's own loader imports scipy, which the installer leaves out; the installer carries just
    this file, at the same place under its bundle folder. PyAV decodes it (libpng, under OpenCV, warns
    about the file's colour profile on every read).
    """
    import av

    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
    else:
        root = Path(getattr(sys, "_MEIPASS", ".")) / "skimage"
    path = root / "data" / "astronaut.png"
    try:
        with av.open(str(path)) as container:
            image = next(container.decode(video=0)).to_ndarray(format="bgr24")
    except (OSError, av.FFmpegError, StopIteration) as exc:
        raise SourceError(f"the demo portrait {path} is missing or unreadable (scikit-image's data): {exc}") from exc
    return image if size is None else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


class DemoSource:
    """Synthetic but realistic input that needs no camera and no data files.

    The public-domain astronaut portrait (scikit-image) moves along a Lissajous path with slow
    scale, rotation and lighting changes over a textured background, plus Gaussian sensor noise.
    ``still=True`` holds the pose so only the noise changes (the flicker measurement).
    """

    def __init__(self, config: DemoConfig = DemoConfig()):
        self.config = config
        self.name, self.fps = "demo", config.fps
        self._portrait = astronaut()
        self._background = self._make_background(config.width, config.height)
        self._rng = np.random.default_rng(config.seed)
        # Sensor noise: a window at a random offset into one pre-drawn noise field per frame. Shifted
        # white noise is uncorrelated with itself, and this costs a slice instead of a 3-Mpx draw.
        pad = _NOISE_PAD
        field = self._rng.normal(0.0, config.noise_sigma, (config.height + pad, config.width + pad, 3))
        self._noise = np.round(field).astype(np.int16)
        self._index = 0
        self._pacer = _Pacer(config.paced)

    @staticmethod
    def _make_background(w: int, h: int) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([90 + 50 * xx / w, 100 + 40 * yy / h, 120 + 30 * np.sin(xx / w * math.pi)], axis=-1)
        stripes = 12 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
        return np.clip(base + stripes[:, :, None], 0, 255).astype(np.uint8)

    def pose(self, t: float) -> tuple[float, float, float, float, float]:
        """(face x, face y, scale, angle in degrees, light gain) of the portrait at time t."""
        cfg = self.config
        if cfg.still:
            t = 0.0
        two_pi = 2 * math.pi
        x = cfg.width * (0.5 + 0.22 * math.sin(two_pi * t / 8.0))
        y = cfg.height * (0.45 + 0.08 * math.sin(two_pi * t / 5.3))
        scale = _BASE_SCALE * (cfg.height / 720.0) * (1.0 + 0.15 * math.sin(two_pi * t / 6.1))
        angle = 10.0 * math.sin(two_pi * t / 7.3)
        gain = 1.0 + 0.12 * math.sin(two_pi * t / 9.7)
        return x, y, scale, angle, gain

    def render(self, t: float) -> np.ndarray:
        cfg = self.config
        x, y, scale, angle, gain = self.pose(t)
        matrix = cv2.getRotationMatrix2D(_ASTRONAUT_FACE, angle, scale)
        matrix[:, 2] += np.array([x, y]) - np.array(_ASTRONAUT_FACE)
        frame = self._background.copy()
        cv2.warpAffine(
            self._portrait,
            matrix,
            (cfg.width, cfg.height),
            dst=frame,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
        )
        frame = cv2.convertScaleAbs(frame, alpha=gain)
        if cfg.noise_sigma <= 0:
            return frame
        dy, dx = self._rng.integers(0, _NOISE_PAD, 2)
        noise = self._noise[dy : dy + cfg.height, dx : dx + cfg.width]
        return cv2.add(frame, noise, dtype=cv2.CV_8U)

    def read(self) -> Frame | None:
        cfg = self.config
        if cfg.frames is not None and self._index >= cfg.frames:
            return None
        t = self._index / cfg.fps
        self._pacer.wait(t)
        frame = Frame(self.render(t), t, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        pass


def open_source(spec: str, paced: bool = False, max_frames: int | None = None, loop: bool = False) -> FrameSource:
    """Open ``demo``, ``demo:still``, ``camera:N`` / ``camera:/dev/videoN``, a video file or an image folder.

    ``max_frames`` None streams to the end (forever for the demo and cameras). ``loop``: a video file
    starts over at its end (the window's default), with timestamps that keep increasing.
    """
    if spec in ("demo", "demo:still"):
        return DemoSource(DemoConfig(frames=max_frames, still=spec.endswith("still"), paced=paced))
    if spec.startswith("camera:"):
        device = spec.split(":", 1)[1]
        return CameraSource(int(device) if device.isdigit() else device)
    path = Path(spec)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        # a window shows each photo a while (a slideshow); a batch run long enough to stylize it
        return ImageFolderSource(path, hold_s=STILL_HOLD_PACED_S if paced else STILL_HOLD_S, loop=loop, paced=paced)
    if path.is_file():
        return VideoFileSource(path, paced=paced, loop=loop, max_frames=max_frames)
    raise SourceError(f"unknown source '{spec}': use demo, camera:N, a video file or an image folder")
