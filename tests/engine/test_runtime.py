import threading
import time

import numpy as np
import pytest

from engine.errors import SinkError, SourceError
from engine.frames import Frame
from engine.pipeline import Pipeline
from engine.runtime import Mailbox, Runtime
from engine.sinks import CallbackSink


class NoFaces:
    def __call__(self, image, t):
        return []

    def reset(self):
        pass

    def close(self):
        pass


class ListSource:
    name, fps = "list", 30.0

    def __init__(self, n, fail_at=(), delay=0.0):
        self.n, self.fail_at, self.delay, self.i = n, set(fail_at), delay, 0

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.i in self.fail_at:
            self.fail_at.discard(self.i)
            raise SourceError("camera hiccup")
        if self.n is not None and self.i >= self.n:
            return None
        self.i += 1
        return Frame(np.full((24, 32, 3), self.i % 255, np.uint8), self.i / 30, self.i - 1)

    def close(self):
        pass


def test_mailbox_newest_wins_and_counts_drops():
    box = Mailbox()
    for i in range(5):
        box.put(i)
    assert box.get(0.1) == 4 and box.dropped == 4
    assert box.get(0.05) is None
    box.close()
    assert box.put(9) is False and box.get() is None


def test_lockstep_mailbox_blocks_instead_of_dropping():
    box = Mailbox(lockstep=True)
    got = []

    def reader():
        while (item := box.get()) is not None:
            got.append(item)
            time.sleep(0.001)

    th = threading.Thread(target=reader)
    th.start()
    for i in range(50):
        box.put(i)
    box.close()
    th.join(2)
    assert got == list(range(50)) and box.dropped == 0


def test_lockstep_runtime_processes_every_frame_and_survives_source_errors():
    seen = []
    rt = Runtime(ListSource(30, fail_at=[5, 6]), Pipeline(NoFaces()), [CallbackSink(seen.append)], lockstep=True)
    rt.start()
    assert rt.wait(10)
    report = rt.report()
    assert report["frames_processed"] == 30 and [r.index for r in seen] == list(range(30))
    assert report["source_errors"] == 2 and report["dropped_before_processing"] == 0
    assert {"decode", "track", "total"} <= set(report["stages_ms"])


def test_slow_sink_drops_frames_but_never_stalls_processing():
    def slow(result):
        time.sleep(0.05)

    rt = Runtime(ListSource(None, delay=0.002), Pipeline(NoFaces()), [CallbackSink(slow, "slow")])
    rt.start()
    time.sleep(1.0)
    assert rt.stop(timeout=1.0)
    report = rt.report()
    assert report["frames_processed"] > 3 * report["sink_written"]["slow"]
    assert report["dropped_per_sink"]["slow"] > 0


def test_a_failing_sink_is_isolated():
    good = []

    def broken(result):
        raise SinkError("disk full")

    sinks = [CallbackSink(broken, "broken"), CallbackSink(good.append, "good")]
    rt = Runtime(ListSource(20), Pipeline(NoFaces()), sinks, lockstep=True)
    rt.start()
    assert rt.wait(10)
    report = rt.report()
    assert report["sink_errors"] == {"broken": "disk full"}
    assert len(good) == 20


