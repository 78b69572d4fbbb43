"""The window's controller: owns the engine's pipeline and runtime, and turns results into Qt signals.

All engine work runs on the runtime's threads; results cross into the GUI thread through a queued
signal. At most one such signal is in flight: a result that arrives while the GUI has not yet taken the
previous one replaces it, so the preview shows the newest frame and never builds a backlog.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from engine.bundle import Bundle, BundleRegistry
from engine.errors import StylecastError
from engine.pipeline import FrameResult, Pipeline, load_style
from engine.runtime import Runtime
from engine.sinks import CallbackSink, SinkSlot, SnapshotSink, VideoRecorder, VirtualCameraSink
from engine.sources import open_source
from engine.tracking import MeshFaceTracker

log = logging.getLogger(__name__)


class StreamController(QObject):
    """Start/stop streams, switch sources and styles live, record, snapshot, virtual camera."""

    frame_ready = Signal(object)  # FrameResult
    status = Signal(str)  # an event: a style loading, a recording's file, an error
    live_status = Signal(str)  # once a second: frame rate, faces, style; or that the stream ended
    styles_changed = Signal(list)  # list[Bundle]
    source_failed = Signal(str)  # the source spec that could not be opened
    output_stopped = Signal(str)  # the recorder or the virtual camera failed and was detached (its slot's name)

    def __init__(self, registry: BundleRegistry | None = None, max_faces: int = 4, parent: QObject | None = None):
        super().__init__(parent)
        self.registry = registry or BundleRegistry()
        self.pipeline = Pipeline(MeshFaceTracker(max_faces=max_faces))
        self.recorder = SinkSlot("recorder")
        self.virtual_camera = SinkSlot("virtual camera")
        self.snapshots = SnapshotSink()
        self.runtime: Runtime | None = None
        self.source_spec: str | None = None
        self.bundles: dict[str, Bundle] = {}
        self.last_result: FrameResult | None = None
        self._newest: FrameResult | None = None
        self._newest_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._start_generation = 0
        self._rate_mark: tuple[float, int] = (time.monotonic(), 0)
        self._stopped_reported: set[str] = set()  # outputs whose failure output_stopped already told
        self._status_timer = QTimer(self)
        self._status_timer.timeout.connect(self._report_status)
        self._status_timer.start(1000)

    # ----- styles -----------------------------------------------------------------------------

    def refresh_styles(self) -> list[Bundle]:
        scan = self.registry.scan()
        self.bundles = scan.bundles
        for folder, err in scan.errors.items():
            self.status.emit(f"rejected bundle {folder.name}: {err}")
        bundles = [self.bundles[k] for k in sorted(self.bundles)]
        self.styles_changed.emit(bundles)
        return bundles

    def set_style(self, style_id: str | None, tier: str = "auto", backend: str = "auto") -> None:
        """Hot-swap to a style (None: pass-through). Loads in the background; the stream keeps running."""
        if style_id is None:
            self.pipeline.request_passthrough()  # the model closes at a frame boundary, never mid-inference
            return
        self.pipeline.request_style(self.bundles[style_id], tier, backend)
        self.status.emit(f"loading style {style_id}…")

    def set_face_style(self, track_id: int, style_id: str | None, tier: str = "light") -> None:
        """Give one tracked face its own style (None: back to the common one). Loads in the background."""
        if style_id is None:
            self.pipeline.assign_face_style(track_id, None)
            self.status.emit(f"face {track_id}: the common style")
            return
        bundle = self.bundles[style_id]

        with self._start_lock:
            generation = self._start_generation

        def work() -> None:
            try:
                tier_id = tier if any(t.id == tier for t in bundle.manifest.tiers) else bundle.manifest.tiers[0].id
                style = load_style(bundle, tier_id, "auto", 2)
                with self._start_lock:
                    if generation != self._start_generation:  # another stream started: that face is gone
                        style.close()
                        return
                    self.pipeline.assign_face_style(track_id, style)
                self.status.emit(f"face {track_id}: {bundle.manifest.name}")
            except (StylecastError, OSError, ValueError) as exc:
                self.status.emit(f"could not load style '{style_id}' for face {track_id}: {exc}")

        threading.Thread(target=work, name=f"face-style-{track_id}", daemon=True).start()
        self.status.emit(f"loading style {style_id} for face {track_id}…")

    def update_config(self, **changes: float | None) -> None:
        """Change live settings (the fields of ``PipelineConfig``) for the next frame."""
        self.pipeline.config = replace(self.pipeline.config, **changes)

    # ----- stream -----------------------------------------------------------------------------

    def start(self, source_spec: str, loop: bool = True) -> bool:
        """Open a source and stream it (stopping the previous one). False, with a status, on failure.

        ``loop``: a video file starts over at its end instead of stopping. A camera opens on a worker
        thread (opening one can take seconds, and must not freeze the window): True then means "opening";
        a failure arrives as a status and as ``source_failed``.
        """
        self.stop()
        with self._start_lock:
            generation = self._start_generation
        if source_spec.startswith("camera:"):
            self.status.emit(f"opening {source_spec}…")
            self.live_status.emit(f"opening {source_spec}…")
            threading.Thread(target=self._open, args=(source_spec, loop, generation), daemon=True).start()
            return True
        return self._open(source_spec, loop, generation)

    def _open(self, source_spec: str, loop: bool, generation: int) -> bool:
        try:
            source = open_source(source_spec, paced=True, loop=loop)
        except StylecastError as exc:
            with self._start_lock:
                current = generation == self._start_generation
            if current:  # not a camera that failed after the user chose another source
                self.status.emit(str(exc))
                self.live_status.emit(f"no stream: {exc}")
                self.source_failed.emit(source_spec)
            return False
        sinks = [CallbackSink(self._on_result, "preview"), self.recorder, self.virtual_camera, self.snapshots]
        with self._start_lock:
            if generation != self._start_generation:  # another source was chosen (or stop) meanwhile
                source.close()
                return False
            self.source_spec = source_spec
            self.pipeline.new_stream()  # the faces of the previous stream are not in this one
            self._rate_mark = (time.monotonic(), 0)
            self.runtime = Runtime(source, self.pipeline, sinks).start()
        self.status.emit(f"streaming {source.name}")
        return True

    def stop(self) -> None:
        with self._start_lock:
            self._start_generation += 1  # a camera still opening is closed when it arrives
            runtime, self.runtime = self.runtime, None
        self.live_status.emit("")  # the stopped stream's figures
        if runtime is not None:
            if not runtime.stop(timeout=2.0) and not runtime.wait(timeout=10.0):
                log.error("the stream did not stop in 12 s; its source is left open rather than closed under it")
                return
            runtime.source.close()

    def shutdown(self) -> None:
        """Stop the stream, then finalise a recording in progress (its file stays playable) and the camera."""
        self.stop()
        self.recorder.release()
        self.virtual_camera.release()
        self.pipeline.close()

    def _on_result(self, result: FrameResult) -> None:
        """Runtime thread: keep the newest result; signal the GUI only when it has taken the last one."""
        self.last_result = result
        with self._newest_lock:
            pending, self._newest = self._newest is not None, result
        if not pending:
            self.frame_ready.emit(result)

    def take_newest(self) -> FrameResult | None:
        """GUI thread: the newest result not yet shown (None when it was already taken)."""
        with self._newest_lock:
            result, self._newest = self._newest, None
        return result

    # ----- outputs ----------------------------------------------------------------------------

    def start_recording(self, path: Path | str) -> None:
        """Record the stream; the file plays at the pace the frames were captured (their timestamps)."""
        runtime = self.runtime
        self._stopped_reported.discard(self.recorder.name)
        self.recorder.attach(VideoRecorder(path, fps=runtime.source.fps if runtime else 30.0))
        self.status.emit(f"recording to {path}")

    def stop_recording(self) -> None:
        if self.runtime is None or not self.runtime.running:
            self.recorder.release()  # no stream: no sink thread will close it on its next write
        else:
            self.recorder.attach(None)
        self.status.emit("recording stopped")

    def set_virtual_camera(self, enabled: bool, backend: str | None = None) -> None:
        self._stopped_reported.discard(self.virtual_camera.name)
        self.virtual_camera.attach(VirtualCameraSink(backend=backend) if enabled else None)

    def snapshot(self, path: Path | str) -> None:
        self.snapshots.request(path)

    # ----- status -----------------------------------------------------------------------------

    def _report_status(self) -> None:
        for slot in (self.recorder, self.virtual_camera):
            if slot.last_error and not slot.attached and slot.name not in self._stopped_reported:
                self._stopped_reported.add(slot.name)
                self.output_stopped.emit(slot.name)
        if self.runtime is None:
            return
        if not self.runtime.running:  # the stream ended by itself: say so, do not show a frozen "0 fps"
            name, status = self.runtime.source.name, self.runtime.status
            if status.captured:
                hint = "" if getattr(self.runtime.source, "loop", True) else " (or tick 'Loop files')"
                self.live_status.emit(f"{name} ended; choose the source again to replay it{hint}")
            else:
                self.live_status.emit(f"{name} gave no frames: {status.last_error or 'nothing to read'}")
            return
        report = self.runtime.report()
        now, processed = time.monotonic(), report["frames_processed"]
        then, before = self._rate_mark
        self._rate_mark = (now, processed)
        parts = [f"{(processed - before) / max(now - then, 1e-6):.1f} fps"]
        r = self.last_result
        if r is not None:
            parts.append(f"{len(r.faces)} face(s)")
            parts.append(f"{r.style}/{r.tier} on {r.backend}" if r.style else "pass-through")
            parts += [f"face {f.track_id}: {f.style}" for f in r.faces if f.style and f.style != r.style]
            if r.error:
                parts.append(f"error: {r.error}")
        for slot in (self.recorder, self.virtual_camera):
            if slot.last_error:
                parts.append(slot.last_error)
        if report["last_error"] and (r is None or report["last_error"] != r.error):
            parts.append(report["last_error"])
        self.live_status.emit(" · ".join(p for p in parts if p))
