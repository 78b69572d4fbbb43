"""Rewriting the tiers of an installed style whose training runs are gone (``train graft-head-mask``,
``train reexport``).

Each tier's new ONNX graph is held to a reference with export's parity checks, and its MNN file is
converted again from it. The new style is built and validated in a copy beside the installed one, which
then takes its place (:func:`training.runs.replace_folder`): a failure or an interruption at any point
leaves the style as it was.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.bundle import MANIFEST, Bundle, IOSpec, load_bundle, sha256_file
from training.errors import TrainingError
from training.runs import replace_folder
from training.student.export import convert_with_parity, onnx_parity, tiers_line

log = logging.getLogger(__name__)

# (the tier's manifest record, its current ONNX file, where the new one goes) -> the new graph's reference
TierRewrite = Callable[[dict, Path, Path], nn.Module]


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


def add_rewrite_arguments(parser: argparse.ArgumentParser) -> None:
    """The styles to rewrite, and where real photos for the parity probes come from."""
    parser.add_argument("--bundle", type=Path, nargs="+", required=True, help="installed styles, e.g. models/anime")
    parser.add_argument("--pairs", type=Path, help="pairs folder: two held-out photos join the parity probes")


def parity_photos(args: argparse.Namespace) -> list[np.ndarray] | None:
    """Two held-out photos of ``--pairs`` for the parity probes (None without it). It also sets torch to one
    thread for the rewrite, as both commands did before they shared this."""
    from training.pairs import split_pairs

    torch.set_num_threads(1)
    return [p.photo for p in split_pairs(args.pairs, 2)] if args.pairs else None


def input_size(folder: Path, bundle: Bundle) -> int:
    """The one input size of the style's tiers (a rewrite probes them, and a head mask fits, at one size)."""
    sizes = {t.input_size for t in bundle.manifest.tiers}
    if len(sizes) != 1:
        raise TrainingError(f"{folder}: its tiers take different input sizes {sorted(sizes)}")
    return sizes.pop()


def rewrite_tiers(folder: Path, document: dict, rewrite: TierRewrite, probes: torch.Tensor, io_spec: IOSpec) -> None:
    """Give every tier of the style at ``folder`` the ONNX graph ``rewrite`` writes and an MNN file converted
    from it, both within the parity bounds of export against the reference ``rewrite`` returns. ``document``
    is the manifest to install (the caller's additions included); each tier's sha256, parity record and the
    model card's tiers line are brought up to date in it."""
    folder = Path(folder).resolve()
    parity = document.setdefault("metrics", {}).setdefault("export_parity", {})
    staging = folder.with_name(f".{folder.name}.rewriting")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging)
    try:
        for tier in document["tiers"]:
            files = {f["runtime"]: f for f in tier["files"]}
            if set(files) != {"onnx", "mnn"}:
                raise TrainingError(f"{folder}: tier {tier['id']} has {sorted(files)} files, not ONNX and MNN")
            new_onnx, new_mnn = staging / files["onnx"]["file"], staging / files["mnn"]["file"]
            reference = rewrite(tier, folder / files["onnx"]["file"], new_onnx).eval()
            onnx_err = onnx_parity(new_onnx, reference, probes, io_spec)
            mnn_err, weights, fp16_err = convert_with_parity(new_onnx, new_mnn, reference, probes, io_spec)
            files["onnx"]["sha256"], files["mnn"]["sha256"] = sha256_file(new_onnx), sha256_file(new_mnn)
            parity[tier["id"]] = {
                "onnx_max_abs": onnx_err,
                "mnn_max_abs": mnn_err,
                "mnn_weights": weights,
                "mnn_fp16_max_abs": fp16_err,
            }
            log.info("tier %s rewritten: ONNX parity %.1e, MNN (%s) %.1e", tier["id"], onnx_err, weights, mnn_err)
        document["model_card"] = "\n".join(
            tiers_line((t["id"], t["gmacs"], t["params"]) for t in document["tiers"])
            if line.startswith("Tiers: ")
            else line
            for line in document.get("model_card", "").split("\n")
        )
        (staging / MANIFEST).write_text(json.dumps(document, indent=2, default=float))
        load_bundle(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_folder(folder, staging)