def test_a_cut_survives_the_frames_dropped_before_tracking_sees_it():
    """A slideshow paced at 30 FPS with tracking slower than that: most frames are dropped unread, the
    first frame of a photo among them, and its cut must still reach the tracker."""

    class Stills:
        name, fps = "stills", 30.0

        def __init__(self):
            self.i = 0

        def read(self):
            if self.i >= 60:
                return None
            time.sleep(1 / 30)
            self.i += 1
            return Frame(
                np.full((24, 32, 3), self.i // 15, np.uint8), self.i / 30, self.i - 1, cut=(self.i - 1) % 15 == 0
            )

        def close(self):
            pass

    class SlowTracker(NoFaces):
        resets = 0

        def __call__(self, image, t):
            time.sleep(0.07)
            return []

        def reset(self):
            SlowTracker.resets += 1

    rt = Runtime(Stills(), Pipeline(SlowTracker()), [], lockstep=False)
    rt.start()
    assert rt.wait(20)
    assert rt.report()["dropped_before_processing"] > 20 and SlowTracker.resets == 3  # photos 2, 3 and 4


def test_a_failed_snapshot_fails_alone_and_the_next_one_is_saved(tmp_path):
    from engine.sinks import SnapshotSink

    (tmp_path / "a_file").write_text("not a folder")
    snapshots = SnapshotSink()
    snapshots.request(tmp_path / "a_file" / "lost.png")  # like a full or read-only disk
    rt = Runtime(ListSource(None, delay=0.005), Pipeline(NoFaces()), [snapshots], lockstep=True)
    rt.start()
    deadline = time.monotonic() + 10
    while "snapshot" not in rt.report()["sink_errors"] and time.monotonic() < deadline:
        time.sleep(0.01)
    snapshots.request(tmp_path / "kept.png")
    while not snapshots.saved and time.monotonic() < deadline:
        time.sleep(0.01)
    rt.stop()
    assert "lost.png" in rt.report()["sink_errors"]["snapshot"]
    assert snapshots.saved == [tmp_path / "kept.png"] and (tmp_path / "kept.png").stat().st_size > 0


@pytest.mark.parametrize("lockstep", [False, True])
def test_clean_shutdown_within_one_second_and_no_thread_leak(lockstep):
    before = threading.active_count()
    rt = Runtime(ListSource(None, delay=0.005), Pipeline(NoFaces()), [CallbackSink(lambda r: None)], lockstep=lockstep)
    rt.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    assert rt.stop(timeout=1.0)
    assert time.perf_counter() - t0 < 1.0
    assert not rt.running and threading.active_count() == before


class Exploding:
    """A tracker that fails with an unexpected error on some frames (a library bug, not a typed error)."""

    def __init__(self, at):
        self.at, self.calls = set(at), 0

    def __call__(self, image, t):
        self.calls += 1
        if self.calls in self.at:
            raise ZeroDivisionError("bug inside the tracker")
        return []

    def reset(self):
        pass

    def close(self):
        pass


class BrokenSource(ListSource):
    failed = False

    def read(self):
        if self.i == 3 and not self.failed:
            self.failed = True
            raise ValueError("decoder bug")
        return super().read()


@pytest.mark.parametrize("overlap", [True, False])
def test_unexpected_errors_become_frame_errors_and_lockstep_never_hangs(monkeypatch, overlap):
    seen = []
    pipe = Pipeline(Exploding(at=[4, 9]))
    monkeypatch.setattr(pipe, "render", _raising_on(pipe.render, {2}))
    monkeypatch.setattr(pipe, "track", _raising_on(pipe.track, {6}))
    rt = Runtime(BrokenSource(20), pipe, [CallbackSink(seen.append)], lockstep=True, overlap=overlap)
    rt.start()
    assert rt.wait(10)  # no thread died silently: the stream reached its end
    assert len(seen) == 20
    errors = {r.index: r.error for r in seen if r.error}
    assert "frame failed: 'boom'" in errors[2] and seen[2].image is not None
    assert "frame failed: 'boom'" in errors[6] and seen[6].image is not None
    assert any("tracking failed: bug inside the tracker" in e for e in errors.values())
    assert rt.report()["source_errors"] == 1


def _raising_on(step, indices):
    def wrapped(item):
        if getattr(item, "frame", item).index in indices:
            raise KeyError("boom")
        return step(item)

    return wrapped


def test_a_sink_raising_an_unexpected_error_is_isolated_and_still_closed():
    good, closed = [], []

    class Buggy(CallbackSink):
        def close(self):
            closed.append(True)

    sinks = [Buggy(lambda r: 1 / 0, "buggy"), CallbackSink(good.append, "good")]
    rt = Runtime(ListSource(15), Pipeline(NoFaces()), sinks, lockstep=True)
    rt.start()
    assert rt.wait(10)
    assert "division by zero" in rt.report()["sink_errors"]["buggy"] and len(good) == 15 and closed == [True]


class _Handshake:
    """Tracking frame 1 waits for rendering of frame 0 to begin, and that render waits for tracking of frame 1:
    only a runtime that overlaps the two halves gets both handshakes without timing out."""

    def __init__(self, pipe):
        self.render_started, self.track_started = threading.Event(), threading.Event()
        self.both_met = []
        track, render = pipe.track, pipe.render

        def tracking(frame):
            if frame.index == 1:
                self.track_started.set()
                self.both_met.append(self.render_started.wait(1.0))
            return track(frame)

        def rendering(tracked):
            if tracked.frame.index == 0:
                self.render_started.set()
                self.both_met.append(self.track_started.wait(1.0))
            return render(tracked)

        pipe.track, pipe.render = tracking, rendering


@pytest.mark.parametrize("overlap", [True, False])
def test_tracking_of_the_next_frame_overlaps_rendering_only_when_asked(overlap):
    pipe, seen = Pipeline(NoFaces()), []
    handshake = _Handshake(pipe)
    rt = Runtime(ListSource(12), pipe, [CallbackSink(seen.append)], lockstep=True, overlap=overlap)
    rt.start()
    assert rt.wait(10)
    assert [r.index for r in seen] == list(range(12))  # order kept, nothing dropped in lockstep
    assert all(handshake.both_met) == overlap and rt.report()["overlap"] == overlap


def test_at_most_one_tracked_frame_waits_for_the_renderer():
    pipe, ahead = Pipeline(NoFaces()), []
    counts = {"tracked": 0, "rendered": 0}
    track, render = pipe.track, pipe.render

    def tracking(frame):
        ahead.append(counts["tracked"] - counts["rendered"])
        counts["tracked"] += 1
        return track(frame)

    def rendering(tracked):
        time.sleep(0.01)  # a slow renderer: the tracker must wait for it, not run ahead
        counts["rendered"] += 1
        return render(tracked)

    pipe.track, pipe.render = tracking, rendering
    rt = Runtime(ListSource(None, delay=0.001), pipe, [CallbackSink(lambda r: None)])
    rt.start()
    time.sleep(0.5)
    assert rt.stop(timeout=1.0)
    assert max(ahead) <= 2 and rt.report()["dropped_before_processing"] > 0  # newest camera frame wins


def test_report_gives_capture_to_sink_latency():
    rt = Runtime(ListSource(20), Pipeline(NoFaces()), [CallbackSink(lambda r: time.sleep(0.01), "slow")], lockstep=True)
    rt.start()
    assert rt.wait(10)
    latency = rt.report()["latency_ms"]
    assert set(latency) == {"rendered", "slow"}
    # each frame reaches the sink at least its 10 ms write after it was rendered
    assert latency["slow"]["p50"] >= latency["rendered"]["p50"] + 10.0
