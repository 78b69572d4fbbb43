"""Temporal stability on the demo held still with σ=2 sensor noise: flicker amplification and jitter.

``python main.py bench temporal [--style ID]`` prints JSON with smoothing on and off.
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from engine.align import SmoothingConfig
from engine.blend import feather_mask
from engine.bundle import Bundle
from engine.metrics import flicker_amplification, transform_jitter
from engine.pipeline import Pipeline, PipelineConfig, load_style
from engine.sources import DemoConfig, DemoSource
from engine.tracking import MeshFaceTracker


def measure_temporal(bundle: Bundle | None, smoothing: bool, frames: int = 90, tier: str = "auto") -> dict:
    """Run the still demo; skip the first second (fade-in, filter warm-up) and measure the rest."""
    config = PipelineConfig(smoothing=SmoothingConfig(enabled=smoothing), temporal_strength=None if smoothing else 0.0)
    style = load_style(bundle, tier, "onnx") if bundle is not None else None
    pipe = Pipeline(MeshFaceTracker(max_faces=1), style, config)
    source = DemoSource(DemoConfig(frames=frames, still=True, noise_sigma=2.0))
    inputs, outputs, sims, raws = [], [], [], []
    while (frame := source.read()) is not None:
        result = pipe.process(frame)
        if frame.index < 30 or not result.faces:
            continue
        inputs.append(frame.image)
        outputs.append(result.image)
        sims.append(result.faces[0].smoothed)
        raws.append(result.faces[0].raw)
    pipe.close()
    if len(outputs) < 10:
        raise RuntimeError("the face was not tracked on the still demo")
    crop = style.bundle.manifest.align.crop_size if style else 256
    warped = cv2.warpAffine(feather_mask(crop, 0.1), sims[0].to_image_matrix(crop), inputs[0].shape[1::-1])
    mask = warped > 0.5
    return {
        "smoothing": smoothing,
        "frames": len(outputs),
        "flicker_amplification": round(flicker_amplification(inputs, outputs, mask), 4),
        "input_change": round(
            float(np.mean([np.abs(b.astype(int) - a.astype(int))[mask].mean() for a, b in zip(inputs, inputs[1:])])), 3
        ),
        "jitter_px": {k: round(v, 4) for k, v in transform_jitter(sims).items()},
        "raw_jitter_px": {k: round(v, 4) for k, v in transform_jitter(raws).items()},
    }


def main(argv: list[str]) -> int:
    from engine.session import resolve_style

    parser = argparse.ArgumentParser(prog="bench temporal")
    parser.add_argument("--style", default="auto")
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args(argv)
    bundle = resolve_style(args.style)
    out = {
        "style": bundle.id if bundle else None,
        "on": measure_temporal(bundle, True, args.frames),
        "off": measure_temporal(bundle, False, args.frames),
    }
    print(json.dumps(out, indent=1))
    return 0
