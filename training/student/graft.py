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
import torch
from torch import nn

from engine.bundle import MANIFEST, IOSpec, load_bundle, sha256_file
from training.errors import TrainingError
from training.modules import count_params
from training.student.export import convert_with_parity, export_onnx, onnx_parity, probe_inputs
from training.student.head_mask import HEAD_MASK_LINE, HeadMasked, head_mask_record, load_head_mask
from training.student.networks import count_macs

log = logging.getLogger(__name__)


def graft_onnx(tier, head):
    """The tier's ONNX model with its output's alpha channel replaced by ``min(alpha, head mask)``: both
    graphs read the same input."""
    import onnx
    from onnx import compose, helper, numpy_helper

    versions = [m.opset_import[0].version for m in (tier, head)]
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


class OnnxFunction(nn.Module):
    """An ONNX file as a torch-callable reference (onnxruntime, 1 thread)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: x.numpy()})[0])


def head_mask_graph(head: nn.Module, size: int):
    """The head mask as an ONNX model, exported like a tier (through a temporary file)."""
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "head_mask.onnx"
        export_onnx(head, path, size)
        return onnx.load(str(path))


def graft_bundle(folder: Path, head_run: Path, photos: list[np.ndarray] | None = None) -> None:
    """Rewrite each tier of the installed style at ``folder`` (ONNX and MNN) to blend through
    ``min(alpha, head mask)`` and record it in the manifest. Every tier's new files are written beside the
    old ones and checked first; only when all have passed do they replace the old files, followed by the
    manifest, so a failure leaves the style as it was."""
    import onnx

    folder, head_run = Path(folder), Path(head_run)
    bundle = load_bundle(folder)
    if not bundle.manifest.io.alpha:
        raise TrainingError(
            f"{folder}: the style predicts no alpha; only a learned alpha can be bounded by a head mask"
        )
    document = json.loads((folder / MANIFEST).read_text())
    metrics = document.setdefault("metrics", {})
    if "head_mask" in metrics:
        raise TrainingError(f"{folder}: already blends through a head mask (run {metrics['head_mask'].get('run')})")
    head, record = load_head_mask(head_run)
    size = bundle.manifest.tiers[0].input_size
    head_graph = head_mask_graph(head, size)
    probes, io_spec = probe_inputs(size, photos), IOSpec(alpha=True)
    head_macs, head_params = count_macs(head, size) / 1e9, count_params(head)
    parity = metrics.setdefault("export_parity", {})
    moves: list[tuple[Path, Path]] = []  # (new file, the file it replaces)
    try:
        for tier in document["tiers"]:
            files = {f["runtime"]: f for f in tier["files"]}
            onnx_path, mnn_path = folder / files["onnx"]["file"], folder / files["mnn"]["file"]
            new_onnx, new_mnn = onnx_path.with_suffix(".grafted.onnx"), mnn_path.with_suffix(".grafted.mnn")
            moves += [(new_onnx, onnx_path), (new_mnn, mnn_path)]
            reference = HeadMasked(OnnxFunction(onnx_path), head).eval()
            onnx.save(graft_onnx(onnx.load(str(onnx_path)), head_graph), str(new_onnx))
            onnx_err = onnx_parity(new_onnx, reference, probes, io_spec)
            fp32 = parity.get(tier["id"], {}).get("mnn_weights") == "fp32"
            mnn_err, weights, fp16_err = convert_with_parity(new_onnx, new_mnn, reference, probes, io_spec, fp32)
            files["onnx"]["sha256"], files["mnn"]["sha256"] = sha256_file(new_onnx), sha256_file(new_mnn)
            tier["gmacs"] = round(tier["gmacs"] + head_macs, 4)
            tier["params"] += head_params
            parity[tier["id"]] = {
                "onnx_max_abs": onnx_err,
                "mnn_max_abs": mnn_err,
                "mnn_weights": weights,
                "mnn_fp16_max_abs": fp16_err,
            }
            log.info(
                "tier %s: head mask grafted; ONNX parity %.1e, MNN (%s) %.1e", tier["id"], onnx_err, weights, mnn_err
            )
    except BaseException:
        for new, _ in moves:
            new.unlink(missing_ok=True)
        raise
    for new, old in moves:
        new.replace(old)
    metrics["head_mask"] = head_mask_record(head_run, head, record, size)
    document["model_card"] = document.get("model_card", "") + "\n" + HEAD_MASK_LINE
    (folder / MANIFEST).write_text(json.dumps(document, indent=2, default=float))
    load_bundle(folder)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, nargs="+", required=True, help="installed styles, e.g. models/anime")
    parser.add_argument("--head-mask", type=Path, required=True, help="a train head-mask run (or its model file)")
    parser.add_argument("--pairs", type=Path, help="pairs folder: two held-out photos join the parity probes")


def run(args: argparse.Namespace) -> int:
    from training.pairs import split_pairs

    torch.set_num_threads(1)
    photos = [p.photo for p in split_pairs(args.pairs)][:2] if args.pairs else None
    for folder in args.bundle:
        graft_bundle(folder, args.head_mask, photos)
        log.info("%s now blends through the head mask of %s", folder, args.head_mask)
    return 0
