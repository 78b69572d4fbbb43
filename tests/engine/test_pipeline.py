import shutil

import cv2
import numpy as np
import pytest

from engine.blend import face_roi
from engine.bundle import load_bundle
from engine.frames import Frame
from engine.pipeline import Pipeline, PipelineConfig, load_style
from engine.sources import DemoConfig, DemoSource
from engine.tracking import MeshFaceTracker


def _demo_frames(n, **kw):
    src = DemoSource(DemoConfig(frames=n, **kw))
    return [src.read() for _ in range(n)]


@pytest.fixture()
def styled(fixture_bundle):
    pipe = Pipeline(MeshFaceTracker(max_faces=4), load_style(fixture_bundle, "light", "onnx"))
    yield pipe
    pipe.close()


def test_faces_are_stylized_inside_their_roi_only(styled):
    frames = _demo_frames(15)  # past the fade-in
    results = [styled.process(f) for f in frames]
    last, frame = results[-1], frames[-1]
    assert last.error is None and len(last.faces) == 1 and last.faces[0].stylized
    assert last.style == "fixture" and last.tier == "light" and last.backend == "onnx"
    x0, y0, x1, y1 = face_roi(last.faces[0].smoothed, frame.image.shape)
    outside = np.ones(frame.image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(last.image[outside], frame.image[outside])
    inside = np.abs(last.image[y0:y1, x0:x1].astype(int) - frame.image[y0:y1, x0:x1].astype(int))
    assert inside.mean() > 2.0
    assert set(last.timings) >= {"track", "align", "infer", "smooth", "blend", "total"}


def test_intensity_zero_returns_the_original(fixture_bundle):
    pipe = Pipeline(MeshFaceTracker(), load_style(fixture_bundle, "light", "onnx"), PipelineConfig(intensity=0.0))
    frames = _demo_frames(5)
    results = [pipe.process(f) for f in frames]
    pipe.close()
    assert results[-1].faces and np.array_equal(results[-1].image, frames[-1].image)


def test_passthrough_tracks_without_a_style():
    pipe = Pipeline(MeshFaceTracker())
    frames = _demo_frames(5)
    results = [pipe.process(f) for f in frames]
    pipe.close()
    assert results[-1].style is None and results[-1].faces and not results[-1].faces[0].stylized
    assert np.abs(results[-1].image.astype(int) - frames[-1].image.astype(int)).mean() < 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda img: np.zeros((9, 17, 3), np.uint8),
        lambda img: cv2.copyMakeBorder(cv2.resize(img, None, fx=2.5, fy=2.5), 540, 540, 1100, 1100, cv2.BORDER_REFLECT)[
            :3000, :4000
        ],
        lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2GRAY),
        lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2BGRA),
        lambda img: (img.astype(np.uint16) * 257),
    ],
    ids=["17x9", "4000x3000", "grey", "bgra", "uint16"],
)
def test_odd_frames_keep_the_stream_running(styled, make):
    base = _demo_frames(1)[0].image
    for i in range(4):
        result = styled.process(Frame(make(base), i / 30, i))
        assert result.error is None
        assert result.image.ndim == 3 and result.image.shape[2] == 3 and result.image.dtype == np.uint8
    # a face is found at 4000x3000 and in grey / BGRA / 16-bit input alike
    expected_faces = 0 if result.image.shape[:2] == (9, 17) else 1
    assert len(result.faces) == expected_faces


def test_not_an_image_is_reported_and_the_next_frame_works(styled):
    bad = styled.process(Frame(np.zeros((0,), np.uint8), 0.0, 0))
    assert bad.image is None and "bad frame" in bad.error
    good = styled.process(_demo_frames(1)[0])
    assert good.error is None and good.image is not None


