"""One stylization session from options to report: what ``main.py stylize``, the demo and the benchmarks run."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.allocator import keep_frame_buffers_in_heap
from engine.backends import WarmupCache
from engine.bundle import Bundle, BundleRegistry
from engine.errors import SinkError
from engine.pipeline import PASSTHROUGH_LABEL, FrameResult, LoadedStyle, Pipeline, PipelineConfig, load_style
from engine.runtime import Runtime
from engine.sinks import Sink, StylizedPhotos, VideoRecorder, VirtualCameraSink
from engine.sources import IMAGE_SUFFIXES, ImageFolderSource, open_source
from engine.stats import FaceStats
from engine.tiers import TierPolicy
from engine.tracking import MESH_EVERY, MeshFaceTracker

log = logging.getLogger(__name__)

DEFAULT_STYLE = "anime"  # the flagship teacher-distilled style; any other installed one when it is missing
DEMO_FRAMES = 300  # the headless demo runs 10 s of the generated source unless told otherwise


@dataclass(frozen=True)
class SessionOptions:
    source: str = "demo"
    style: str = "auto"  # a style id, "auto" (the default style if installed) or "none" (pass-through)
    tier: str = "auto"
    backend: str = "auto"
    threads: int = 2
    max_faces: int = 4
    intensity: float | None = None
    temporal: float | None = None
    color_match: float | None = None
    skin_tone_limit: float | None = None  # L*; 0 turns the style's skin-tone guard off
    out: str | None = None
    report: str | None = None
    frames: int | None = None
    paced: bool = False
    virtual_camera: str | None = None  # a pyvirtualcam backend name
    style_per_face: tuple[str, ...] = ()  # style ids that new faces take in turn
    overlap: bool = True  # track the next frame while this one is rendered (off: one after the other)
    light_tracking: bool = True  # off: the dearer full tracking scheme (see engine.tracking.MultiScaleDetector)
    propagate_landmarks: bool = True  # off: face mesh on every frame (see engine.tracking.PropagatingDetector)
    redraw_every_face: bool = False  # on: no stylizer budget per frame (see engine.tiers.faces_to_redraw)


def resolve_style(style: str, registry: BundleRegistry | None = None) -> Bundle | None:
    """The bundle to run, or None for pass-through. 'auto' falls back to pass-through with a notice."""
    if style == "none":
        return None
    registry = registry or BundleRegistry()
    if style != "auto":
        return registry.get(style)
    scan = registry.scan()
    if DEFAULT_STYLE in scan.bundles:
        return scan.bundles[DEFAULT_STYLE]
    if scan.bundles:
        return scan.bundles[sorted(scan.bundles)[0]]
    return None


def passthrough_notice() -> str:
    return (
        f"No trained style is installed, so this runs a {PASSTHROUGH_LABEL}: faces are tracked, aligned and"
        " blended back unchanged. Train a style with `python main.py train all --source ink --data FACE_PHOTOS"
        " --style-id ink --preset cpu --install-to models` (or the window's training wizard), or copy a bundle"
        " into models/ or the user models folder."
    )


def load_face_style(bundle: Bundle, options: SessionOptions) -> LoadedStyle:
    """A style for some faces only: one fixed tier (the cheapest unless ``--tier`` names one), since the
    compute-tier controller follows the common style."""
    tier = options.tier if options.tier != "auto" else min(bundle.manifest.tiers, key=lambda t: t.gmacs).id
    return load_style(bundle, tier, options.backend, options.threads)


def pipeline_config(options: SessionOptions) -> PipelineConfig:
    """The live settings a session's options ask for (None: the bundle's defaults)."""
    return PipelineConfig(
        intensity=options.intensity,
        temporal_strength=options.temporal,
        color_match=options.color_match,
        skin_tone_limit=options.skin_tone_limit,
        redraw_budget_ms=None if options.redraw_every_face else PipelineConfig.redraw_budget_ms,
    )


def run_session(options: SessionOptions, extra_sinks: list[Sink] | None = None) -> dict:
    """Run a stream to its end (or until interrupted) and return the JSON report."""
    keep_frame_buffers_in_heap()  # before the runtimes' threads (engine.allocator says why)
    report_path = Path(options.report) if options.report else None
    if report_path is not None:  # found out now, not after the whole stream has run
        try:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            report_path.open("a").close()
        except OSError as exc:
            raise SinkError(f"{report_path}: cannot write the report there: {exc}") from exc
    started = time.monotonic()
    startup: dict[str, float] = {}  # seconds from the session's start: what a user waits for
    bundle = resolve_style(options.style)
    if bundle is None:
        log.warning("%s", passthrough_notice())
    style: LoadedStyle | None = None
    if bundle is not None:
        policy = TierPolicy()
        style = load_style(bundle, options.tier, options.backend, options.threads, policy, WarmupCache())
        startup["style_loaded"] = round(time.monotonic() - started, 3)
    lockstep = not options.paced and not options.source.startswith("camera:")
    frames = options.frames
    if frames is None and options.source.startswith("demo"):
        frames = DEMO_FRAMES
    source = open_source(options.source, paced=options.paced, max_frames=frames)
    sinks: list[Sink] = list(extra_sinks or [])
    recorder = photos = None
    # photos in, photos out: an image file, or a folder (a path without suffix); a video file otherwise
    image_out = options.out is not None and Path(options.out).suffix.lower() in ("", *IMAGE_SUFFIXES)
    try:
        if image_out and isinstance(source, ImageFolderSource):
            photos = StylizedPhotos(options.out, source.photo_of, source.photos)
            sinks.append(photos)
        elif image_out and Path(options.out).suffix:
            raise SinkError(f"{options.out}: images are written for photos; {source.name} is a stream (write .mp4)")
        elif options.out:
            recorder = VideoRecorder(options.out, fps=source.fps)
            sinks.append(recorder)
    except SinkError:
        source.close()
        raise
    config = pipeline_config(options)
    tracker = MeshFaceTracker(
        max_faces=options.max_faces,
        light=options.light_tracking,
        mesh_every=MESH_EVERY if options.propagate_landmarks else 1,
    )
    pipeline = Pipeline(tracker, style, config)
    if options.style_per_face:
        registry = BundleRegistry()
        pipeline.set_style_cycle([load_face_style(registry.get(sid), options) for sid in options.style_per_face])
    if options.virtual_camera:
        sinks.append(VirtualCameraSink(fps=source.fps, backend=options.virtual_camera))
    faces = FaceStats()
    tiers_used: dict[str, int] = {}

    def observe(result: FrameResult) -> None:
        if "first_stylized_frame" not in startup and any(f.stylized for f in result.faces):
            startup["first_stylized_frame"] = round(time.monotonic() - started, 3)
        faces.add([f.track_id for f in result.faces])
        if result.tier:
            tiers_used[result.tier] = tiers_used.get(result.tier, 0) + 1

    runtime = Runtime(source, pipeline, sinks, lockstep=lockstep, on_result=observe, overlap=options.overlap)
    runtime.start()
    try:
        runtime.wait()
    except KeyboardInterrupt:
        log.info("interrupted; finishing")
        runtime.stop(timeout=5.0)
    finally:
        pipeline.close()
        source.close()
    output = None
    if recorder is not None:
        output = {"path": options.out, "codec": recorder.codec, "frames": recorder.frames}
    elif photos is not None:
        output = {"path": options.out, "photos": [str(p) for p in photos.written]}
    report = {
        "options": asdict(options),
        "source": {"name": source.name, "fps": source.fps, "truncated": getattr(source, "truncated", False)},
        "style": bundle.id if bundle else None,
        "style_label": bundle.manifest.name if bundle else PASSTHROUGH_LABEL,
        "style_per_face": list(options.style_per_face),
        "tiers_used": tiers_used,
        "backend": style.active.stylizer.runtime if style else None,
        "faces": faces.summary(),
        "runtime": runtime.report(),
        "startup_s": startup,
        "output": output,
        "cpu_count": os.cpu_count(),
    }
    if report_path is not None:
        try:
            report_path.write_text(json.dumps(report, indent=2))
        except OSError as exc:
            raise SinkError(f"{report_path}: writing the report failed: {exc}") from exc
    return report
