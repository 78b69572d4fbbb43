"""End-to-end engine benchmark: a real clip through the threaded runtime, lockstep, both backends.

``python main.py bench engine [--clip NAME] [--frames N]`` prints JSON: per-stage p50/p95 (decode,
track, align, infer, smooth, blend, encode), end-to-end FPS and drops, for the clip at its native size
and upscaled to 1280×720, with a ~1 GMAC 256² fixture network on onnxruntime and on MNN. Without
../shared/data the generated demo stands in (said in the output).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2

from bench.fixture_net import ONE_GMAC, write_bundle
from bench.machine import finish, machine_info
from engine.bundle import load_bundle
from engine.frames import Frame
from engine.pipeline import Pipeline, load_style
from engine.runtime import Runtime
from engine.sinks import VideoRecorder
from engine.sources import DemoConfig, DemoSource, FrameSource, VideoFileSource
from engine.tracking import MeshFaceTracker

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
PER_FACE_STAGES = ("align", "smooth", "blend")


class ResizedSource:
    """Wraps a source and resizes every frame (the resize counts as decode time, as a camera's would)."""

    def __init__(self, inner: FrameSource, size: tuple[int, int]):
        self.inner, self.size = inner, size
        self.name, self.fps = f"{inner.name}@{size[0]}x{size[1]}", inner.fps

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            return None
        image = cv2.resize(frame.image, self.size, interpolation=cv2.INTER_LINEAR)
        return Frame(image, frame.timestamp, frame.index)

    def close(self) -> None:
        self.inner.close()


def _source(clip: str, frames: int | None, size: tuple[int, int] | None) -> FrameSource:
    path = VIDEOS / f"{clip}.mp4"
    src: FrameSource = (
        VideoFileSource(path, max_frames=frames) if path.is_file() else DemoSource(DemoConfig(frames=frames or 300))
    )
    return ResizedSource(src, size) if size else src


def run_case(bundle, backend: str, clip: str, frames: int | None, size, threads: int, workdir: Path) -> dict:
    style = load_style(bundle, "standard", backend, threads)
    pipeline = Pipeline(MeshFaceTracker(max_faces=4), style)
    source = _source(clip, frames, size)
    recorder = VideoRecorder(workdir / f"{backend}-{source.name}.mp4", fps=source.fps)
    runtime = Runtime(source, pipeline, [recorder], lockstep=True)
    runtime.start()
    runtime.wait()
    pipeline.close()
    report = runtime.report()
    stages = report["stages_ms"]
    stages["encode"] = stages.pop(f"sink:{recorder.name}", {})
    per_face = sum(stages[s]["p50"] for s in PER_FACE_STAGES if s in stages)
    return {
        "backend": backend,
        "source": source.name,
        "frame_size": list(size) if size else "native",
        "frames": report["frames_processed"],
        "fps_end_to_end": report["fps"],
        "dropped": report["dropped_before_processing"] + sum(report["dropped_per_sink"].values()),
        "per_face_non_network_p50_ms": round(per_face, 3),
        "stages_ms": {k: {"p50": v["p50"], "p95": v["p95"]} for k, v in stages.items()},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench engine")
    parser.add_argument("--clip", default="deepfacelive_Twitch1")
    parser.add_argument("--frames", type=int, default=None, help="limit frames per case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="onnx,mnn")
    args = parser.parse_args(argv)
    machine = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(write_bundle(Path(tmp), "bench-fixture", {"standard": ONE_GMAC}))
        cases = [
            run_case(bundle, backend, args.clip, args.frames, size, args.threads, Path(tmp))
            for backend in args.backends.split(",")
            for size in (None, (1280, 720))
        ]
    out = {
        "benchmark": "engine",
        "clip": args.clip if (VIDEOS / f"{args.clip}.mp4").is_file() else "demo (shared data absent)",
        "network": {"kind": "random-weight fixture", "input": 256, "gmacs": round(ONE_GMAC.gmacs, 3)},
        "inference_threads": args.threads,
        "machine": finish(machine),
        "cases": cases,
    }
    print(json.dumps(out, indent=1))
    return 0