def test_ten_faces_are_capped_and_stylized(fixture_bundle):
    from skimage.data import astronaut

    face = cv2.resize(astronaut()[0:300, 75:375, ::-1], (300, 300))
    canvas = np.full((900, 1500, 3), 90, np.uint8)
    for k in range(10):
        r, c = divmod(k, 5)
        canvas[r * 450 + 75 : r * 450 + 375, c * 300 : c * 300 + 300] = face
    pipe = Pipeline(MeshFaceTracker(max_faces=4), load_style(fixture_bundle, "light", "onnx"))
    results = [pipe.process(Frame(canvas, i / 30, i)) for i in range(4)]
    pipe.close()
    assert results[-1].error is None
    assert 1 <= len(results[-1].faces) <= 4


def test_a_face_leaving_and_returning(styled):
    frames = _demo_frames(8)
    empty = np.full_like(frames[0].image, 100)
    ids = []
    t = 0.0
    for phase in (frames[:4], [empty] * 3, frames[4:], [empty] * 30, frames[:4]):
        for f in phase:
            image = f.image if isinstance(f, Frame) else f
            r = styled.process(Frame(image, t, 0))
            ids.append([(o.track_id, o.seen) for o in r.faces])
            t += 1 / 30
    first_id = ids[3][0][0]
    # gone for 0.1 s: held (not seen), then the same id comes back
    assert ids[5] == [(first_id, False)]
    assert ids[7][0] == (first_id, True)
    # gone for 1 s: dropped, and a later face gets a new id after its hits
    assert ids[7 + 4 + 25] == []
    assert ids[-1] and ids[-1][0][0] != first_id


