"""End-to-end engine benchmark: a real clip through the threaded runtime, lockstep, both backends.

``python main.py bench engine [--clip NAME] [--frames N] [--style ID --tier light]`` prints JSON:
per-stage p50/p95 (decode, track, align, infer, smooth, blend, encode), capture → sink latency p50/p95,
end-to-end FPS and drops, for the clip at its native size and upscaled to 1280×720, on onnxruntime and
on MNN, with recording and without. The network is an installed style's tier, or by default a ~1 GMAC
256² fixture. Each optimisation can be switched off (``--overlap``, ``--light-tracking``, ``--propagation``,
``--redraw-budget``, each ``on``, ``off`` or ``on,off``), and the report gives the on ÷ off FPS ratios
measured in the same run.
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
from engine.blend import face_roi
from engine.bundle import BundleRegistry, load_bundle
from engine.frames import Frame
from engine.pipeline import FrameResult, Pipeline, PipelineConfig, load_style
from engine.runtime import Runtime
from engine.sinks import VideoRecorder
from engine.sources import DemoConfig, DemoSource, FrameSource, VideoFileSource
from engine.stats import p50_p95
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


class PreloadedSource:
    """Every frame of ``inner`` composed before the run, then handed out in turn. Tiling decodes four clips
    and resizes them for every frame, work a camera showing four people never does; preloaded, the case
    measures the pipeline (decode is then a list lookup)."""

    def __init__(self, inner: FrameSource):
        self.name, self.fps = f"{inner.name} preloaded", inner.fps
        self._frames: list[Frame] = []
        while (frame := inner.read()) is not None:
            self._frames.append(frame)
        inner.close()
        self._frames.reverse()

    def read(self) -> Frame | None:
        return self._frames.pop() if self._frames else None

    def close(self) -> None:
        self._frames.clear()


def _source(clip: str, frames: int | None, size: tuple[int, int] | None, paced: bool = False) -> FrameSource:
    """One clip of ../shared/data/videos, or several joined by '+' tiled into ``size`` (composed before the
    run unless ``paced``: then the clips are decoded and tiled live)."""
    names = clip.split("+")
    sources: list[FrameSource] = [
        VideoFileSource(VIDEOS / f"{n}.mp4", paced=paced, max_frames=frames)
        if (VIDEOS / f"{n}.mp4").is_file()
        else DemoSource(DemoConfig(frames=frames or 300, paced=paced))
        for n in names
    ]
    if len(sources) > 1:
        tiled = TiledSource(sources, size or (1280, 720))
        return tiled if paced else PreloadedSource(tiled)
    return ResizedSource(sources[0], size) if size else sources[0]


@dataclass(frozen=True)
class Case:
    backend: str
    size: tuple[int, int] | None  # None: the clip's native size
    record: bool
    overlap: bool
    light_tracking: bool
    propagation: bool
    redraw_budget: bool


def run_case(
    bundle, tier: str, case: Case, clip: str, frames: int | None, threads: int, workdir: Path, paced: bool = False
) -> dict:
    style = load_style(bundle, tier, case.backend, threads)
    mesh_every = MESH_EVERY if case.propagation else 1
    tracker = MeshFaceTracker(max_faces=4, light=case.light_tracking, mesh_every=mesh_every)
    config = PipelineConfig() if case.redraw_budget else PipelineConfig(redraw_budget_ms=None)
    pipeline = Pipeline(tracker, style, config)
    source = _source(clip, frames, case.size, paced)
    sinks = [VideoRecorder(workdir / f"{case.backend}-{source.name}.mp4", fps=source.fps)] if case.record else []
    faces: list[int] = []
    redrawn: list[int] = []

    def observe(result: FrameResult) -> None:
        faces.append(len(result.faces))
        redrawn.append(sum(f.redrawn for f in result.faces))

    runtime = Runtime(
        source,
        pipeline,
        sinks,
        lockstep=not paced,
        overlap=case.overlap,
        on_result=observe,
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
        "faces_redrawn_per_frame": round(sum(redrawn) / max(len(redrawn), 1), 2),
        "dropped": report["dropped_before_processing"] + sum(report["dropped_per_sink"].values()),
        "per_face_non_network_p50_ms": round(per_face, 3),
        "latency_ms": report["latency_ms"],
        "stages_ms": {k: {"p50": v["p50"], "p95": v["p95"]} for k, v in stages.items()},
    }


def redraw_error(bundle, tier: str, clip: str, frames: int | None, threads: int, size: tuple[int, int] | None) -> dict:
    """What the redraw budget costs in picture: the clip rendered frame by frame with every face redrawn,
    with the default budget, and with a zero budget (one face a frame: the most a crowd can lag). For each
    budget, the mean absolute difference (grey levels, BGR) from the every-face output inside the faces'
    boxes, beside how much those boxes change from one frame to the next in the every-face output (the
    motion a skipped redraw lags behind). p50 / p95 over frames."""

    def render(budget: float | None) -> list[FrameResult]:
        pipeline = Pipeline(
            MeshFaceTracker(max_faces=4),
            load_style(bundle, tier, "onnx", threads),
            PipelineConfig(redraw_budget_ms=budget),
        )
        source = _source(clip, frames, size)
        results = [pipeline.process(f) for f in iter(source.read, None)]
        pipeline.close()
        return results

    every = render(None)
    masks = []
    for result in every:
        mask = np.zeros(result.image.shape[:2], bool)
        for x0, y0, x1, y1 in filter(None, (face_roi(f.smoothed, result.image.shape) for f in result.faces)):
            mask[y0:y1, x0:x1] = True
        masks.append(mask)

    def box_difference(results: list[FrameResult], others: list[FrameResult]) -> dict[str, float]:
        """p50 / p95 over frames (the first skipped) of the mean |difference| inside the faces' boxes."""
        pairs = zip(masks[1:], results[1:], others[1:])
        return p50_p95([cv2.absdiff(a.image, b.image)[m].mean() for m, a, b in pairs if m.any()], 2)

    out = {"frames": int(sum(m.any() for m in masks[1:])), "frame_to_frame": box_difference(every, [every[0], *every])}
    for name, budget in (("default_budget", PipelineConfig.redraw_budget_ms), ("one_face_a_frame", 0.0)):
        budgeted = render(budget)
        out[name] = {
            "vs_every_face": box_difference(budgeted, every),
            "faces_redrawn_per_frame": round(float(np.mean([sum(f.redrawn for f in r.faces) for r in budgeted])), 2),
        }
    return out


OPTIMISATIONS = ("overlap", "light_tracking", "propagation", "redraw_budget")
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
    parser.add_argument(
        "--redraw-budget", default="on", help="redraw only the stalest faces a frame's stylizer budget allows"
    )
    parser.add_argument(
        "--redraw-error", action="store_true", help="also measure what the redraw budget changes in the picture"
    )
    args = parser.parse_args(argv)
    machine = machine_info()
    sizes = [None if s == "native" else tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    cases = [
        Case(backend, size, record, overlap, light, propagate, budget)
        for backend in args.backends.split(",")
        for size in sizes
        for record in _switch(args.record)
        for overlap in _switch(args.overlap)
        for light in _switch(args.light_tracking)
        for propagate in _switch(args.propagation)
        for budget in _switch(args.redraw_budget)
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
        fidelity = {
            "x".join(map(str, size)) if size else "native": redraw_error(
                bundle, tier, args.clip, args.frames, args.threads, size
            )
            for size in sizes
            if args.redraw_error
        }
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
        **({"redraw_error": fidelity} if fidelity else {}),
    }
    print(json.dumps(out, indent=1))
    return 0
