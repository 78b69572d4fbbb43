"""Soak: the threaded runtime streaming a looped clip for 10 minutes (STYLECAST_SOAK_S overrides)."""

import json
import os
import threading
import time

import pytest

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


def test_ten_minute_soak_has_bounded_memory_and_no_thread_leak(fixture_bundle, tmp_path):
    duration = float(os.environ.get("STYLECAST_SOAK_S", 600))
    clip = SHARED_DATA / "videos" / "deepfacelive_Twitch1.mp4"
    source = (
        VideoFileSource(clip, paced=True, loop=True)
        if clip.is_file()
        else DemoSource(DemoConfig(frames=None, paced=True))
    )
    threads_before = set(threading.enumerate())  # earlier tests' daemon threads may end meanwhile
    pipeline = Pipeline(MeshFaceTracker(), load_style(fixture_bundle, "standard", "auto"))
    sinks = [CallbackSink(lambda r: None), VideoRecorder(tmp_path / "soak.mp4", fps=source.fps)]
    runtime = Runtime(source, pipeline, sinks).start()
    samples = []
    start = time.monotonic()
    while time.monotonic() - start < duration:
        time.sleep(5)
        samples.append(rss_mb())
    assert runtime.stop(timeout=2.0)
    pipeline.close()
    report = runtime.report()
    warm = samples[min(len(samples) - 1, 6)]  # after 30 s: models, codecs and caches are in place
    growth = max(samples) - warm
    print(
        json.dumps(
            {
                "duration_s": duration,
                "rss_mb_after_warmup": warm,
                "rss_growth_mb": growth,
                "frames": report["frames_processed"],
                "fps": report["fps"],
                "dropped_before_processing": report["dropped_before_processing"],
                "dropped_per_sink": report["dropped_per_sink"],
            }
        )
    )
    assert growth <= 50
    assert not set(threading.enumerate()) - threads_before  # no thread of this stream is left
    assert report["frames_processed"] > duration * 5
