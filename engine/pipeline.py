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
from engine.tiers import TierController, TierPolicy, faces_to_redraw
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
    # the stylizer time one frame may spend on its faces; beyond it the stalest are redrawn and the others
    # keep their last stylized crops (engine.tiers.faces_to_redraw). None: every face, every frame
    redraw_budget_ms: float | None = TierPolicy.budget_ms
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
    redrawn: bool = True  # False: drawn from its last stylized crop (the frame's stylizer budget was spent)


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
    shown: tuple[np.ndarray, np.ndarray] | None = None  # the last stylized crop (BGR) and its blend mask
    stale: int = 0  # frames since the face was last stylized
    infer_ms: float = 0.0  # its recent stylizer time: what redrawing it is expected to cost

    def restart(self) -> None:
        """Forget the face's history (a new face, or its track jumped)."""
        self.smoother.reset()
        self.temporal.reset()
        self.color.reset()
        self.tone.reset()
        self.shown = None


@dataclass
class _PlacedFace:
    """A tracked face with its style and placement, before it is drawn."""

    face: TrackedFace
    style: LoadedStyle | None
    blend: BlendDefaults
    align: AlignSpec
    state: _FaceState
    raw: Similarity
    smoothed: Similarity

    @property
    def model(self) -> TierModel | None:
        return self.style.active if self.style else None


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
            except Exception as exc:  # whatever the failure, the style serving now keeps serving
                final.error = f"could not load style '{bundle.id}': {exc}"
                log.error("%s", final.error, exc_info=not isinstance(exc, StylecastError | OSError))
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

    def own_style(self, track_id: int) -> str | None:
        """The id of the style one face was given (:meth:`assign_face_style`), or None: the common one."""
        style = self._face_styles.get(track_id)
        return style.bundle.id if style is not None else None

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

    def new_stream(self) -> None:
        """Forget the faces of the stream before (tracks, smoothing states, per-face styles): the next frames
        come from another source, or from the same one's start. Call between streams, never during one."""
        self.tracker.reset()
        self._tracked_shape = self._frame_shape = None
        self._faces.clear()
        with self._lock:
            requested, self._face_requests = list(self._face_requests.values()), {}
        retired, self._face_styles = [*self._face_styles.values(), *requested], {}
        for style in retired:
            self._close_unused(style)
        self._cycle_of.clear()
        self._cycle_next = 0

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
        if image.shape != self._tracked_shape or frame.cut:  # new geometry or picture: old tracks are meaningless
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
        if image.shape != self._frame_shape or frame.cut:  # new geometry or picture: face states are meaningless
            self._faces.clear()
            self._frame_shape = image.shape
        out = image.copy()

        self._apply_face_requests()
        placed = []
        for face in faces:
            t0 = time.perf_counter()
            face_style = self._style_for(face.track_id)
            passthrough = AlignSpec(crop_size=self.config.passthrough_crop)
            align = face_style.bundle.manifest.align if face_style else passthrough
            blend = self._settings(face_style)
            state = self._state(face.track_id, blend.temporal, face_style.bundle.id if face_style else None)
            try:
                raw = similarity_from_landmarks(face.landmarks, TEMPLATES[align.template])
            except ValueError:
                continue
            if face.seen and self._jumped(state, raw):
                state.restart()
            if face.seen:
                state.last_raw = raw
            smoothed = state.smoother(raw, frame.timestamp)  # a held face keeps its last landmarks
            placed.append(_PlacedFace(face, face_style, blend, align, state, raw, smoothed))
            timings["align"] += (time.perf_counter() - t0) * 1000
        drawn_before = [p for p in placed if p.model is not None and p.state.shown is not None]
        redraw = faces_to_redraw(
            [(p.face.track_id, p.state.stale, p.state.infer_ms) for p in drawn_before], self.config.redraw_budget_ms
        )

        observations = []
        default_infer, default_faces = 0.0, 0
        for p in placed:
            face, face_model, state, blend = p.face, p.model, p.state, p.blend
            redrawn = face_model is None or state.shown is None or face.track_id in redraw
            ok = True
            if redrawn:
                stylized, face_mask, infer_ms = self._draw(p, image, timings, errors)
                ok = stylized is not None
                if p.style is style and face_model is not None:
                    default_infer, default_faces = default_infer + infer_ms, default_faces + 1
            else:  # the budget is spent: its last stylized crop, at its new placement
                (stylized, face_mask), state.stale = state.shown, state.stale + 1

            t0 = time.perf_counter()
            if ok:
                paste_back(out, stylized, p.smoothed, face_mask, blend.intensity * face.opacity)
            timings["blend"] += (time.perf_counter() - t0) * 1000
            observations.append(
                FaceObservation(
                    face.track_id,
                    face.box,
                    p.raw,
                    p.smoothed,
                    face.opacity,
                    face.seen,
                    ok and face_model is not None,
                    p.style.bundle.id if p.style else None,
                    redrawn,
                )
            )
        live_ids = {face.track_id for face in faces}
        for gone in set(self._faces) - live_ids:
            del self._faces[gone]

        if style is not None and style.controller is not None and default_faces:
            # what redrawing every face of the common style would cost: a crowd steps the tier down
            on_default = sum(p.style is style for p in placed)
            switched = style.controller.observe(default_infer / default_faces * on_default)
            if switched is not None:
                log.info("compute tier -> %s", style.active.tier.id)
        return self._result(out, frame, tuple(observations), timings, model, "; ".join(errors) or None, t_start)

    def _draw(
        self, placed: _PlacedFace, image: np.ndarray, timings: dict[str, float], errors: list[str]
    ) -> tuple[np.ndarray | None, np.ndarray, float]:
        """Crop, stylize and smooth one face: (the crop to paste or None when its stylizer failed, its blend
        mask, the stylizer's ms). Remembers what it drew for frames that cannot afford to redraw it."""
        face, model, state, blend, align = placed.face, placed.model, placed.state, placed.blend, placed.align
        t0 = time.perf_counter()
        crop_size = align.crop_size
        crop = warp_crop(image, placed.smoothed, crop_size)
        timings["align"] += (time.perf_counter() - t0) * 1000
        mask = feather_mask(crop_size, blend.feather)
        if model is None:
            return crop, mask, 0.0

        t0 = time.perf_counter()
        try:
            stylized = model.stylize(crop)
        except Exception as exc:  # a failing model must not stop the stream
            log.exception("stylizer failed")
            errors.append(f"stylizer failed on face {face.track_id}: {exc}")
            return None, mask, (time.perf_counter() - t0) * 1000
        infer_ms = (time.perf_counter() - t0) * 1000
        timings["infer"] += infer_ms

        t0 = time.perf_counter()
        stylized = state.color(crop, stylized, mask, blend.color_match)
        stylized = state.tone(crop, stylized, face_skin_region(crop_size, align.template), blend.skin_tone_limit)
        stylized = state.temporal(crop, stylized)
        if stylized.shape[2] == 4:  # a learned blend alpha, smoothed over time with the colour
            stylized, mask = cv2.cvtColor(stylized, cv2.COLOR_BGRA2BGR), learned_mask(cv2.extractChannel(stylized, 3))
        timings["smooth"] += (time.perf_counter() - t0) * 1000
        state.shown, state.stale = (stylized, mask), 0
        state.infer_ms = infer_ms if state.infer_ms == 0 else 0.8 * state.infer_ms + 0.2 * infer_ms
        return stylized, mask, infer_ms

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
