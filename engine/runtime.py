"""The threaded runtime: capture, tracking, rendering and each sink on their own thread.

Threads talk through one-slot mailboxes: the newest frame wins, a frame that was replaced before
anyone took it is dropped and counted, and nothing ever queues without bound. In lockstep mode (files,
the demo, benchmarks) the mailboxes block instead of dropping, so every frame is processed.

With ``overlap`` (the default) the tracker works on frame N+1 while frame N is rendered (aligned,
stylized, blended): the two halves of :class:`engine.pipeline.Pipeline` run on two threads. The hand-off
between them always waits for the renderer, so at most one tracked frame is ever ahead of it and no
tracking work is thrown away; newer camera frames replace older ones before tracking instead.
Every frame carries the time it was captured, so reports give capture → sink latency.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import numpy as np

from engine.allocator import keep_frame_buffers_in_heap
from engine.errors import SinkError, SourceError
from engine.frames import Frame
from engine.pipeline import FrameResult, Pipeline, TrackedFrame
from engine.sinks import Sink
from engine.sources import FrameSource
from engine.stats import StageTimes

log = logging.getLogger(__name__)

T = TypeVar("T")


def _keep_cut(unread: tuple[Frame, float, float], new: tuple[Frame, float, float]) -> tuple[Frame, float, float]:
    """The newer frame replaces an unread one, but a cut must not be lost with it: the next photo's faces
    would continue the previous photo's tracks."""
    if unread[0].cut and not new[0].cut:
        return (replace(new[0], cut=True), *new[1:])
    return new


class Mailbox(Generic[T]):
    """A one-slot mailbox. ``put`` replaces an unread item (counted in ``dropped``) unless ``lockstep``,
    in which case it waits for the reader. ``close`` wakes everyone; ``get`` then returns None.
    ``merge(unread, new)`` gives what replaces an unread item (default: the new one)."""

    def __init__(self, lockstep: bool = False, merge: Callable[[T, T], T] | None = None) -> None:
        self.lockstep = lockstep
        self._merge = merge
        self._item: T | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: T) -> bool:
        """False when the mailbox is closed."""
        with self._cond:
            if self.lockstep:
                while self._item is not None and not self._closed:
                    self._cond.wait(0.1)
            if self._closed:
                return False
            if self._item is not None:
                self.dropped += 1
                if self._merge is not None:
                    item = self._merge(self._item, item)
            self._item = item
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._item is None and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.1)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def _image_of(frame: Frame) -> np.ndarray | None:
    """What a failed frame passes through: its image, when it is one."""
    return frame.image if isinstance(frame.image, np.ndarray) else None


@dataclass
class RuntimeStatus:
    """Counters of a running stream (read them any time; they only grow)."""

    captured: int = 0
    processed: int = 0
    source_errors: int = 0
    last_error: str | None = None
    sink_written: dict[str, int] = field(default_factory=dict)
    sink_errors: dict[str, str] = field(default_factory=dict)
    ended: bool = False


