"""Tracking cost and quality on the shared clips: the default scheme against its optimisations off, in one run.

``python main.py bench tracking [--clips NAME,...] [--frames N] [--size native|WxH]`` prints JSON: per clip
and per scheme the tracking time p50/p95 per frame and the face statistics the acceptance tests use
(face fraction, distinct ids, id switches, most faces at once), then the mean-time ratio of the full
scheme to each other. The schemes: ``propagated`` (the default: light tracking, face mesh every
``MESH_EVERY`` frames, landmarks moved by optical flow in between), ``light`` (mesh on every frame) and
``full`` (the dearer earlier scheme). Means are compared because a propagated clip alternates cheap and
dear frames, so its median says little about the cost.
Without ../shared/data the generated demo stands in (said in the output).
"""

from __future__ import annotations

import argparse
import json
import statistics

from bench.engine import VIDEOS, ResizedSource
from bench.machine import finish, machine_info
from engine.pipeline import Pipeline
from engine.sources import DemoConfig, DemoSource, FrameSource, VideoFileSource
from engine.stats import FaceStats, StageTimes
from engine.tracking import MESH_EVERY, MeshFaceTracker


def _clips(names: str | None) -> list[str]:
    if names:
        return names.split(",")
    return sorted(p.stem for p in VIDEOS.glob("*.mp4")) or ["demo"]


def _source(clip: str, frames: int, size: tuple[int, int] | None) -> FrameSource:
    path = VIDEOS / f"{clip}.mp4"
    src: FrameSource = (
        VideoFileSource(path, max_frames=frames) if path.is_file() else DemoSource(DemoConfig(frames=frames))
    )
    return ResizedSource(src, size) if size else src


SCHEMES = {"propagated": (True, MESH_EVERY), "light": (True, 1), "full": (False, 1)}  # (light, mesh_every)


def measure(clip: str, scheme: str, frames: int, size: tuple[int, int] | None) -> dict:
    """Track every frame of the clip (lockstep, no style) and summarise time and faces."""
    light, mesh_every = SCHEMES[scheme]
    pipeline = Pipeline(MeshFaceTracker(max_faces=4, light=light, mesh_every=mesh_every))
    source = _source(clip, frames, size)
    times, faces = StageTimes(), FaceStats()
    try:
        while (frame := source.read()) is not None:
            tracked = pipeline.track(frame)
            times.add("track", tracked.track_ms)
            faces.add([f.track_id for f in tracked.faces])
    finally:
        source.close()
        pipeline.close()
    track = times.summary()["track"]
    return {"track_ms": {"p50": track["p50"], "p95": track["p95"], "mean": track["mean"]}, **faces.summary()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench tracking")
    parser.add_argument("--clips", help="comma-separated clip names of ../shared/data/videos (default: all)")
    parser.add_argument("--frames", type=int, default=300, help="frames per clip")
    parser.add_argument("--size", default="native", help="native, or WxH each frame is resized to")
    args = parser.parse_args(argv)
    size = None if args.size == "native" else tuple(int(v) for v in args.size.split("x"))
    machine = machine_info()
    clips = {}
    for clip in _clips(args.clips):
        results = {scheme: measure(clip, scheme, args.frames, size) for scheme in SCHEMES}
        full = results["full"]["track_ms"]["mean"]
        results["mean_full_over"] = {
            scheme: round(full / r["track_ms"]["mean"], 3) for scheme, r in results.items() if r["track_ms"]["mean"]
        }
        clips[clip] = results
    out = {
        "benchmark": "tracking",
        "frame_size": args.size,
        "machine": finish(machine),
        "median_mean_full_over": {
            scheme: round(statistics.median(c["mean_full_over"][scheme] for c in clips.values()), 3)
            for scheme in SCHEMES
            if all(scheme in c["mean_full_over"] for c in clips.values())
        },
        "clips": clips,
    }
    print(json.dumps(out, indent=1))
    return 0