def test_hot_swap_happens_at_a_frame_boundary_and_failures_keep_the_old_style(
    fixture_bundle, fixture_bundle_root, tmp_path
):
    pipe = Pipeline(MeshFaceTracker(), load_style(fixture_bundle, "light", "onnx"))
    frames = _demo_frames(12)
    assert pipe.process(frames[0]).tier == "light"
    pipe.request_style(fixture_bundle, "standard", "mnn")
    assert pipe.wait_for_swap(30)
    swapped = pipe.process(frames[1])
    assert (swapped.tier, swapped.backend) == ("standard", "mnn") and pipe.swaps == 1
    # a bundle whose model file breaks after validation: the load fails, the old style keeps serving
    broken_root = tmp_path / "broken"
    shutil.copytree(fixture_bundle_root / "fixture", broken_root)
    broken = load_bundle(broken_root)
    (broken_root / "light.onnx").write_bytes(b"garbage")
    (broken_root / "light.mnn").write_bytes(b"garbage")
    pipe.request_style(broken, "light", "auto")
    assert pipe.wait_for_swap(30)
    after = pipe.process(frames[2])
    assert "could not load style" in after.error
    assert (after.tier, after.backend) == ("standard", "mnn")
    assert pipe.process(frames[3]).error is None
    # a failure of any kind in the loader thread (here not one the engine raises on purpose) does the same
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("engine.pipeline.load_style", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        pipe.request_style(fixture_bundle, "light", "onnx")
        assert pipe.wait_for_swap(30)
    after = pipe.process(frames[4])
    assert "could not load style 'fixture': boom" in after.error and after.tier == "standard"
    pipe.close()


def test_no_face_leaves_the_frame_untouched(styled):
    blank = np.full((480, 640, 3), 128, np.uint8)
    for i in range(5):
        result = styled.process(Frame(blank, i / 30, i))
        assert result.error is None and result.faces == () and np.array_equal(result.image, blank)


@pytest.mark.parametrize("runtime", ["onnx", "mnn"])
def test_a_learned_alpha_decides_where_the_style_replaces_the_photo(tmp_path, runtime):
    from bench.fixture_net import LIGHT, write_bundle

    frames = _demo_frames(12)
    outputs = {}
    for name, alpha in (("hidden", -1.0), ("shown", 1.0)):
        bundle = load_bundle(write_bundle(tmp_path / name, "alpha", {"light": LIGHT}, runtimes=(runtime,), alpha=alpha))
        assert bundle.manifest.io.alpha
        style = load_style(bundle, "light", runtime)
        assert style.active.stylize(frames[0].image[:256, :256]).shape == (256, 256, 4)
        pipe = Pipeline(MeshFaceTracker(), style)
        outputs[name] = [pipe.process(f) for f in frames][-1]
        pipe.close()
    hidden, shown, frame = outputs["hidden"], outputs["shown"], frames[-1]
    assert hidden.faces[0].stylized and np.array_equal(hidden.image, frame.image)  # alpha 0: the photo stays
    x0, y0, x1, y1 = face_roi(shown.faces[0].smoothed, frame.image.shape)
    region = np.abs(shown.image[y0:y1, x0:x1].astype(int) - frame.image[y0:y1, x0:x1].astype(int))
    assert region.mean() > 2.0
    # alpha 1 shows the style up to the crop's eased edge: wider than the fixed feathered ellipse would
    corner = region[: (y1 - y0) // 6, : (x1 - x0) // 6].mean()
    assert corner > 1.0


def test_a_manifest_that_promises_alpha_needs_a_four_channel_model(tmp_path):
    import json

    from bench.fixture_net import LIGHT, write_bundle
    from engine.errors import BundleError

    folder = write_bundle(tmp_path, "liar", {"light": LIGHT}, runtimes=("onnx",))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["io"]["alpha"] = True
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="the manifest expects 4 channels"):
        load_style(load_bundle(folder), "light", "onnx")


def test_passthrough_drops_the_style_at_a_frame_boundary_only(fixture_bundle):
    style = load_style(fixture_bundle, "light", "onnx")
    closed = []
    original_close = style.close
    style.close = lambda: (closed.append(True), original_close())
    pipe = Pipeline(MeshFaceTracker(), style)
    pipe.request_passthrough()
    assert pipe.style is style and not closed  # a frame may be inside stylize right now: nothing is closed
    result = pipe.process(_demo_frames(1)[0])
    assert result.style is None and pipe.style is None and closed == [True]
    pipe.close()


def test_a_first_start_stylizes_at_once_with_the_cheapest_tier_then_takes_the_measured_one(fixture_bundle, monkeypatch):
    import threading
    import time

    import engine.pipeline
    from engine.backends import WarmupCache

    assert not WarmupCache().knows(fixture_bundle, "auto", 2)  # a fresh machine: nothing measured yet
    shown = threading.Event()
    measure = engine.pipeline.load_style

    def measure_after_a_frame(bundle, tier="auto", *args, **kwargs):
        if tier == "auto":  # on a busy machine the measurement may finish before any frame: keep the order fixed
            shown.wait(30)
        return measure(bundle, tier, *args, **kwargs)

    monkeypatch.setattr(engine.pipeline, "load_style", measure_after_a_frame)
    pipe = Pipeline(MeshFaceTracker())
    pipe.request_style(fixture_bundle)
    frames, tiers = _demo_frames(60), []
    deadline = time.monotonic() + 60
    for frame in frames * 20:
        result = pipe.process(frame)
        if result.tier:
            tiers.append((result.tier, result.backend, pipe.style.controller is not None))
            shown.set()
        if pipe.wait_for_swap(0) and pipe.style.controller is not None or time.monotonic() > deadline:
            break
    pipe.close()
    assert tiers[0] == ("light", "onnx", False)  # the quick style: cheapest tier, no controller, no benchmark
    assert pipe.swaps == 2  # then the measured style (with its tier controller) replaced it
    assert WarmupCache().knows(fixture_bundle, "auto", 2)


def test_each_face_can_have_its_own_style(tmp_path, fixture_bundle):
    from bench.fixture_net import LIGHT, write_bundle

    other = load_bundle(write_bundle(tmp_path, "other", {"light": LIGHT}, runtimes=("onnx",)))
    frames = [Frame(np.hstack([f.image, f.image]), f.timestamp, f.index) for f in _demo_frames(14)]
    pipe = Pipeline(MeshFaceTracker(max_faces=4), load_style(fixture_bundle, "light", "onnx"))
    pipe.set_style_cycle([load_style(fixture_bundle, "light", "onnx"), load_style(other, "light", "onnx")])
    last = [pipe.process(f) for f in frames[:10]][-1]
    assert len(last.faces) == 2 and sorted(o.style for o in last.faces) == ["fixture", "other"]
    assert last.style == "fixture"  # the frame's common style is unchanged
    on_other = next(o.track_id for o in last.faces if o.style == "other")
    pipe.assign_face_style(on_other, load_style(fixture_bundle, "light", "onnx"))  # a click in the window
    styles = {o.track_id: o.style for o in pipe.process(frames[10]).faces}
    assert styles[on_other] == "fixture" and pipe.own_style(on_other) == "fixture"
    pipe.assign_face_style(on_other, None)  # back to its place in the cycle
    assert {o.track_id: o.style for o in pipe.process(frames[11]).faces}[on_other] == "other"
    assert pipe.own_style(on_other) is None
    pipe.assign_face_style(on_other, load_style(other, "light", "onnx"))
    pipe.process(frames[12])
    assert pipe.own_style(on_other) == "other"
    pipe.new_stream()  # another source: its faces are not these
    assert pipe.own_style(on_other) is None and pipe.process(frames[13]).faces == ()
    pipe.close()


def _face_lightness_shift(pipe: Pipeline, frames) -> float:
    """Mean L* change over the middle of the last frame's face box."""
    for f in frames:
        result = pipe.process(f)
    pipe.close()
    x0, y0, x1, y1 = face_roi(result.faces[0].smoothed, result.image.shape)
    cx, cy, r = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 8
    window = (slice(cy - r, cy + r), slice(cx - r, cx + r))
    lab = [cv2.cvtColor(im[window], cv2.COLOR_BGR2LAB)[:, :, 0].mean() for im in (result.image, frames[-1].image)]
    return float(lab[0] - lab[1]) * 100 / 255


def test_the_skin_tone_guard_bounds_how_far_a_style_moves_the_face_lightness(fixture_bundle):
    frames = _demo_frames(30)  # the correction eases in over frames
    style = lambda: load_style(fixture_bundle, "light", "onnx")  # noqa: E731
    off = _face_lightness_shift(Pipeline(MeshFaceTracker(), style()), frames)  # the fixture ships no guard
    guarded = _face_lightness_shift(Pipeline(MeshFaceTracker(), style(), PipelineConfig(skin_tone_limit=1.0)), frames)
    assert abs(off) > 3.0
    assert abs(guarded) < 0.6 * abs(off)


def test_a_crowd_over_the_stylizer_budget_is_redrawn_in_turn_and_stays_stylized(fixture_bundle):
    frames = [Frame(np.hstack([f.image, f.image]), f.timestamp, f.index) for f in _demo_frames(16)]

    def run(budget):
        pipe = Pipeline(
            MeshFaceTracker(max_faces=4),
            load_style(fixture_bundle, "light", "onnx"),
            PipelineConfig(redraw_budget_ms=budget),
        )
        results = [pipe.process(f) for f in frames]
        pipe.close()
        return results

    tight, every = run(0.0), run(None)  # a zero budget redraws one face a frame
    assert all(o.redrawn for r in every for o in r.faces)
    late = tight[-6:]
    assert all(len(r.faces) == 2 and all(o.stylized for o in r.faces) for r in late)
    redrawn = [[o.track_id for o in r.faces if o.redrawn] for r in late]
    assert all(len(ids) == 1 for ids in redrawn)
    assert {ids[0] for ids in redrawn[::2]} != {ids[0] for ids in redrawn[1::2]}  # the two faces take turns
    for result, frame in zip(late, frames[-6:]):  # a face not redrawn still shows its style, not the photo
        for face in result.faces:
            x0, y0, x1, y1 = face_roi(face.smoothed, result.image.shape)
            inner = (slice(y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4), slice(x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4))
            diff = np.abs(result.image[inner].astype(int) - frame.image[inner].astype(int)).mean()
            assert diff > 5, (face.track_id, face.redrawn, diff)