class Runtime:
    """Runs ``source → pipeline → sinks`` on threads until the source ends or :meth:`stop` is called."""

    def __init__(
        self,
        source: FrameSource,
        pipeline: Pipeline,
        sinks: list[Sink],
        lockstep: bool = False,
        on_result: Callable[[FrameResult], None] | None = None,
        retry_delay: float = 0.05,
        overlap: bool = True,
    ) -> None:
        self.source, self.pipeline, self.sinks = source, pipeline, sinks
        keep_frame_buffers_in_heap()
        self.lockstep = lockstep
        self.overlap = overlap
        self.on_result = on_result
        self.retry_delay = retry_delay
        self.status = RuntimeStatus(sink_written={s.name: 0 for s in sinks})
        self.times = StageTimes()
        # frame, decode ms, captured at; a dropped frame's cut carries over (engine.frames.Frame)
        self._frames: Mailbox[tuple[Frame, float, float]] = Mailbox(lockstep, merge=_keep_cut)
        self._tracked: Mailbox[tuple[TrackedFrame, float, float]] = Mailbox(lockstep=True)
        self._sink_boxes: list[Mailbox[tuple[FrameResult, float]]] = [Mailbox(lockstep) for _ in sinks]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._started_at: float | None = None
        self._finished_at: float | None = None

    # ----- threads ----------------------------------------------------------------------------

    def _capture(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = self.source.read()
                except Exception as exc:  # SourceError, or a decoder's own error: count it, retry
                    if not isinstance(exc, SourceError):
                        log.exception("frame source failed")
                    with self._lock:
                        self.status.source_errors += 1
                        self.status.last_error = str(exc)
                    self._stop.wait(self.retry_delay)
                    continue
                if frame is None:
                    break
                captured_at = time.perf_counter()
                with self._lock:
                    self.status.captured += 1
                if not self._frames.put((frame, (captured_at - t0) * 1000, captured_at)):
                    break
        finally:  # whatever happened, the processing thread must learn that no more frames come
            self._frames.close()

    def _track_one(self, frame: Frame) -> TrackedFrame:
        """The first half; an unexpected exception becomes the frame's error (no faces)."""
        try:
            return self.pipeline.track(frame)
        except Exception as exc:
            log.exception("tracking frame %d failed", frame.index)
            return TrackedFrame(frame, _image_of(frame), (), 0.0, f"frame failed: {exc}")

    def _render_one(self, tracked: TrackedFrame) -> FrameResult:
        """The second half; an unexpected exception becomes the frame's error, with the frame passed through."""
        try:
            return self.pipeline.render(tracked)
        except Exception as exc:
            frame = tracked.frame
            log.exception("frame %d failed", frame.index)
            error = f"frame failed: {exc}"
            return FrameResult(_image_of(frame), frame.index, frame.timestamp, (), {}, None, None, None, error)

    def _track(self) -> None:
        try:
            while True:
                item = self._frames.get()
                if item is None:
                    break
                frame, decode_ms, captured_at = item
                if not self._tracked.put((self._track_one(frame), decode_ms, captured_at)):
                    break
        finally:
            self._frames.close()
            self._tracked.close()

    def _next_tracked(self) -> tuple[TrackedFrame, float, float] | None:
        if self.overlap:
            return self._tracked.get()
        item = self._frames.get()
        if item is None:
            return None
        frame, decode_ms, captured_at = item
        return self._track_one(frame), decode_ms, captured_at

    def _process(self) -> None:
        try:
            while True:
                item = self._next_tracked()
                if item is None:
                    break
                tracked, decode_ms, captured_at = item
                result = self._render_one(tracked)
                self.times.add("decode", decode_ms)
                self.times.add_all(result.timings)
                self.times.add("latency", (time.perf_counter() - captured_at) * 1000)
                with self._lock:
                    self.status.processed += 1
                    if result.error:
                        self.status.last_error = result.error
                if self.on_result is not None:
                    try:
                        self.on_result(result)
                    except Exception:
                        log.exception("result callback failed")
                for box in self._sink_boxes:
                    box.put((result, captured_at))
        finally:  # sinks finish and close even when processing died
            self._frames.close()
            self._tracked.close()
            for box in self._sink_boxes:
                box.close()
            self._finished_at = time.perf_counter()

    def _sink_failed(self, sink: Sink, exc: Exception) -> None:
        with self._lock:
            self.status.sink_errors[sink.name] = str(exc)
            self.status.last_error = str(exc)
        if isinstance(exc, SinkError):
            log.error("%s", exc)
        else:
            log.exception("sink %s failed", sink.name)

    def _drain(self, sink: Sink, box: Mailbox[tuple[FrameResult, float]]) -> None:
        failed = False
        try:
            while True:
                item = box.get()
                if item is None:
                    break
                result, captured_at = item
                if failed:
                    continue
                t0 = time.perf_counter()
                try:
                    sink.write(result)
                except Exception as exc:  # one sink failing never stops the stream or the others
                    failed = not getattr(sink, "independent_writes", False)
                    self._sink_failed(sink, exc)
                    continue
                done = time.perf_counter()
                self.times.add(f"sink:{sink.name}", (done - t0) * 1000)
                self.times.add(f"latency:{sink.name}", (done - captured_at) * 1000)
                with self._lock:
                    self.status.sink_written[sink.name] += 1
        finally:
            box.close()  # a lockstep writer must not wait on a reader that is gone
            try:
                sink.close()
            except Exception as exc:
                self._sink_failed(sink, exc)

    # ----- control ----------------------------------------------------------------------------

    def start(self) -> Runtime:
        self._started_at = time.perf_counter()
        self._threads = [
            threading.Thread(target=self._capture, name="capture", daemon=True),
            *([threading.Thread(target=self._track, name="track", daemon=True)] if self.overlap else []),
            threading.Thread(target=self._process, name="process", daemon=True),
        ] + [
            threading.Thread(target=self._drain, args=(s, b), name=f"sink-{s.name}", daemon=True)
            for s, b in zip(self.sinks, self._sink_boxes)
        ]
        for th in self._threads:
            th.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the stream to end by itself (finite sources). True when every thread finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for th in self._threads:
            th.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        done = not any(th.is_alive() for th in self._threads)
        self.status.ended = done
        return done

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop capture, let in-flight frames finish, close the sinks. True when all threads ended in time."""
        self._stop.set()
        self._frames.close()
        self._tracked.close()
        return self.wait(timeout)

    @property
    def running(self) -> bool:
        return any(th.is_alive() for th in self._threads)

    def report(self) -> dict:
        """Counters, drops, per-stage p50/p95 timings and latencies as a JSON-ready dict.

        ``latency_ms``: from the moment a frame was read to the moment it was rendered (``rendered``) and
        to the moment each sink had written it.
        """
        end = self._finished_at or time.perf_counter()
        wall = end - self._started_at if self._started_at else 0.0
        stages = self.times.summary()
        latency = {
            name.partition(":")[2] or "rendered": {"p50": v["p50"], "p95": v["p95"]}
            for name, v in stages.items()
            if name.partition(":")[0] == "latency"
        }
        with self._lock:
            s = self.status
            return {
                "frames_captured": s.captured,
                "frames_processed": s.processed,
                "dropped_before_processing": self._frames.dropped,
                "dropped_per_sink": {sk.name: b.dropped for sk, b in zip(self.sinks, self._sink_boxes)},
                "sink_written": dict(s.sink_written),
                "sink_errors": dict(s.sink_errors),
                "source_errors": s.source_errors,
                "last_error": s.last_error,
                "overlap": self.overlap,
                "wall_s": round(wall, 3),
                "fps": round(s.processed / wall, 2) if wall > 0 else 0.0,
                "latency_ms": latency,
                "stages_ms": {k: v for k, v in stages.items() if not k.startswith("latency")},
            }
