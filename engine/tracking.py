"""Face tracking: mediapipe face mesh landmarks, plus our own track ids, hit counting and fades.

mediapipe's tracking mode follows faces between frames but gives no stable identities; the
:class:`TrackManager` assigns ids by box overlap (Hungarian matching), shows a face only after a few
hits (one-frame false positives never flash), holds a lost face briefly (a blink of the detector does
not drop the style) and fades faces in and out.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from engine.errors import BackendUnavailable

log = logging.getLogger(__name__)

MIN_TRACK_SIDE = 32  # frames smaller than this (either side) cannot hold a trackable face
MESH_EVERY = 2  # frames per face mesh update; the landmarks are moved by optical flow in between
SEARCH_EVERY_FRAMES = 6  # how often the full-range finder looks for more faces (see MultiScaleDetector)


def _solution(name: str):
    """A mediapipe solution module (imported lazily: mediapipe is heavy and optional for tests)."""
    try:
        return importlib.import_module(f"mediapipe.python.solutions.{name}")
    except ImportError as exc:
        raise BackendUnavailable(f"mediapipe {name} is not available: {exc}") from exc


def shrunk(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` scaled by ``factor`` (nothing above 1) for a detector: pyrDown halvings, then bilinear for
    what is left (under a halving, so bilinear does not alias). INTER_AREA at a non-integer factor took
    6 ms per 720p frame on a Zen 3 core."""
    while factor <= 0.5:
        image = cv2.pyrDown(image)
        factor *= 2
    if factor >= 1.0:
        return image
    h, w = image.shape[:2]
    return cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_LINEAR)


class LandmarkDetector(Protocol):
    """Finds faces in a BGR frame: returns a list of (478, 2) float32 landmark arrays in pixels."""

    def __call__(self, image: np.ndarray) -> list[np.ndarray]: ...

    def close(self) -> None: ...


class FaceMeshDetector:
    """mediapipe 0.10.21 face mesh (refined landmarks) in video-tracking mode.

    Large frames are reduced (long side <= ``max_side``) before the graph sees them: the detector
    works at 128-256 px anyway, and converting a 12-megapixel frame would cost more than tracking.
    """

    def __init__(
        self,
        max_faces: int = 4,
        max_side: int = 1280,
        static: bool = False,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ) -> None:
        face_mesh = _solution("face_mesh")
        self.max_side = max_side
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        if min(h, w) < MIN_TRACK_SIDE:
            return []
        rgb = cv2.cvtColor(shrunk(image, self.max_side / max(h, w)), cv2.COLOR_BGR2RGB)
        result = self._mesh.process(rgb)
        faces = []
        for face in result.multi_face_landmarks or ():
            pts = np.array([(lm.x, lm.y) for lm in face.landmark], dtype=np.float32)
            faces.append(pts * np.array([w, h], dtype=np.float32))
        return faces

    def reset(self) -> None:
        self._mesh.reset()

    def close(self) -> None:
        self._mesh.close()


