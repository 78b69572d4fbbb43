"""Timing statistics: per-stage samples summarised as p50/p95, bounded in memory for long streams."""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np


def median_ms(call: Callable[[], object], runs: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``call()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def p50_p95(values, digits: int = 3) -> dict[str, float]:
    """The median and 95th percentile of ``values``, rounded; empty for no values."""
    if len(values) == 0:
        return {}
    p50, p95 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95])
    return {"p50": round(float(p50), digits), "p95": round(float(p95), digits)}


class StageTimes:
    """Keeps the last ``window`` samples (ms) per stage; enough for stable percentiles, bounded for soak runs."""

    def __init__(self, window: int = 5000) -> None:
        self.window = window
        self._samples: dict[str, deque[float]] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()  # the runtime's threads add while the window reads a summary

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            if stage not in self._samples:
                self._samples[stage] = deque(maxlen=self.window)
                self.counts[stage] = 0
            self._samples[stage].append(ms)
            self.counts[stage] += 1

    def add_all(self, timings: dict[str, float]) -> None:
        for stage, ms in timings.items():
            self.add(stage, ms)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {p50, p95, mean, n}} in milliseconds."""
        with self._lock:
            copies = {
                stage: (np.array(samples, dtype=np.float64), self.counts[stage])
                for stage, samples in self._samples.items()
            }
        out = {}
        for stage, (arr, n) in copies.items():
            out[stage] = {
                **p50_p95(arr),
                "mean": round(float(arr.mean()), 3),
                "n": n,
            }
        return out


class FaceStats:
    """Tracking outcome over a stream: how often faces were found, which ids appeared, id switches.

    An id switch is counted when a new track id appears while the number of faces did not grow,
    i.e. an existing face was given a new identity.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.frames_with_face = 0
        self.max_faces = 0
        self.track_ids: set[int] = set()
        self.id_switches = 0
        self._last_count = 0

    def add(self, track_ids: list[int]) -> None:
        self.frames += 1
        if track_ids:
            self.frames_with_face += 1
        new = [i for i in track_ids if i not in self.track_ids]
        if new and len(track_ids) <= self._last_count:
            self.id_switches += len(new)
        self.track_ids.update(track_ids)
        self.max_faces = max(self.max_faces, len(track_ids))
        self._last_count = len(track_ids)

    def summary(self) -> dict[str, float | int]:
        return {
            "frames": self.frames,
            "frames_with_face": self.frames_with_face,
            "face_fraction": round(self.frames_with_face / self.frames, 4) if self.frames else 0.0,
            "distinct_track_ids": len(self.track_ids),
            "id_switches": self.id_switches,
            "max_faces": self.max_faces,
        }
