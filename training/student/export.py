"""``train export``: student runs -> ONNX + MNN files -> a validated model bundle.

Per tier (from the run's EMA weights; with training pairs, followed by the calibrated sharpening layer of
:mod:`training.student.sharpen`; rearranged for CPU runtimes by
:class:`training.student.networks.InferenceStudent`, the parity checks below holding it to the student):

1. ONNX opset 17, static (1, 3, S, S), input "input", output "output", RGB in [-1, 1] — the
   :class:`engine.bundle.IOSpec` defaults; ``onnx.checker``; onnxruntime parity with torch ≤ 1e-3.
2. MNN with fp16 weights through :func:`engine.backends.convert_onnx_to_mnn` (the only allowed path);
   parity with torch within one grey level (2/255 in [-1, 1]) through the engine's own
   :class:`engine.backends.MnnStylizer`. Trained students (BatchNorm folded into the convolutions) can
   miss that with fp16 weights (measured up to 2.5e-2, about 3 grey levels); such a tier falls back to
   fp32 weights (twice the file, same speed) and the manifest records the precision and the fp16 error.
   Even fp32 MNN differs by up to 3e-3 where a strong sharpening layer amplifies its rounding.

Then the bundle writer measures each tier on held-out pairs (see :mod:`training.evaluate`), renders a
before/after preview, builds the manifest with :mod:`engine.bundle` (schema v1) including the metrics
and the model card, and re-reads the result with :func:`engine.bundle.load_bundle`.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.blend import SKIN_TONE_LIMIT
from engine.bundle import (
    SCHEMA_VERSION,
    BlendDefaults,
    Bundle,
    IOSpec,
    Manifest,
    Tier,
    TierFile,
    load_bundle,
    manifest_to_dict,
    sha256_file,
)
from training.errors import TrainingError
from training.images import preview_grid, to_tensor
from training.modules import count_params
from training.pairs import Pair, split_pairs
from training.runs import git_commit, options_hash
from training.student.head_mask import HEAD_MASK_LINE, HeadMasked, head_mask_record, load_head_mask
from training.student.networks import TIERS, InferenceStudent, count_macs, load_student
from training.student.sharpen import CALIBRATION_PAIRS, calibrate, sharpened

log = logging.getLogger(__name__)

ONNX_TOLERANCE = 1e-3
MNN_TOLERANCE = 2 / 255  # one grey level of the [-1, 1] range
OPSET = 17

DEFAULT_LICENSE = (
    "Research and non-commercial use only: trained on face photos and videos licensed for research /"
    " non-commercial use (see the model card)."
)


@dataclass(frozen=True)
class ExportedTier:
    id: str
    onnx: Path
    mnn: Path
    input_size: int
    gmacs: float
    params: int
    onnx_max_abs: float
    mnn_max_abs: float
    mnn_weights: str = "fp16"
    mnn_fp16_max_abs: float = 0.0
    sharpen: dict | None = None
    alpha: bool = False  # the graph's output has a 4th channel, the learned blend mask

    def parity(self) -> dict:
        return {
            "onnx_max_abs": self.onnx_max_abs,
            "mnn_max_abs": self.mnn_max_abs,
            "mnn_weights": self.mnn_weights,
            "mnn_fp16_max_abs": self.mnn_fp16_max_abs,
        }


def export_onnx(net: torch.nn.Module, path: Path, size: int) -> None:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            torch.zeros(1, 3, size, size),
            str(path),
            input_names=["input"],
            output_names=["output"],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)


def probe_inputs(size: int, photos: list[np.ndarray] | None = None) -> torch.Tensor:
    """Parity probes (N, 3, size, size): uniform noise plus real photos when given."""
    probes = [torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1]
    for photo in (photos or [])[:2]:
        probes.append(to_tensor(cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)[None], "bgr"))
    return torch.cat(probes)


def max_parity_error(
    runtime: str, path: Path, reference: torch.nn.Module, probes: torch.Tensor, io_spec: IOSpec = IOSpec()
) -> float:
    """Largest |runtime output - torch output| over the probes, through the engine's own loaders."""
    from engine.backends import open_stylizer

    stylizer = open_stylizer(path, runtime, threads=1, io_spec=io_spec)
    try:
        worst = 0.0
        with torch.no_grad():
            for x in probes:
                ref = reference(x[None]).numpy()
                out = stylizer(np.ascontiguousarray(x[None].numpy()))
                worst = max(worst, float(np.abs(out - ref).max()))
    finally:
        stylizer.close()
    return worst