def _boxes_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when the centre of either box lies inside the other (same face, whatever the box sizes)."""

    def inside(p: Sequence[float], q: Sequence[float]) -> bool:
        cx, cy = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2
        return q[0] <= cx <= q[2] and q[1] <= cy <= q[3]

    return inside(a, b) or inside(b, a)


class MultiScaleDetector:
    """Face mesh that also finds the small faces its own short-range detector misses, cheaply.

    Face mesh's built-in detector only sees faces that fill a good part of the frame (webcam framing),
    and while fewer than its ``max_num_faces`` are tracked it runs that detector on every frame. So the
    whole-frame mesh here follows one face (its detector runs only while it has none), and every
    ``detect_every`` calls (frames, unless a :class:`PropagatingDetector` skips some), or at once when a
    face was lost, while fewer than ``max_faces`` are tracked, mediapipe's full-range detector looks for
    more. Each such face is then followed on its own: a square region around it is enlarged to
    ``roi_size`` and given to a mesh of its own in tracking mode, which landmarks it from the last frame's
    landmarks without detecting again; the next region comes from those landmarks. (Searching every 15
    frames instead of 6 halves the detector's share but finds 3 of the 6 people of the walking-crowd clip.)

    ``light=False`` is the earlier, dearer scheme (kept to measure against, ``--full-tracking``): the
    whole-frame mesh looks for all ``max_faces`` on every frame, and followed faces are detected afresh
    in their region on every frame.
    """

    def __init__(
        self,
        max_faces: int = 4,
        detect_every: int = SEARCH_EVERY_FRAMES,
        roi_size: int = 256,
        max_side: int = 1280,
        light: bool = True,
    ):
        face_detection = _solution("face_detection")
        self.max_faces, self.detect_every, self.roi_size, self.light = max_faces, detect_every, roi_size, light
        primary_faces = 1 if light else max_faces
        self._mesh = FaceMeshDetector(max_faces=primary_faces, max_side=max_side, min_detection_confidence=0.7)
        self._finder = face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)
        self._followed: list[tuple[FaceMeshDetector, tuple[float, float, float, float]]] = []
        self._spare: list[FaceMeshDetector] = []  # region meshes of faces no longer followed, reset for reuse
        self._frame = 0
        self._last_count = 0
        self._whole_frame_faces = 0  # of the last call's faces, how many the whole-frame mesh found

    def _find_boxes(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        h, w = image.shape[:2]
        result = self._finder.process(cv2.cvtColor(shrunk(image, 960 / max(h, w)), cv2.COLOR_BGR2RGB))
        boxes = []
        for det in result.detections or ():
            rb = det.location_data.relative_bounding_box
            boxes.append((rb.xmin * w, rb.ymin * h, (rb.xmin + rb.width) * w, (rb.ymin + rb.height) * h))
        return boxes

    def _landmarks_in(self, image: np.ndarray, box: Sequence[float], mesh: FaceMeshDetector) -> np.ndarray | None:
        """Landmark the face inside ``box`` on an enlarged square crop around it."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = 2.0 * max(box[2] - box[0], box[3] - box[1], 8.0)
        k = self.roi_size / side
        to_roi = np.array([[k, 0, self.roi_size / 2 - k * cx], [0, k, self.roi_size / 2 - k * cy]])
        crop = cv2.warpAffine(
            image,
            to_roi,
            (self.roi_size, self.roi_size),
            flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        # A tracking-mode mesh that lost the face (the region moved or was rescaled since its last call)
        # detects afresh on its next call: give it that call at once.
        faces = mesh(crop) or (mesh(crop) if self.light else [])
        if not faces:
            return None
        return ((faces[0] - to_roi[:, 2]) / k).astype(np.float32)

    def _region_mesh(self) -> FaceMeshDetector:
        return self._spare.pop() if self._spare else FaceMeshDetector(max_faces=1, static=not self.light)

    def _release(self, mesh: FaceMeshDetector) -> None:
        mesh.reset()  # its tracking state belongs to the face it followed
        self._spare.append(mesh)

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        faces = self._mesh(image)
        self._whole_frame_faces = len(faces)
        if min(image.shape[:2]) < MIN_TRACK_SIDE:
            return faces
        taken = [landmark_box(f) for f in faces]
        followed = []
        for mesh, box in self._followed:  # a face the whole-frame mesh now has needs no region of its own
            if any(_boxes_overlap(box, t) for t in taken):
                self._release(mesh)
            else:
                followed.append((mesh, box))
        lost_one = self.light and len(taken) + len(followed) < self._last_count
        if (lost_one or self._frame % self.detect_every == 0) and len(taken) + len(followed) < self.max_faces:
            for box in self._find_boxes(image):
                if not any(_boxes_overlap(box, t) for t in taken + [b for _, b in followed]):
                    followed.append((self._region_mesh(), box))
        self._frame += 1
        self._followed = []
        for mesh, box in followed:
            landmarks = self._landmarks_in(image, box, mesh) if len(faces) < self.max_faces else None
            if landmarks is None:
                self._release(mesh)
            else:
                faces.append(landmarks)
                self._followed.append((mesh, landmark_box(landmarks)))
        self._last_count = len(faces)
        return faces

    def reset(self) -> None:
        """Forget every face (another picture follows): the next frame is searched afresh."""
        self._mesh.reset()
        for mesh, _ in self._followed:
            self._release(mesh)
        self._followed = []
        self._frame = self._last_count = self._whole_frame_faces = 0

    def moved(self, faces: list[np.ndarray]) -> None:
        """Where a :class:`PropagatingDetector` moved this detector's last faces (same order): the followed
        faces' regions move with them, or a walking person leaves a region left two frames behind."""
        followed = faces[self._whole_frame_faces :]
        self._followed = [(mesh, landmark_box(f)) for (mesh, _), f in zip(self._followed, followed)]

    def close(self) -> None:
        self._mesh.close()
        self._finder.close()
        for mesh in [*self._spare, *(m for m, _ in self._followed)]:
            mesh.close()
        self._spare, self._followed = [], []


# Face mesh points whose motion is the head's: forehead, brows, eye corners, nose and cheeks (not the lips,
# eyelids or jaw, which move on their own, nor the outline, which borders the background).
FLOW_LANDMARKS = (
    *(10, 151, 9, 108, 337, 67, 297),
    *(70, 63, 105, 66, 107, 336, 296, 334, 293, 300),
    *(33, 133, 362, 263, 130, 359),
    *(1, 4, 5, 6, 168, 195, 197, 98, 327, 2),
    *(50, 280, 101, 330, 205, 425, 117, 346),
)


class PropagatingDetector:
    """Runs a landmark detector on every ``mesh_every``-th frame only, and moves the landmarks in between.

    The landmark model is most of tracking's cost (8.3 of ~12 ms per 720p frame on a Zen 3 core). The
    live pipeline uses a face's landmarks only through its placement (a similarity from rigid points)
    and its box, so between mesh updates each face's last landmarks are moved by the similarity that
    pyramidal Lucas-Kanade flow of :data:`FLOW_LANDMARKS` measures, on a grey crop of the face's
    surroundings (long side ``flow_side``). Points that fail a forward-backward check are left out and
    the similarity is a least-median fit, so a blink or a hand crossing the face does not drag it. When
    any face cannot be moved (too few points agree, or the frame's size changed), the detector runs on
    that frame instead; with no face, it runs on every frame. A detector with a ``moved`` method is told
    where its faces were moved to (:meth:`MultiScaleDetector.moved`).
    """

    MIN_POINTS = 12  # agreeing flow points below which a face is landmarked afresh
    MARGIN = 0.25  # of the landmark box, on each side: room for a frame's motion
    MAX_ROUND_TRIP_PX = 0.7  # forward-backward disagreement, in flow-crop pixels

    def __init__(self, inner: LandmarkDetector, mesh_every: int = MESH_EVERY, flow_side: int = 160) -> None:
        self.inner, self.mesh_every, self.flow_side = inner, mesh_every, flow_side
        self._since_mesh = 0
        self._faces: list[np.ndarray] = []
        self._crops: list[tuple[np.ndarray, tuple[int, int, int, int], int] | None] = []  # grey crop, box, halvings
        self._shape: tuple[int, ...] | None = None

    def _flow_crop(self, image: np.ndarray, box: tuple[int, int, int, int], halvings: int) -> np.ndarray:
        """Grey crop of ``box``, halved ``halvings`` times (pyrDown: pixel i lands on 2i, 0.1 ms a halving)."""
        x0, y0, x1, y1 = box
        grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
        for _ in range(halvings):
            grey = cv2.pyrDown(grey)
        return grey

    def _crop_around(self, image: np.ndarray, landmarks: np.ndarray):
        h, w = image.shape[:2]
        x0, y0, x1, y1 = landmark_box(landmarks)
        mx, my = self.MARGIN * (x1 - x0), self.MARGIN * (y1 - y0)
        box = (max(int(x0 - mx), 0), max(int(y0 - my), 0), min(int(x1 + mx) + 1, w), min(int(y1 + my) + 1, h))
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:
            return None
        halvings = max(0, math.ceil(math.log2(max(box[2] - box[0], box[3] - box[1]) / self.flow_side)))
        return self._flow_crop(image, box, halvings), box, halvings

    def _moved(self, landmarks: np.ndarray, crop, image: np.ndarray) -> np.ndarray | None:
        if crop is None:
            return None
        prev, box, halvings = crop
        now = self._flow_crop(image, box, halvings)
        k = 0.5**halvings
        origin = np.array(box[:2], np.float32)
        p0 = ((landmarks[list(FLOW_LANDMARKS)] - origin) * k).reshape(-1, 1, 2)
        lk = {"winSize": (11, 11), "maxLevel": 2}
        p1, ok, _ = cv2.calcOpticalFlowPyrLK(prev, now, p0, None, **lk)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(now, prev, p1, None, **lk)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1)
        good &= np.linalg.norm((back - p0).reshape(-1, 2), axis=1) < self.MAX_ROUND_TRIP_PX
        if good.sum() < self.MIN_POINTS:
            return None
        motion, inliers = cv2.estimateAffinePartial2D(p0[good], p1[good], method=cv2.LMEDS)
        if motion is None or inliers.sum() < self.MIN_POINTS:
            return None
        in_crop = (landmarks - origin) * k
        return ((in_crop @ motion[:, :2].T.astype(np.float32) + motion[:, 2].astype(np.float32)) / k + origin).astype(
            np.float32
        )

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        faces = None
        if self._faces and self._since_mesh < self.mesh_every - 1 and image.shape == self._shape:
            moved = [self._moved(f, c, image) for f, c in zip(self._faces, self._crops)]
            if all(m is not None for m in moved):
                faces = moved
                self._since_mesh += 1
                if callable(follow := getattr(self.inner, "moved", None)):
                    follow(faces)
        if faces is None:
            faces = self.inner(image)
            self._since_mesh = 0
        self._shape = image.shape
        self._faces = faces
        if self._since_mesh < self.mesh_every - 1:  # the next frame moves these landmarks
            self._crops = [self._crop_around(image, f) for f in faces]
        return [f.copy() for f in faces]

    def reset(self) -> None:
        """Forget the faces (another picture follows): the next frame is landmarked afresh, not moved."""
        self._faces, self._crops, self._shape = [], [], None
        if callable(reset := getattr(self.inner, "reset", None)):
            reset()

    def close(self) -> None:
        self.inner.close()


class LargestFaceFinder:
    """Landmarks (478, 2) of the largest face in still BGR images, or None when there is none.

    One face mesh graph in static-image mode serves every image: that mode detects afresh on each
    image and carries nothing over, so the landmarks equal those of a new graph per image, without
    paying the graph's construction (~30 ms, four times the landmarking itself) per image.
    """

    def __init__(self, max_faces: int = 4) -> None:
        self._mesh = FaceMeshDetector(max_faces=max_faces, static=True)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        faces = self._mesh(image)
        return max(faces, key=lambda f: _box_area(landmark_box(f))) if faces else None

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> LargestFaceFinder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def landmarks_from_image(image: np.ndarray) -> np.ndarray | None:
    """:class:`LargestFaceFinder` for one image (a graph of its own: use the class for many images)."""
    with LargestFaceFinder() as find:
        return find(image)


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """Axis-aligned (x0, y0, x1, y1) box around landmarks."""
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou_matrix(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """Pairwise intersection-over-union of two lists of (x0, y0, x1, y1) boxes: (len(a), len(b))."""
    out = np.zeros((len(a), len(b)), dtype=np.float64)
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = min(p[2], q[2]) - max(p[0], q[0])
            ih = min(p[3], q[3]) - max(p[1], q[1])
            if iw > 0 and ih > 0:
                inter = iw * ih
                out[i, j] = inter / (_box_area(p) + _box_area(q) - inter)
    return out


def greedy_matches(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """(row, column) pairs taken best overlap first, each row and column once, none below ``min_iou``.

    Faces rarely overlap, so this equals the optimal assignment in practice (as in greedy IoU trackers)
    and keeps scipy, 90 MB of the installer, out of the live app.
    """
    pairs: list[tuple[int, int]] = []
    rows: set[int] = set()
    cols: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < min_iou:
            break
        if r not in rows and c not in cols:
            pairs.append((r, c))
            rows.add(r)
            cols.add(c)
    return pairs


@dataclass(frozen=True)
class TrackConfig:
    """Track life cycle. Times are seconds of frame timestamps, so behaviour does not depend on FPS."""

    min_hits: int = 2
    fade_in_s: float = 0.2
    hold_s: float = 0.3
    fade_out_s: float = 0.25
    min_iou: float = 0.2


@dataclass(frozen=True)
class TrackedFace:
    """One tracked face in one frame.

    landmarks: (478, 2) float32 image pixels (the last seen ones while the face is held).
    opacity: 0..1 fade factor for blending. seen: whether the detector found it in this frame.
    """

    track_id: int
    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    opacity: float
    seen: bool
    hits: int
    is_new: bool


@dataclass
class _Track:
    track_id: int
    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    hits: int = 1
    first_t: float = 0.0
    shown_t: float | None = None
    last_seen_t: float = 0.0
    reported: bool = False
    opacity_at_loss: float = 1.0


class TrackManager:
    """Stable ids and fades over per-frame detections (see module docstring)."""

    def __init__(self, config: TrackConfig = TrackConfig()) -> None:
        self.config = config
        self._tracks: list[_Track] = []
        self._next_id = 1

    def reset(self) -> None:
        self._tracks.clear()

    def _opacity(self, track: _Track, t: float) -> float:
        cfg = self.config
        if track.shown_t is None:
            return 0.0
        fade_in = 1.0 if cfg.fade_in_s <= 0 else min(1.0, (t - track.shown_t) / cfg.fade_in_s)
        lost_for = t - track.last_seen_t
        if lost_for <= cfg.hold_s:
            return fade_in
        fade_out = 1.0 - (lost_for - cfg.hold_s) / max(cfg.fade_out_s, 1e-6)
        return max(0.0, min(fade_in, track.opacity_at_loss * fade_out))

    def update(self, detections: list[np.ndarray], t: float) -> list[TrackedFace]:
        """Match this frame's landmark sets to tracks; return the faces to render, id-ordered."""
        cfg = self.config
        boxes = [landmark_box(d) for d in detections]
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        if self._tracks and boxes:
            iou = iou_matrix([tr.box for tr in self._tracks], boxes)
            for r, c in greedy_matches(iou, cfg.min_iou):
                tr = self._tracks[r]
                tr.landmarks, tr.box = detections[c], boxes[c]
                tr.hits += 1
                tr.last_seen_t = t
                matched_tracks.add(r)
                matched_dets.add(c)
        for c, det in enumerate(detections):
            if c not in matched_dets:
                self._tracks.append(_Track(self._next_id, det, boxes[c], first_t=t, last_seen_t=t))
                self._next_id += 1
        out = []
        alive = []
        for tr in self._tracks:
            seen = tr.last_seen_t == t
            if seen and tr.shown_t is None and tr.hits >= cfg.min_hits:
                tr.shown_t = t
            if seen:
                tr.opacity_at_loss = self._opacity(tr, t)
            elif tr.shown_t is None:
                continue  # tentative track missed a frame: forget it
            opacity = self._opacity(tr, t)
            if not seen and t - tr.last_seen_t > cfg.hold_s and opacity <= 0.0:
                continue  # faded out: drop
            alive.append(tr)
            if tr.shown_t is None:
                continue
            out.append(
                TrackedFace(
                    track_id=tr.track_id,
                    landmarks=tr.landmarks,
                    box=tr.box,
                    opacity=opacity,
                    seen=seen,
                    hits=tr.hits,
                    is_new=not tr.reported,
                )
            )
            tr.reported = True
        self._tracks = alive
        return sorted(out, key=lambda f: f.track_id)


class FaceTracker(Protocol):
    """Frame in, tracked faces out."""

    def __call__(self, image: np.ndarray, t: float) -> list[TrackedFace]: ...

    def reset(self) -> None:
        """Forget all tracks (the frame geometry changed)."""

    def close(self) -> None: ...


class MeshFaceTracker:
    """The production tracker: a landmark detector (face mesh) followed by a :class:`TrackManager`."""

    def __init__(
        self,
        max_faces: int = 4,
        config: TrackConfig = TrackConfig(),
        detector: LandmarkDetector | None = None,
        light: bool = True,
        mesh_every: int = MESH_EVERY,
    ) -> None:
        """``light`` and ``mesh_every`` shape the default detector: ``mesh_every`` > 1 landmarks every n-th
        frame and moves the landmarks in between (:class:`PropagatingDetector`)."""
        if detector is None:
            search_every = max(1, round(SEARCH_EVERY_FRAMES / mesh_every))  # counted in detector calls
            detector = MultiScaleDetector(max_faces=max_faces, detect_every=search_every, light=light)
            if mesh_every > 1:
                detector = PropagatingDetector(detector, mesh_every)
        self.detector = detector
        self.tracks = TrackManager(config)
        self.max_faces = max_faces

    def __call__(self, image: np.ndarray, t: float) -> list[TrackedFace]:
        detections = [d for d in self.detector(image) if np.all(np.isfinite(d))][: self.max_faces]
        return self.tracks.update(detections, t)

    def reset(self) -> None:
        self.tracks.reset()
        if callable(reset := getattr(self.detector, "reset", None)):  # detectors that carry faces over
            reset()

    def close(self) -> None:
        self.detector.close()
