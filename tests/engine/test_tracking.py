import cv2
import numpy as np

from engine.tracking import PropagatingDetector, TrackConfig, TrackManager, greedy_matches, iou_matrix


def _face(x, y, size=100.0):
    """Landmarks whose bounding box is the square at (x, y)."""
    pts = np.zeros((478, 2), np.float32)
    pts[:] = (x + size / 2, y + size / 2)
    pts[0], pts[1] = (x, y), (x + size, y + size)
    return pts


def test_iou_matrix():
    iou = iou_matrix([(0, 0, 10, 10)], [(0, 0, 10, 10), (5, 0, 15, 10), (20, 20, 30, 30)])
    assert np.allclose(iou, [[1.0, 1 / 3, 0.0]])


def test_greedy_matches_take_the_best_overlap_once_and_skip_weak_ones():
    iou = np.array([[0.9, 0.6, 0.0], [0.8, 0.7, 0.0], [0.0, 0.0, 0.05]])
    # row 0 takes column 0 (0.9), so row 1 falls back to column 1; 0.05 is below the threshold
    assert sorted(greedy_matches(iou, min_iou=0.1)) == [(0, 0), (1, 1)]
    assert greedy_matches(np.zeros((0, 2)), 0.1) == [] and greedy_matches(np.zeros((2, 0)), 0.1) == []


def test_face_shows_after_min_hits_and_fades_in():
    mgr = TrackManager(TrackConfig(min_hits=3, fade_in_s=0.1))
    dt = 1 / 30
    assert mgr.update([_face(0, 0)], 0.0) == []
    assert mgr.update([_face(1, 0)], dt) == []
    shown = mgr.update([_face(2, 0)], 2 * dt)
    assert len(shown) == 1 and shown[0].opacity == 0.0 and shown[0].is_new
    later = mgr.update([_face(3, 0)], 2 * dt + 0.05)
    assert 0.4 < later[0].opacity < 0.6 and not later[0].is_new
    full = mgr.update([_face(4, 0)], 2 * dt + 0.2)
    assert full[0].opacity == 1.0


def test_single_frame_false_positive_never_shows():
    mgr = TrackManager(TrackConfig(min_hits=2))
    assert mgr.update([_face(0, 0)], 0.0) == []
    assert mgr.update([], 0.033) == []
    assert mgr.update([], 0.066) == []


def test_lost_face_is_held_then_fades_out_then_dropped():
    cfg = TrackConfig(min_hits=1, fade_in_s=0.0, hold_s=0.3, fade_out_s=0.2)
    mgr = TrackManager(cfg)
    first = mgr.update([_face(0, 0)], 0.0)
    tid = first[0].track_id
    held = mgr.update([], 0.2)
    assert held[0].track_id == tid and held[0].opacity == 1.0 and not held[0].seen
    fading = mgr.update([], 0.4)
    assert 0.0 < fading[0].opacity < 1.0
    assert mgr.update([], 0.6) == []
    # it comes back within the hold time -> same id
    mgr2 = TrackManager(cfg)
    tid2 = mgr2.update([_face(0, 0)], 0.0)[0].track_id
    mgr2.update([], 0.1)
    back = mgr2.update([_face(5, 0)], 0.2)
    assert back[0].track_id == tid2 and back[0].seen


def test_ids_stay_with_faces_that_move_and_swap_order():
    mgr = TrackManager(TrackConfig(min_hits=1, fade_in_s=0.0))
    faces = mgr.update([_face(0, 0), _face(300, 0)], 0.0)
    left, right = faces[0].track_id, faces[1].track_id
    # detector returns them in the other order, both moved a little
    faces = mgr.update([_face(310, 5), _face(8, 3)], 0.033)
    by_x = {f.track_id: f.box[0] for f in faces}
    assert by_x[left] < 50 and by_x[right] > 250


class _ScriptedDetector:
    """Returns fixed landmarks and counts its calls (the face mesh stand-in)."""

    def __init__(self, landmarks: list[np.ndarray]):
        self.landmarks, self.calls = landmarks, 0

    def __call__(self, image):
        self.calls += 1
        return [f.copy() for f in self.landmarks]

    def close(self):
        pass


def _textured(shape=(360, 480), seed=0):
    rng = np.random.default_rng(seed)
    grey = cv2.GaussianBlur(rng.integers(0, 256, shape).astype(np.float32), (0, 0), 2.0)
    grey = cv2.normalize(grey, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def _moved(image, shift, angle_deg=0.0, scale=1.0):
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    m[:, 2] += shift
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), m


def test_propagation_moves_landmarks_with_the_head_between_mesh_updates():
    frame = _textured()
    rng = np.random.default_rng(1)
    face = (rng.random((478, 2)) * [160, 180] + [160, 90]).astype(np.float32)
    inner = _ScriptedDetector([face])
    detector = PropagatingDetector(inner, mesh_every=2)
    assert np.array_equal(detector(frame)[0], face) and inner.calls == 1
    moved, m = _moved(frame, (4.0, -3.0), angle_deg=2.0, scale=1.02)
    out = detector(moved)
    assert inner.calls == 1  # moved by optical flow, not landmarked
    expected = face @ m[:, :2].T + m[:, 2]
    assert np.abs(out[0] - expected).max() < 0.3  # px, over a 4-5 px move, a 2° turn and 2 % zoom
    detector(moved)
    assert inner.calls == 2  # every second frame is landmarked


def test_propagation_falls_back_to_the_mesh_when_flow_finds_no_face():
    frame = _textured()
    face = (np.random.default_rng(2).random((478, 2)) * 150 + 100).astype(np.float32)
    inner = _ScriptedDetector([face])
    detector = PropagatingDetector(inner, mesh_every=2)
    detector(frame)
    detector(_textured(seed=5))  # a cut to another scene: no flow agrees
    assert inner.calls == 2
    detector(frame)
    detector(frame[:300, :400].copy())  # another frame size
    assert inner.calls == 4
    empty = _ScriptedDetector([])
    no_face = PropagatingDetector(empty, mesh_every=3)
    for _ in range(3):
        no_face(frame)
    assert empty.calls == 3  # without a face the detector searches every frame