def onnx_parity(path: Path, reference: torch.nn.Module, probes: torch.Tensor, io_spec: IOSpec) -> float:
    """:func:`max_parity_error` of onnxruntime against ``reference``; raises beyond :data:`ONNX_TOLERANCE`."""
    error = max_parity_error("onnx", path, reference, probes, io_spec)
    if error > ONNX_TOLERANCE:
        raise TrainingError(f"{path}: onnxruntime differs from the reference by {error:.2e} > {ONNX_TOLERANCE}")
    return error


def convert_with_parity(
    onnx_path: Path,
    mnn_path: Path,
    reference: torch.nn.Module,
    probes: torch.Tensor,
    io_spec: IOSpec,
) -> tuple[float, str, float]:
    """Convert to MNN with fp16 weights, falling back to fp32 weights when fp16 misses :data:`MNN_TOLERANCE`
    against ``reference``; (error, weights, fp16 error). Raises when fp32 misses too."""
    from engine.backends import convert_onnx_to_mnn

    convert_onnx_to_mnn(onnx_path, mnn_path, fp16=True)
    fp16_err = max_parity_error("mnn", mnn_path, reference, probes, io_spec)
    if fp16_err <= MNN_TOLERANCE:
        return fp16_err, "fp16", fp16_err
    log.warning("%s: MNN fp16 weights differ by %.1e > %.0e; using fp32 weights", mnn_path, fp16_err, MNN_TOLERANCE)
    convert_onnx_to_mnn(onnx_path, mnn_path, fp16=False)
    mnn_err = max_parity_error("mnn", mnn_path, reference, probes, io_spec)
    if mnn_err > MNN_TOLERANCE:
        raise TrainingError(
            f"{mnn_path}: MNN (fp32 weights) differs from the reference by {mnn_err:.2e} > {MNN_TOLERANCE}"
        )
    return mnn_err, "fp32", fp16_err


def export_tier(
    run: Path,
    out_dir: Path,
    size: int = 256,
    photos: list[np.ndarray] | None = None,
    calibration: list[Pair] | None = None,
    head_mask: torch.nn.Module | None = None,
) -> ExportedTier:
    """Export one run's EMA student to ``out_dir/<tier>.onnx`` and ``.mnn``, checking both parities.

    With ``calibration`` (training pairs), the graph ends in the edge-gated sharpening layer of
    :mod:`training.student.sharpen`, its amount calibrated on those pairs. With a ``head_mask``
    (:mod:`training.student.head_mask`), the student's alpha is bounded by it.
    """
    student, record = load_student(run)
    tier_id = record.get("tier", "student")
    io_spec = IOSpec(alpha=bool(record["init_kwargs"].get("alpha", False)))
    settings = sharpen = None
    if calibration:
        settings, sharpen = calibrate(student, [p.photo for p in calibration], [p.stylized for p in calibration])
        log.info(
            "tier %s: sharpening amount %.2f (training pairs: sharpness %.2f -> %.2f of the teacher's)",
            tier_id,
            sharpen["amount"],
            sharpen["sharpness_vs_teacher_before"],
            sharpen["sharpness_vs_teacher_after"],
        )
    net = sharpened(student, settings)  # the reference the exported files are held to
    graph = sharpened(InferenceStudent(student), settings)
    if head_mask is not None:
        if not io_spec.alpha:
            raise TrainingError(f"{run}: the student predicts no alpha for the head mask to bound")
        net, graph = HeadMasked(net, head_mask).eval(), HeadMasked(graph, head_mask).eval()
    onnx_path, mnn_path = out_dir / f"{tier_id}.onnx", out_dir / f"{tier_id}.mnn"
    export_onnx(graph, onnx_path, size)
    probes = probe_inputs(size, photos)
    onnx_err = onnx_parity(onnx_path, net, probes, io_spec)
    mnn_err, weights, fp16_err = convert_with_parity(onnx_path, mnn_path, net, probes, io_spec)
    log.info("tier %s: ONNX parity %.1e, MNN (%s) parity %.1e", tier_id, onnx_err, weights, mnn_err)
    return ExportedTier(
        tier_id,
        onnx_path,
        mnn_path,
        size,
        count_macs(student, size) / 1e9 + (count_macs(head_mask, size) / 1e9 if head_mask is not None else 0.0),
        count_params(student) + (count_params(head_mask) if head_mask is not None else 0),
        onnx_err,
        mnn_err,
        weights,
        fp16_err,
        sharpen,
        io_spec.alpha,
    )


