"""``train reexport``: export an installed style's tiers again with the current exporter.

The exporter's graph for a student changes when a faster arrangement of the same function is found
(:class:`training.student.networks.InferenceStudent`, :class:`training.student.sharpen.EdgeSharpen`).
Styles whose training runs are gone (every style shipped in ``models/``) get it this way: each tier's
network is rebuilt from its ONNX file (:func:`training.student.networks.student_from_onnx`), given back
the sharpening layer its manifest records and the head mask it blends through, and exported again. The
new files are held to the old ONNX file itself (export's parity bounds), so the style computes what it
computed before.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from torch import nn

from engine.bundle import MANIFEST, IOSpec, load_bundle
from training.errors import TrainingError
from training.runs import git_commit
from training.student.export import export_onnx, probe_inputs
from training.student.head_mask import HeadMasked, load_head_mask
from training.student.networks import TIERS, InferenceStudent, student_from_onnx
from training.student.rewrite import OnnxFunction, add_rewrite_arguments, input_size, parity_photos, rewrite_tiers
from training.student.sharpen import SharpenSettings, sharpened

log = logging.getLogger(__name__)


def reexport_bundle(folder: Path, head_run: Path | None = None, photos: list[np.ndarray] | None = None) -> None:
    """Export every tier of the installed style at ``folder`` again (ONNX and MNN), computing the same
    function as its current files. ``head_run``: the head mask the style blends through, when it does."""
    folder = Path(folder)
    bundle = load_bundle(folder)
    document = json.loads((folder / MANIFEST).read_text())
    metrics = document.setdefault("metrics", {})
    grafted = metrics.get("head_mask")
    if grafted and head_run is None:
        raise TrainingError(f"{folder}: blends through a head mask (run {grafted.get('run')}): name it, --head-mask")
    if head_run is not None and not grafted:
        raise TrainingError(f"{folder}: blends through no head mask (train graft-head-mask adds one)")
    head = load_head_mask(head_run)[0] if head_run is not None else None
    size = input_size(folder, bundle)
    io_spec = IOSpec(alpha=bundle.manifest.io.alpha)
    probes = probe_inputs(size, photos)

    def reexport(tier: dict, old: Path, new: Path) -> nn.Module:
        if tier["id"] not in TIERS:
            raise TrainingError(f"{folder}: tier '{tier['id']}' is not one of the student tiers {list(TIERS)}")
        spec = asdict(replace(TIERS[tier["id"]], alpha=io_spec.alpha))
        student = student_from_onnx(old, spec, probes)
        recorded = metrics.get("sharpen", {}).get(tier["id"])
        try:
            settings = (
                SharpenSettings(float(recorded["amount"]), float(recorded["sigma"]), float(recorded["threshold"]))
                if recorded and recorded["amount"] > 0
                else None
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainingError(
                f"{folder}: metrics.sharpen.{tier['id']} is not a sharpening record (amount, sigma, threshold):"
                f" {recorded}"
            ) from exc
        graph = sharpened(InferenceStudent(student), settings)
        export_onnx(HeadMasked(graph, head).eval() if head is not None else graph, new, size)
        return OnnxFunction(old)

    metrics["reexported"] = {"commit": git_commit(), "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    rewrite_tiers(folder, document, reexport, probes, io_spec)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_rewrite_arguments(parser)
    parser.add_argument("--head-mask", type=Path, help="the head-mask run the styles blend through, if they do")


def run(args: argparse.Namespace) -> int:
    photos = parity_photos(args)
    for folder in args.bundle:
        reexport_bundle(folder, args.head_mask, photos)
        log.info("%s exported again with the current exporter", folder)
    return 0
