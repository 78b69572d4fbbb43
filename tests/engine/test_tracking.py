import numpy as np

from engine.tracking import TrackConfig, TrackManager, greedy_matches, iou_matrix


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