def public_domain_face(size: int = 256) -> np.ndarray | None:
    """skimage's astronaut (a public-domain NASA portrait) aligned like the app aligns faces.

    Previews show this face only: the training and evaluation faces are research-only data that must
    not travel inside a bundle. None when the face tracker is unavailable.
    """
    from engine.align import similarity_from_landmarks, warp_crop
    from engine.errors import BackendUnavailable
    from engine.sources import astronaut
    from engine.tracking import landmarks_from_image

    image = astronaut()
    try:
        landmarks = landmarks_from_image(image)
    except BackendUnavailable as exc:
        log.warning("no preview: %s", exc)
        return None
    return None if landmarks is None else warp_crop(image, similarity_from_landmarks(landmarks), size)


def before_after(tiers: list[ExportedTier], thumb: int = 192) -> np.ndarray | None:
    """The public-domain face, then its stylization by each tier (onnxruntime), side by side."""
    from training.evaluate import exported_tier_stylizer

    face = public_domain_face()
    if face is None:
        return None
    outputs = [exported_tier_stylizer(t)(face) for t in tiers]
    return preview_grid([face, *outputs], [], thumb)


def teacher_lines(record: dict) -> list[str]:
    """What a model card says of a pretrained teacher: where it came from and what its licence allows."""
    source = record.get("source", {})
    origin = f"{source.get('repo')}/{source.get('path')} at {source.get('commit')}" if source else "unknown"
    return [
        f"Teacher: {record.get('name', record['id'])} ('{record['id']}', {record.get('file')}, sha256"
        f" {str(record.get('sha256'))[:16]}…), from {origin}.",
        f"Teacher licence: {record.get('license', 'unknown')}"
        f" commercial_use: {str(record.get('commercial_use')).lower()}. This model is distilled from it and inherits"
        " those limits.",
        "",
    ]


SKIN_TONE_LINE = (
    "Skin tone: trained on pairs given back the photo's mean skin colour; at run time the engine also bounds"
    " how far the face's lightness may move to {limit:g} L* (blend.skin_tone_limit; 0 turns it off)."
)


def tiers_line(tiers: Iterable[tuple[str, float, int]]) -> str:
    """The model card's line of (id, GMACs, params) per tier."""
    return "Tiers: " + "; ".join(f"{tier_id} {gmacs:.2f} GMAC, {params} params" for tier_id, gmacs, params in tiers)


def model_card(
    style_id: str,
    tiers: list[ExportedTier],
    metrics: dict,
    data: str,
    teacher: str,
    teacher_record: dict | None = None,
    skin_tone_limit: float = 0.0,
) -> str:
    lines = [
        f"Style '{style_id}': real-time students distilled from the {teacher} teacher.",
        "",
        *(teacher_lines(teacher_record) if teacher_record else []),
        f"Data: {data}. These photos and videos come from public research repositories; most are licensed for"
        " research and non-commercial use only (see the data's provenance.csv). The people shown keep their"
        " rights. This model is for research and non-commercial use only and must not be shipped commercially.",
        "",
        "Intended use: live stylization of aligned face crops (FFHQ template, 256²) in Stylecast.",
        "Limits: trained on a few hundred faces; unusual poses, heavy occlusion, very dark or very small faces"
        " degrade it. FID-EL0 uses EfficientNet-Lite0 features and is not comparable with Inception FID.",
        "",
        tiers_line((t.id, t.gmacs, t.params) for t in tiers),
    ]
    for tier_id, m in metrics.get("tiers", {}).items():
        lines.append(
            f"{tier_id}: identity {m['identity']:.3f}, sharpness {m['sharpness']:.2f}"
            f" (teacher {metrics['teacher']['sharpness']:.2f}), FID-EL0 to teacher {m['fid_el0_to_teacher']:.2f}"
        )
    if tiers and tiers[0].alpha:
        lines.append(
            "Each tier also predicts a blend alpha (where its output replaces the photo), trained against skin and"
            " hair masks and the face outline; the engine blends with it, smoothed over time."
        )
    if "head_mask" in metrics:
        lines.append(HEAD_MASK_LINE)
    if skin_tone_limit > 0:
        lines.append(SKIN_TONE_LINE.format(limit=skin_tone_limit))
    for t in tiers:
        if t.sharpen and t.sharpen["amount"] > 0:
            lines.append(
                f"{t.id}: ends in an edge-gated sharpening layer (amount {t.sharpen['amount']:.2f}, σ"
                f" {t.sharpen['sigma']} px) calibrated on {t.sharpen['calibrated_on']} to the teacher's sharpness."
            )
    return "\n".join(lines)


