"""Temporal stability of a style on the still demo (σ=2 sensor noise): flicker amplification and jitter.

The benchmarks report it, and export calibrates each style's default smoothing strength with it: a
line-art style flickers far more than a smooth-shaded one at the same strength (measured: sketch 0.97
against cute 0.30 at 0.5).
"""

from __future__ import annotations

import cv2
import numpy as np

from engine.align import SmoothingConfig
from engine.blend import feather_mask
from engine.bundle import Bundle
from engine.metrics import flicker_amplification, transform_jitter
from engine.pipeline import Pipeline, PipelineConfig, load_style
from engine.sources import DemoConfig, DemoSource
from engine.tracking import MESH_EVERY, MeshFaceTracker

FLICKER_TARGET = 0.35  # flicker amplification a shipped style keeps to with its default smoothing
STRENGTHS = (0.5, 0.6, 0.7, 0.8, 0.9)  # tried in turn by calibrate_temporal


def measure_temporal(
    bundle: Bundle | None,
    smoothing: bool,
    frames: int = 90,
    tier: str = "auto",
    strength: float | None = None,
    mesh_every: int = MESH_EVERY,
) -> dict:
    """Run the still demo; skip the first second (fade-in, filter warm-up) and measure the rest.

    ``strength``: the temporal smoothing strength (default: the bundle's own); ``smoothing=False`` turns
    both the temporal and the alignment smoothing off. ``mesh_every``: see :class:`MeshFaceTracker`.
    """
    temporal = strength if smoothing else 0.0
    config = PipelineConfig(smoothing=SmoothingConfig(enabled=smoothing), temporal_strength=temporal)
    style = load_style(bundle, tier, "onnx") if bundle is not None else None
    pipe = Pipeline(MeshFaceTracker(max_faces=1, mesh_every=mesh_every), style, config)
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


def calibrate_temporal(bundle: Bundle, tier: str, frames: int = 90) -> tuple[float, dict[float, float]]:
    """The weakest of :data:`STRENGTHS` whose flicker amplification is within :data:`FLICKER_TARGET`
    (the strongest when none is), and the flicker measured at each strength tried.

    Weaker is better where it suffices: the smoother is motion-adaptive, but a strong one still lags
    slow expression changes.
    """
    tried: dict[float, float] = {}
    for strength in STRENGTHS:
        tried[strength] = measure_temporal(bundle, True, frames, tier, strength)["flicker_amplification"]
        if tried[strength] <= FLICKER_TARGET:
            return strength, tried
    return STRENGTHS[-1], tried
