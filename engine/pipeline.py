"""The synchronous per-frame pipeline: track → align → stylize → smooth → blend back.

A face is blended through its student's predicted alpha when the bundle has one (smoothed over time like
the colour), otherwise through the fixed feathered mask.

``Pipeline.process(frame)`` is one deterministic step that the tests drive. It is two halves,
:meth:`Pipeline.track` (the tracker's state) and :meth:`Pipeline.render` (the styles' and faces' state),
so the runtime can track frame N+1 on one thread while another renders frame N. Errors travel as
data in :class:`FrameResult`: a bad frame, a failing face or a failed style load is reported and the
stream goes on. Styles hot-swap at frame boundaries: a new bundle loads and
warms up on a background thread while the old one keeps serving.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from engine.align import (
    TEMPLATES,
    Similarity,
    SimilaritySmoother,
    SmoothingConfig,
    similarity_from_landmarks,
    warp_crop,
)
from engine.backends import TierModel, WarmupCache, load_tier, time_stylizer
from engine.blend import ColorMatcher, SkinToneGuard, face_skin_region, feather_mask, learned_mask, paste_back
from engine.bundle import AlignSpec, BlendDefaults, Bundle
from engine.errors import StylecastError
from engine.frames import Frame, to_bgr_uint8
from engine.temporal import TemporalConfig, TemporalSmoother
from engine.tiers import TierController, TierPolicy
from engine.tracking import FaceTracker, TrackedFace

log = logging.getLogger(__name__)

PASSTHROUGH_LABEL = "pass-through (no style installed)"


@dataclass(frozen=True)
class PipelineConfig:
    """Live settings. ``None`` means "use the active bundle's default"."""

    intensity: float | None = None
    color_match: float | None = None
    temporal_strength: float | None = None
    feather: float | None = None
    skin_tone_limit: float | None = None
    smoothing: SmoothingConfig = SmoothingConfig()
    jump_faces: float = 0.5  # a centre jump of this many face sizes in one frame resets a face's state
    passthrough_crop: int = 256


@dataclass(frozen=True)
class FaceObservation:
    track_id: int
    box: tuple[float, float, float, float]
    raw: Similarity
    smoothed: Similarity
    opacity: float
    seen: bool
    stylized: bool
    style: str | None = None  # the style this face was drawn in (faces may have their own)


@dataclass(frozen=True)
class FrameResult:
    """Everything one step produced. ``image`` is None only when the input was not an image at all."""

    image: np.ndarray | None
    index: int
    timestamp: float
    faces: tuple[FaceObservation, ...]
    timings: dict[str, float]
    style: str | None
    tier: str | None
    backend: str | None
    error: str | None = None


@dataclass(frozen=True)
class TrackedFrame:
    """A frame after its first half: the BGR image (None when the input was not an image) and its faces."""

    frame: Frame
    image: np.ndarray | None
    faces: tuple[TrackedFace, ...]
    track_ms: float
    error: str | None = None


@dataclass
class LoadedStyle:
    """A bundle with its tiers loaded (cheapest first) and the controller choosing among them."""

    bundle: Bundle
    models: list[TierModel]
    controller: TierController | None

    @property
    def active(self) -> TierModel:
        return self.models[self.controller.index if self.controller else 0]

    def close(self) -> None:
        for m in self.models:
            m.close()


def load_style(
    bundle: Bundle,
    tier: str = "auto",
    backend: str = "auto",
    threads: int = 2,
    policy: TierPolicy = TierPolicy(),
    cache: WarmupCache | None = None,
) -> LoadedStyle:
    """Load one tier, or with ``tier='auto'`` every tier plus a controller starting at the best that fits.

    ``cache``: this machine's warm-up timings (see :class:`engine.backends.WarmupCache`); a second start
    with the same bundle, runtimes and CPU then measures nothing.
    """
    if tier != "auto":
        return LoadedStyle(bundle, [load_tier(bundle, bundle.tier(tier), backend, threads)], None)
    tiers = sorted(bundle.manifest.tiers, key=lambda t: t.gmacs)
    models = [load_tier(bundle, t, backend, threads, bench_runs=5, cache=cache) for t in tiers]
    times = [m.ms if math.isfinite(m.ms) else time_stylizer(m.stylizer, runs=5) for m in models]
    fitting = [i for i, ms in enumerate(times) if ms <= policy.budget_ms]
    start = fitting[-1] if fitting else 0
    log.info("tiers %s measured %s ms; starting with %s", [t.id for t in tiers], times, tiers[start].id)
    return LoadedStyle(bundle, models, TierController(times, start, policy))


@dataclass
class _FaceState:
    smoother: SimilaritySmoother
    temporal: TemporalSmoother
    color: ColorMatcher
    tone: SkinToneGuard
    last_raw: Similarity | None = None
    style_id: str | None = None  # smoothing state belongs to one style's outputs


@dataclass
class _SwapRequest:
    result: LoadedStyle | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Pipeline:
    """Owns the tracker, the active style and each face's smoothing state."""

    def __init__(
        self, tracker: FaceTracker, style: LoadedStyle | None = None, config: PipelineConfig = PipelineConfig()
    ):
        self.tracker = tracker
        self.style = style
        self.config = config
        self._faces: dict[int, _FaceState] = {}
        self._frame_shape: tuple[int, ...] | None = None  # render's frame geometry
        self._tracked_shape: tuple[int, ...] | None = None  # track's frame geometry
        self._swap: _SwapRequest | None = None  # the next style to apply at a frame boundary
        self._final: _SwapRequest | None = None  # the last request's measured style
        self._generation = 0  # bumped by every request; loads of older requests are discarded
        self._face_styles: dict[int, LoadedStyle] = {}  # track id -> its own style
        self._face_requests: dict[int, LoadedStyle | None] = {}
        self._cycle: list[LoadedStyle] = []  # --style-per-face: new faces take these in turn
        self._cycle_request: list[LoadedStyle] | None = None
        self._cycle_of: dict[int, int] = {}
        self._cycle_next = 0
        self._lock = threading.Lock()
        self.swaps = 0

    # ----- style management -------------------------------------------------------------------

    def request_style(self, bundle: Bundle, tier: str = "auto", backend: str = "auto", threads: int = 2) -> None:
        """Start loading ``bundle`` in the background; it replaces the active style at a frame boundary.

        With ``tier='auto'`` on a machine that has not measured this bundle yet, the cheapest tier is
        swapped in first (no benchmark) so faces are stylized at once, while every tier is timed in the
        background; the measured style then replaces it. Later starts take the timings from the cache.
        """
        cache = WarmupCache()
        with self._lock:
            self._generation += 1
            generation = self._generation
            final = self._swap = self._final = _SwapRequest()

        def work() -> None:
            try:
                if tier == "auto" and not cache.knows(bundle, backend, threads):
                    cheapest = min(bundle.manifest.tiers, key=lambda t: t.gmacs)
                    runtimes = [f.runtime for f in cheapest.files if backend in ("auto", f.runtime)]
                    quick = _SwapRequest(load_style(bundle, cheapest.id, "onnx" if "onnx" in runtimes else backend))
                    quick.done.set()
                    self._offer(generation, quick)
                final.result = load_style(bundle, tier, backend, threads, cache=cache)
            except (StylecastError, OSError, ValueError) as exc:
                final.error = f"could not load style '{bundle.id}': {exc}"
                log.error("%s", final.error)
            finally:
                final.done.set()
                if not self._offer(generation, final) and final.result is not None:
                    final.result.close()  # another style was requested meanwhile

        threading.Thread(target=work, name=f"load-{bundle.id}", daemon=True).start()

    def _offer(self, generation: int, req: _SwapRequest) -> bool:
        """Queue a loaded style for the next frame boundary unless a newer request superseded it."""
        with self._lock:
            if generation != self._generation:
                if req.result is not None and req is not self._final:
                    req.result.close()
                return False
            old, self._swap = self._swap, req
        if (
            old is not None
            and old is not req
            and old.done.is_set()
            and old.result is not None
            and old is not self._final
        ):
            old.result.close()  # a quick style that no frame took before the measured one arrived
        return True

    def request_passthrough(self) -> None:
        """Drop the active style at the next frame boundary (never while a frame is being stylized)."""
        req = _SwapRequest()
        req.done.set()
        with self._lock:
            self._generation += 1
            self._swap = self._final = req

    def wait_for_swap(self, timeout: float = 30.0) -> bool:
        """Block until the last requested style has loaded (tests, CLI start-up). True when it finished."""
        req = self._final
        return req is not None and req.done.wait(timeout)

    def _apply_pending_swap(self) -> str | None:
        with self._lock:
            req = self._swap
            if req is None or not req.done.is_set():
                return None
            self._swap = None
        if req.error:
            return req.error  # the old style keeps serving
        old, self.style = self.style, req.result
        self._faces.clear()  # smoothing state belongs to the old style's outputs
        self.swaps += 1
        if old is not None:
            old.close()
        log.info("style switched to %s", self.style.bundle.id if self.style else None)
        return None

    # ----- per frame --------------------------------------------------------------------------

    def _settings(self, style: LoadedStyle | None) -> BlendDefaults:
        """The active bundle's blend defaults with the live overrides applied."""
        cfg = self.config
        defaults = BlendDefaults(color_match=0.0, temporal=0.0) if style is None else style.bundle.manifest.blend
        overrides = {
            "intensity": cfg.intensity,
            "color_match": cfg.color_match,
            "temporal": cfg.temporal_strength,
            "feather": cfg.feather,
            "skin_tone_limit": cfg.skin_tone_limit,
        }
        return replace(defaults, **{k: v for k, v in overrides.items() if v is not None})

    def _state(self, track_id: int, temporal: float, style_id: str | None) -> _FaceState:
        state = self._faces.get(track_id)
        if state is None or state.temporal.config.strength != temporal or state.style_id != style_id:
            state = _FaceState(
                SimilaritySmoother(self.config.smoothing),
                TemporalSmoother(TemporalConfig(strength=temporal)),
                ColorMatcher(),
                SkinToneGuard(),
                style_id=style_id,
            )
            self._faces[track_id] = state
        return state

    # ----- per-face styles --------------------------------------------------------------------

    def assign_face_style(self, track_id: int, style: LoadedStyle | None) -> None:
        """Give one tracked face its own (loaded) style from the next frame on; None: the common style."""
        with self._lock:
            self._face_requests[track_id] = style

    def set_style_cycle(self, styles: list[LoadedStyle]) -> None:
        """Each new face takes the next of ``styles`` in the order faces appear (``--style-per-face``)."""
        with self._lock:
            self._cycle_request = list(styles)

    def _apply_face_requests(self) -> None:
        with self._lock:
            requests, self._face_requests = self._face_requests, {}
            cycle, self._cycle_request = self._cycle_request, None
        for track_id, style in requests.items():
            old = self._face_styles.pop(track_id, None)
            if style is not None:
                self._face_styles[track_id] = style
            self._close_unused(old)
        if cycle is not None:
            old_cycle, self._cycle, self._cycle_next = self._cycle, cycle, 0
            self._cycle_of.clear()
            for style in old_cycle:
                self._close_unused(style)

    def _close_unused(self, style: LoadedStyle | None) -> None:
        in_use = [self.style, *self._face_styles.values(), *self._cycle]
        if style is not None and all(style is not s for s in in_use):
            style.close()

    def _style_for(self, track_id: int) -> LoadedStyle | None:
        if track_id in self._face_styles:
            return self._face_styles[track_id]
        if self._cycle:
            if track_id not in self._cycle_of:
                self._cycle_of[track_id] = self._cycle_next % len(self._cycle)
                self._cycle_next += 1
            return self._cycle[self._cycle_of[track_id]]
        return self.style

    def _jumped(self, state: _FaceState, raw: Similarity) -> bool:
        last = state.last_raw
        if last is None:
            return True
        shift = math.hypot(raw.cx - last.cx, raw.cy - last.cy) / last.side
        return shift > self.config.jump_faces or abs(raw.log_side - last.log_side) > 0.3

    def process(self, frame: Frame) -> FrameResult:
        """Both halves of one step, one after the other."""
        return self.render(self.track(frame))

    def track(self, frame: Frame) -> TrackedFrame:
        """First half: normalise the image and find its faces. Touches only the tracker."""
        t_start = time.perf_counter()
        try:
            image = to_bgr_uint8(frame.image)
        except ValueError as exc:
            return TrackedFrame(frame, None, (), 0.0, f"bad frame: {exc}")
        if image.shape != self._tracked_shape:  # new geometry: old tracks are meaningless
            if self._tracked_shape is not None:
                self.tracker.reset()
            self._tracked_shape = image.shape
        try:
            faces, error = tuple(self.tracker(image, frame.timestamp)), None
        except Exception as exc:  # mediapipe raises plain RuntimeErrors on graph failures
            log.exception("tracking failed")
            faces, error = (), f"tracking failed: {exc}"
        return TrackedFrame(frame, image, faces, (time.perf_counter() - t_start) * 1000, error)

    def render(self, tracked: TrackedFrame) -> FrameResult:
        """Second half: align, stylize, smooth and blend each tracked face. Applies pending style swaps."""
        t_start = time.perf_counter()
        frame, image, faces = tracked.frame, tracked.image, tracked.faces
        errors = [e for e in [self._apply_pending_swap(), tracked.error] if e]
        timings = {"track": tracked.track_ms, "align": 0.0, "infer": 0.0, "smooth": 0.0, "blend": 0.0}
        style = self.style
        model = style.active if style else None
        if image is None:
            return self._result(None, frame, (), timings, model, "; ".join(errors) or None, t_start)
        if image.shape != self._frame_shape:  # new geometry: the faces' states are meaningless
            self._faces.clear()
            self._frame_shape = image.shape
        out = image.copy()

        self._apply_face_requests()
        observations = []
        live_ids = set()
        default_infer = 0.0
        for face in faces:
            live_ids.add(face.track_id)
            face_style = self._style_for(face.track_id)
            face_model = face_style.active if face_style else None
            blend = self._settings(face_style)
            passthrough = AlignSpec(crop_size=self.config.passthrough_crop)
            align = face_style.bundle.manifest.align if face_style else passthrough
            crop_size, template = align.crop_size, TEMPLATES[align.template]
            mask = feather_mask(crop_size, blend.feather)
            state = self._state(face.track_id, blend.temporal, face_style.bundle.id if face_style else None)
            t0 = time.perf_counter()
            try:
                raw = similarity_from_landmarks(face.landmarks, template)
            except ValueError:
                continue
            if face.seen and self._jumped(state, raw):
                state.smoother.reset()
                state.temporal.reset()
                state.color.reset()
                state.tone.reset()
            if face.seen:
                state.last_raw = raw
            smoothed = state.smoother(raw, frame.timestamp)  # a held face keeps its last landmarks
            crop = warp_crop(image, smoothed, crop_size)
            timings["align"] += (time.perf_counter() - t0) * 1000

            t0 = time.perf_counter()
            stylized, ok = crop, True
            if face_model is not None:
                try:
                    stylized = face_model.stylize(crop)
                except Exception as exc:  # a failing model must not stop the stream
                    log.exception("stylizer failed")
                    errors.append(f"stylizer failed on face {face.track_id}: {exc}")
                    ok = False
            infer_ms = (time.perf_counter() - t0) * 1000
            timings["infer"] += infer_ms
            if face_style is style:
                default_infer += infer_ms

            t0 = time.perf_counter()
            face_mask = mask
            if ok and face_model is not None:
                stylized = state.color(crop, stylized, mask, blend.color_match)
                skin = face_skin_region(crop_size, align.template)
                stylized = state.tone(crop, stylized, skin, blend.skin_tone_limit)
                stylized = state.temporal(crop, stylized)
                if stylized.shape[2] == 4:  # a learned blend alpha, smoothed over time with the colour
                    stylized, face_mask = (
                        cv2.cvtColor(stylized, cv2.COLOR_BGRA2BGR),
                        learned_mask(cv2.extractChannel(stylized, 3)),
                    )
            timings["smooth"] += (time.perf_counter() - t0) * 1000

            t0 = time.perf_counter()
            if ok:
                paste_back(out, stylized, smoothed, face_mask, blend.intensity * face.opacity)
            timings["blend"] += (time.perf_counter() - t0) * 1000
            observations.append(
                FaceObservation(
                    face.track_id,
                    face.box,
                    raw,
                    smoothed,
                    face.opacity,
                    face.seen,
                    ok and face_model is not None,
                    face_style.bundle.id if face_style else None,
                )
            )
        for gone in set(self._faces) - live_ids:
            del self._faces[gone]

        on_default = [o for o in observations if o.style == (style.bundle.id if style else None)]
        if style is not None and style.controller is not None and on_default:
            switched = style.controller.observe(default_infer / len(on_default))
            if switched is not None:
                log.info("compute tier -> %s", style.active.tier.id)
        return self._result(out, frame, tuple(observations), timings, model, "; ".join(errors) or None, t_start)

    def _result(self, image, frame, faces, timings, model, error, t_start) -> FrameResult:
        timings["total"] = timings["track"] + (time.perf_counter() - t_start) * 1000
        return FrameResult(
            image=image,
            index=frame.index,
            timestamp=frame.timestamp,
            faces=faces,
            timings=timings,
            style=model.bundle.id if model else None,
            tier=model.tier.id if model else None,
            backend=model.stylizer.runtime if model else None,
            error=error,
        )

    def close(self) -> None:
        if self._final is not None:
            self._final.done.wait(10.0)
        self._apply_pending_swap()
        self._apply_face_requests()
        extra, self._face_styles, self._cycle = [*self._face_styles.values(), *self._cycle], {}, []
        for s in {id(s): s for s in extra if s is not self.style}.values():
            s.close()
        if self.style is not None:
            self.style.close()
            self.style = None
        self.tracker.close()