def write_bundle(
    out: Path,
    style_id: str,
    name: str,
    tiers: list[ExportedTier],
    *,
    description: str = "",
    license: str = DEFAULT_LICENSE,
    metrics: dict | None = None,
    card: str = "",
    preview: np.ndarray | None = None,
    created: dict | None = None,
    blend: BlendDefaults = BlendDefaults(),
) -> Bundle:
    """Write ``out/manifest.json`` (+ preview.png) for exported tiers and validate it with the engine."""
    order = list(TIERS)
    tiers = sorted(tiers, key=lambda t: order.index(t.id) if t.id in order else len(order))
    if len({t.id for t in tiers}) != len(tiers):
        raise TrainingError(f"two runs export the same tier: {[t.id for t in tiers]}")
    if len({t.alpha for t in tiers}) != 1:
        raise TrainingError(f"tiers disagree on the learned alpha: {[(t.id, t.alpha) for t in tiers]}")
    preview_name = None
    if preview is not None:
        preview_name = "preview.png"
        cv2.imwrite(str(out / preview_name), preview)
    manifest = Manifest(
        schema=SCHEMA_VERSION,
        id=style_id,
        name=name,
        version="1",
        description=description,
        license=license,
        io=IOSpec(alpha=tiers[0].alpha),
        tiers=tuple(
            Tier(
                t.id,
                t.input_size,
                round(t.gmacs, 4),
                t.params,
                tuple(
                    TierFile(runtime, path.relative_to(out).as_posix(), sha256_file(path))
                    for runtime, path in (("onnx", t.onnx), ("mnn", t.mnn))
                ),
            )
            for t in tiers
        ),
        blend=blend,
        preview=preview_name,
        created=created or {},
        metrics=metrics or {},
        model_card=card,
    )
    (out / "manifest.json").write_text(json.dumps(manifest_to_dict(manifest), indent=2, default=float))
    return load_bundle(out)


def pairs_teacher(pairs: Path | None) -> dict | None:
    """The record a ``train pairs`` run left of the teacher that made ``pairs`` (None when there is none)."""
    from training.pairs import SOURCE_FILE

    path = Path(pairs) / SOURCE_FILE if pairs else None
    return json.loads(path.read_text()) if path and path.exists() else None


