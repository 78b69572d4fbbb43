"""Soak: the threaded runtime streaming a looped clip for 10 minutes (STYLECAST_SOAK_S overrides).

The stream runs in a process of its own, as in the app: in the test process, what earlier tests freed
stays in the heap and is given back and taken again at glibc's whim, which swings the resident size by
200 MB whatever the stream does.
"""

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from engine.allocator import keep_frame_buffers_in_heap
from engine.bundle import load_bundle
from engine.pipeline import Pipeline, load_style
from engine.runtime import Runtime
from engine.sinks import CallbackSink, VideoRecorder
from engine.sources import DemoConfig, DemoSource, VideoFileSource
from engine.tracking import MeshFaceTracker
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.slow


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def soak(bundle_dir: str, workdir: str, duration: float) -> dict:
    """Stream for ``duration`` seconds and report resident memory, frames and threads left behind."""
    keep_frame_buffers_in_heap()  # as the app does before its first thread
    clip = SHARED_DATA / "videos" / "deepfacelive_Twitch1.mp4"
    source = (
        VideoFileSource(clip, paced=True, loop=True)
        if clip.is_file()
        else DemoSource(DemoConfig(frames=None, paced=True))
    )
    threads_before = set(threading.enumerate())
    pipeline = Pipeline(MeshFaceTracker(), load_style(load_bundle(Path(bundle_dir)), "standard", "auto"))
    sinks = [CallbackSink(lambda r: None), VideoRecorder(Path(workdir) / "soak.mp4", fps=source.fps)]
    runtime = Runtime(source, pipeline, sinks).start()
    samples = []
    start = time.monotonic()
    while time.monotonic() - start < duration:
        time.sleep(5)
        samples.append(rss_mb())
    stopped = runtime.stop(timeout=2.0)
    pipeline.close()
    report = runtime.report()
    warm = samples[min(len(samples) - 1, 6)]  # after 30 s: models, codecs and caches are in place
    return {
        "duration_s": duration,
        "stopped_in_time": stopped,
        "rss_mb_after_warmup": warm,
        "rss_growth_mb": max(samples) - warm,
        "threads_left": [t.name for t in set(threading.enumerate()) - threads_before],
        "frames": report["frames_processed"],
        "fps": report["fps"],
        "dropped_before_processing": report["dropped_before_processing"],
        "dropped_per_sink": report["dropped_per_sink"],
    }


def test_ten_minute_soak_has_bounded_memory_and_no_thread_leak(fixture_bundle_root, tmp_path):
    duration = float(os.environ.get("STYLECAST_SOAK_S", 600))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(soak, (str(fixture_bundle_root / "fixture"), str(tmp_path), duration))
    print(json.dumps(result))
    assert result["stopped_in_time"]
    assert result["rss_growth_mb"] <= 50
    assert not result["threads_left"]
    assert result["frames"] > duration * 5
