"""``train graft-head-mask``: make an installed style blend through a trained head mask.

Each tier's ONNX graph gets the head mask's graph beside it, reading the same input, and its output's alpha
channel becomes ``min(alpha, head mask)`` (:class:`training.student.head_mask.HeadMasked`); colour is the
tier's own, node for node. The MNN file is converted again from the new graph. Both are held to the parity
checks of export, with the tier's previous ONNX graph plus the head mask in torch as the reference, so a
style whose training runs are gone (every style shipped in ``models/``) gains the head mask too.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from engine.bundle import MANIFEST, IOSpec, load_bundle
from training.errors import TrainingError
from training.modules import count_params
from training.student.export import export_onnx, probe_inputs
from training.student.head_mask import HEAD_MASK_LINE, HeadMasked, head_mask_record, load_head_mask
from training.student.networks import count_macs, read_onnx
from training.student.rewrite import OnnxFunction, add_rewrite_arguments, input_size, parity_photos, rewrite_tiers

log = logging.getLogger(__name__)


def graft_onnx(tier, head):
    """The tier's ONNX model with its output's alpha channel replaced by ``min(alpha, head mask)``: both
    graphs read the same input."""
    import onnx
    from onnx import compose, helper, numpy_helper

    versions = [next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) for m in (tier, head)]
    if versions[0] != versions[1]:
        raise TrainingError(f"the tier's graph is at opset {versions[0]}, the head mask's at {versions[1]}")
    head = compose.add_prefix(head, "head_mask/", rename_inputs=False)
    (out,) = tier.graph.output
    (head_out,) = head.graph.output
    student_out = "head_mask/student_output"
    nodes = []
    for node in tier.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.output[:] = [student_out if o == out.name else o for o in node.output]
        nodes.append(copy)
    split = numpy_helper.from_array(np.array([3, 1], np.int64), "head_mask/split")
    nodes += list(head.graph.node) + [
        helper.make_node("Split", [student_out, split.name], ["head_mask/rgb", "head_mask/alpha"], axis=1),
        helper.make_node("Min", ["head_mask/alpha", head_out.name], ["head_mask/bounded"]),
        helper.make_node("Concat", ["head_mask/rgb", "head_mask/bounded"], [out.name], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        tier.graph.name,
        list(tier.graph.input),
        [out],
        list(tier.graph.initializer) + list(head.graph.initializer) + [split],
    )
    model = helper.make_model(graph, opset_imports=list(tier.opset_import), ir_version=tier.ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def head_mask_graph(head: nn.Module, size: int):
    """The head mask as an ONNX model, exported like a tier (through a temporary file)."""
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "head_mask.onnx"
        export_onnx(head, path, size)
        return onnx.load(str(path))


def grafted_head_mask(folder: Path) -> dict | None:
    """The manifest's record of the head mask a style already blends through (None when it has none); the
    style is validated first (a BundleError when it is damaged)."""
    return load_bundle(folder).manifest.metrics.get("head_mask")


def graft_bundle(folder: Path, head_run: Path, photos: list[np.ndarray] | None = None) -> None:
    """Rewrite each tier of the installed style at ``folder`` (ONNX and MNN) to blend through
    ``min(alpha, head mask)`` and record it in the manifest and model card (:func:`rewrite_tiers`: a failure
    leaves the style as it was)."""
    import onnx

    folder, head_run = Path(folder), Path(head_run)
    bundle = load_bundle(folder)
    if not bundle.manifest.io.alpha:
        raise TrainingError(
            f"{folder}: the style predicts no alpha; only a learned alpha can be bounded by a head mask"
        )
    if grafted := grafted_head_mask(folder):
        raise TrainingError(f"{folder}: already blends through a head mask (run {grafted.get('run')})")
    head, record = load_head_mask(head_run)
    size = input_size(folder, bundle)
    head_graph = head_mask_graph(head, size)
    head_macs, head_params = count_macs(head, size) / 1e9, count_params(head)

    def graft(tier: dict, old: Path, new: Path) -> nn.Module:
        onnx.save(graft_onnx(read_onnx(old), head_graph), str(new))
        tier["gmacs"] = round(tier["gmacs"] + head_macs, 4)
        tier["params"] += head_params
        return HeadMasked(OnnxFunction(old), head)

    document = json.loads((folder / MANIFEST).read_text())
    document.setdefault("metrics", {})["head_mask"] = head_mask_record(head_run, head, record, size)
    document["model_card"] = document.get("model_card", "") + "\n" + HEAD_MASK_LINE
    rewrite_tiers(folder, document, graft, probe_inputs(size, photos), IOSpec(alpha=True))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_rewrite_arguments(parser)
    parser.add_argument("--head-mask", type=Path, required=True, help="a train head-mask run (or its model file)")


def run(args: argparse.Namespace) -> int:
    photos = parity_photos(args)
    for folder in args.bundle:
        if grafted := grafted_head_mask(folder):  # a rerun after a later bundle failed goes on from there
            log.warning("%s already blends through the head mask of %s: left as it is", folder, grafted.get("run"))
            continue
        graft_bundle(folder, args.head_mask, photos)
        log.info("%s now blends through the head mask of %s", folder, args.head_mask)
    return 0
