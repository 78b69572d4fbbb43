"""End-to-end engine benchmark: a real clip through the threaded runtime, lockstep, both backends.

``python main.py bench engine [--clip NAME] [--frames N] [--style ID --tier light]`` prints JSON:
per-stage p50/p95 (decode, track, align, infer, smooth, blend, encode), capture → sink latency p50/p95,
end-to-end FPS and drops, for the clip at its native size and upscaled to 1280×720, on onnxruntime and
on MNN, with recording and without. The network is an installed style's tier, or by default a ~1 GMAC
256² fixture. Each optimisation can be switched off (``--overlap``, ``--light-tracking``, ``--propagation``,
each ``on``, ``off`` or ``on,off``), and the report gives the on ÷ off FPS ratios measured in the same run.
Without ../shared/data the generated demo stands in (said in the output).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.fixture_net import ONE_GMAC, write_bundle
from bench.machine import finish, machine_info
from engine.bundle import BundleRegistry, load_bundle
from engine.frames import Frame
from engine.pipeline import Pipeline, load_style
from engine.runtime import Runtime
from engine.sinks import VideoRecorder
from engine.sources import DemoConfig, DemoSource, FrameSource, VideoFileSource
from engine.tracking import MESH_EVERY, MeshFaceTracker

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


class TiledSource:
    """Several sources in a 2-column grid of one ``size`` frame, each fitted into its tile (the several-face
    case, from real single-person clips); it ends with the shortest."""

    def __init__(self, inners: list[FrameSource], size: tuple[int, int]):
        self.inners, self.size = inners, size
        self.name = f"{len(inners)} tiled@{size[0]}x{size[1]}"
        self.fps = inners[0].fps

    def read(self) -> Frame | None:
        frames = [s.read() for s in self.inners]
        if any(f is None for f in frames):
            return None
        (w, h), cols = self.size, 2
        tw, th = w // cols, h // -(-len(frames) // cols)
        canvas = np.zeros((h, w, 3), np.uint8)
        for i, f in enumerate(frames):
            fh, fw = f.image.shape[:2]
            k = min(tw / fw, th / fh)
            fitted = cv2.resize(f.image, (int(fw * k), int(fh * k)), interpolation=cv2.INTER_AREA)
            y, x = (i // cols) * th + (th - fitted.shape[0]) // 2, (i % cols) * tw + (tw - fitted.shape[1]) // 2
            canvas[y : y + fitted.shape[0], x : x + fitted.shape[1]] = fitted
        return Frame(canvas, frames[0].timestamp, frames[0].index)

    def close(self) -> None:
        for s in self.inners:
            s.close()


def _source(clip: str, frames: int | None, size: tuple[int, int] | None, paced: bool = False) -> FrameSource:
    """One clip of ../shared/data/videos, or several joined by '+' tiled into ``size``."""
    names = clip.split("+")
    sources: list[FrameSource] = [
        VideoFileSource(VIDEOS / f"{n}.mp4", paced=paced, max_frames=frames)
        if (VIDEOS / f"{n}.mp4").is_file()
        else DemoSource(DemoConfig(frames=frames or 300, paced=paced))
        for n in names
    ]
    if len(sources) > 1:
        return TiledSource(sources, size or (1280, 720))
    return ResizedSource(sources[0], size) if size else sources[0]


@dataclass(frozen=True)
class Case:
    backend: str
    size: tuple[int, int] | None  # None: the clip's native size
    record: bool
    overlap: bool
    light_tracking: bool
    propagation: bool


def run_case(
    bundle, tier: str, case: Case, clip: str, frames: int | None, threads: int, workdir: Path, paced: bool = False
) -> dict:
    style = load_style(bundle, tier, case.backend, threads)
    mesh_every = MESH_EVERY if case.propagation else 1
    pipeline = Pipeline(MeshFaceTracker(max_faces=4, light=case.light_tracking, mesh_every=mesh_every), style)
    source = _source(clip, frames, case.size, paced)
    sinks = [VideoRecorder(workdir / f"{case.backend}-{source.name}.mp4", fps=source.fps)] if case.record else []
    faces: list[int] = []
    runtime = Runtime(
        source,
        pipeline,
        sinks,
        lockstep=not paced,
        overlap=case.overlap,
        on_result=lambda r: faces.append(len(r.faces)),
    )
    runtime.start()
    runtime.wait()
    pipeline.close()
    report = runtime.report()
    stages = report["stages_ms"]
    if sinks:
        stages["encode"] = stages.pop(f"sink:{sinks[0].name}", {})
    per_face = sum(stages[s]["p50"] for s in PER_FACE_STAGES if s in stages)
    return {
        **asdict(case),
        "source": source.name,
        "frame_size": list(case.size) if case.size else "native",
        "frames": report["frames_processed"],
        "fps_end_to_end": report["fps"],
        "faces_per_frame": round(sum(faces) / max(len(faces), 1), 2),
        "dropped": report["dropped_before_processing"] + sum(report["dropped_per_sink"].values()),
        "per_face_non_network_p50_ms": round(per_face, 3),
        "latency_ms": report["latency_ms"],
        "stages_ms": {k: {"p50": v["p50"], "p95": v["p95"]} for k, v in stages.items()},
    }


OPTIMISATIONS = ("overlap", "light_tracking", "propagation")
SETTINGS = ("backend", "frame_size", "record", *OPTIMISATIONS)


def on_off_ratios(cases: list[dict], switches: tuple[str, ...]) -> list[dict]:
    """FPS with ``switches`` all on ÷ all off, for each pair of cases that agree in every other setting."""
    others = [k for k in SETTINGS if k not in switches]

    def key(case: dict) -> tuple:
        return tuple(str(case[k]) for k in others)

    off = {key(c): c["fps_end_to_end"] for c in cases if not any(c[s] for s in switches)}
    return [
        {**{k: c[k] for k in others}, "fps_ratio": round(c["fps_end_to_end"] / off[key(c)], 3)}
        for c in cases
        if all(c[s] for s in switches) and off.get(key(c), 0) > 0
    ]


def _switch(text: str) -> list[bool]:
    return [{"on": True, "off": False}[v] for v in text.split(",")]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench engine")
    parser.add_argument("--clip", default="deepfacelive_Twitch1", help="a clip, or several joined by '+' to tile")
    parser.add_argument("--paced", action="store_true", help="play at the clip's rate, dropping frames (latency)")
    parser.add_argument("--frames", type=int, default=None, help="limit frames per case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="onnx,mnn")
    parser.add_argument("--sizes", default="native,1280x720", help="comma-separated: native or WxH")
    parser.add_argument("--style", help="an installed style (or a bundle folder) instead of the fixture network")
    parser.add_argument("--tier", help="its tier (default: light for a style, the fixture's standard)")
    parser.add_argument("--record", default="on", help="on, off or on,off: with an H.264 recording sink")
    parser.add_argument("--overlap", default="on,off", help="track the next frame while rendering: on, off, on,off")
    parser.add_argument("--light-tracking", default="on,off", help="light tracking (off: the full scheme)")
    parser.add_argument("--propagation", default="on,off", help="move landmarks by optical flow between meshes")
    args = parser.parse_args(argv)
    machine = machine_info()
    sizes = [None if s == "native" else tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    cases = [
        Case(backend, size, record, overlap, light, propagate)
        for backend in args.backends.split(",")
        for size in sizes
        for record in _switch(args.record)
        for overlap in _switch(args.overlap)
        for light in _switch(args.light_tracking)
        for propagate in _switch(args.propagation)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        if args.style:
            bundle = load_bundle(Path(args.style)) if Path(args.style).is_dir() else BundleRegistry().get(args.style)
            tier = args.tier or "light"
            network = {"style": bundle.id, "tier": tier, "gmacs": bundle.tier(tier).gmacs}
        else:
            bundle = load_bundle(write_bundle(Path(tmp), "bench-fixture", {"standard": ONE_GMAC}))
            tier = "standard"
            network = {"kind": "random-weight fixture", "input": 256, "gmacs": round(ONE_GMAC.gmacs, 3)}
        results = [
            run_case(bundle, tier, c, args.clip, args.frames, args.threads, Path(tmp), args.paced) for c in cases
        ]
    out = {
        "benchmark": "engine",
        "clip": args.clip if (VIDEOS / f"{args.clip.split('+')[0]}.mp4").is_file() else "demo (shared data absent)",
        "paced": args.paced,
        "network": network,
        "inference_threads": args.threads,
        "machine": finish(machine),
        "on_vs_off": {switch: on_off_ratios(results, (switch,)) for switch in OPTIMISATIONS},
        "all_on_vs_all_off": on_off_ratios(results, OPTIMISATIONS),
        "cases": results,
    }
    print(json.dumps(out, indent=1))
    return 0