def export_bundle(
    runs: list[Path],
    out: Path,
    style_id: str = "ink",
    name: str | None = None,
    pairs: Path | None = None,
    description: str = "",
    data: str = "",
    size: int = 256,
    sharpen: bool = True,
    calibration_pairs: int | None = 128,
    temporal: float | None = None,
    head_mask: Path | None = None,
) -> Bundle:
    """Export runs (one per tier) into a bundle at ``out``, with metrics measured on held-out pairs.

    With ``pairs`` and ``sharpen``, each tier gets the sharpening layer calibrated on training pairs.
    ``temporal``: the style's default smoothing strength; None calibrates it on the still demo with the
    cheapest tier (:func:`engine.stability.calibrate_temporal`).
    """
    from training.evaluate import evaluate_bundle_tiers

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    held = split_pairs(pairs) if pairs else None
    photos = [p.photo for p in held] if held else None
    # evenly spaced training pairs: 128 calibrate as well as all 524 of ink (0.90 either way, docs/ink.md), 4x faster
    calibration = split_pairs(pairs, calibration_pairs, split="train") if pairs and sharpen else None
    head = load_head_mask(head_mask) if head_mask else None
    tiers = [export_tier(Path(r), out, size, photos, calibration, head[0] if head else None) for r in runs]
    metrics: dict = {}
    if held:
        metrics = evaluate_bundle_tiers(tiers, held)
        metrics["evaluated_on"] = "onnxruntime, held-out pairs"
    preview = before_after(tiers)
    metrics["export_parity"] = {t.id: t.parity() for t in tiers}
    if head:
        metrics["head_mask"] = head_mask_record(Path(head_mask), *head, size)
    if calibration:
        metrics["sharpen"] = {t.id: t.sharpen for t in tiers}
    options = [json.loads((Path(r) / "options.json").read_text()) for r in runs if (Path(r) / "options.json").exists()]
    created = {
        "commit": git_commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options_hash": options_hash({"runs": [o.get("options_hash") for o in options]}),
        "runs": [Path(r).name for r in runs],
        "data": data or (str(Path(pairs).name) if pairs else "unknown"),
    }
    record = pairs_teacher(pairs)
    teacher = record["teacher"] if record and "license" in record.get("teacher", {}) else None
    if teacher:
        created["teacher"] = teacher
        created["skin_tone"] = record.get("skin_tone")
    # a style trained to keep the photo's skin tone also guards it at run time (engine.blend.SkinToneGuard)
    guard = BlendDefaults(skin_tone_limit=SKIN_TONE_LIMIT if created.get("skin_tone") == "keep" else 0.0)
    card = model_card(
        style_id,
        tiers,
        metrics,
        data or "the pairs folder " + str(created["data"]),
        teacher=teacher["name"] if teacher else style_id,
        teacher_record=teacher,
        skin_tone_limit=guard.skin_tone_limit,
    )
    license = DEFAULT_LICENSE
    if teacher:
        use = "allows commercial use" if teacher.get("commercial_use") else "forbids commercial use"
        license = (
            f"{DEFAULT_LICENSE} Distilled from the '{teacher['id']}' teacher, whose licence {use}: {teacher['license']}"
        )

    def write(blend: BlendDefaults) -> Bundle:
        display = name or (teacher["name"] if teacher else style_id.capitalize())
        return write_bundle(
            out,
            style_id,
            display,
            tiers,
            license=license,
            description=description or (f"Distilled from the teacher '{teacher['name']}'." if teacher else ""),
            metrics=metrics,
            card=card,
            preview=preview,
            created=created,
            blend=blend,
        )

    bundle = write(guard if temporal is None else replace(guard, temporal=temporal))
    if temporal is None:
        from engine.stability import calibrate_temporal

        cheapest = min(bundle.manifest.tiers, key=lambda t: t.gmacs).id
        strength, tried = calibrate_temporal(bundle, cheapest)
        metrics["temporal_calibration"] = {"tier": cheapest, "flicker_by_strength": tried, "chosen": strength}
        log.info("temporal smoothing %.2f (flicker amplification by strength: %s)", strength, tried)
        bundle = write(replace(guard, temporal=strength))
    log.info("bundle %s written to %s (%s)", style_id, out, ", ".join(t.id for t in tiers))
    return bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="student run directories (one per tier)")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write, e.g. models/ink")
    parser.add_argument("--style-id", default="ink")
    parser.add_argument("--name", help="display name (default: the style id)")
    parser.add_argument("--description", default="")
    parser.add_argument("--pairs", type=Path, help="pairs folder: held-out pairs give metrics and the preview")
    parser.add_argument("--data", default="", help="what the students were trained on, for the model card")
    parser.add_argument("--size", type=int, default=256, help="static input side of the exported graphs")
    parser.add_argument(
        "--calibration-pairs",
        type=int,
        default=CALIBRATION_PAIRS,
        help=f"training pairs the sharpening is calibrated on (evenly spaced; at most {CALIBRATION_PAIRS})",
    )
    parser.add_argument(
        "--temporal",
        type=float,
        help="the style's default temporal smoothing 0..1 (default: calibrated on the still demo)",
    )
    parser.add_argument("--head-mask", type=Path, help="a train head-mask run: each tier's alpha is bounded by it")
    parser.add_argument(
        "--no-sharpen",
        dest="sharpen",
        action="store_false",
        help="leave out the edge-gated sharpening layer (by default calibrated on the training pairs of --pairs)",
    )


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    bundle = export_bundle(
        args.runs,
        args.out,
        args.style_id,
        args.name,
        args.pairs,
        args.description,
        args.data,
        args.size,
        args.sharpen,
        args.calibration_pairs or None,
        args.temporal,
        args.head_mask,
    )
    log.info("validated %s: %s", bundle.root, [t.id for t in bundle.manifest.tiers])
    return 0
