"""``python main.py eval``: measure stylizers on held-out pairs; JSON + Markdown + HTML report.

What is measured (definitions in :mod:`training.metrics`), on pairs of the "heldout" split:

* sharpness of the stylized outputs, beside the teacher's and the photos', with the 2×2 block ratio that
  tells real edges from block artefacts;
* SFace identity between each photo and its stylized output (and the teacher's, for reference);
* FID-EL0 / KID-EL0 and FID-VGG between the outputs and the teacher's outputs (distillation fidelity;
  FID-EL0 is not comparable with Inception FID, and small sets inflate it: compare at equal sizes).

Stylizers: the tiers of a bundle (the network alone, through the engine's own backends and its pre- and
post-processing, without the live path's colour matching, temporal smoothing and blend) or student runs
(their EMA weights in torch). ``bench styles`` measures styles through the whole live path.

    python main.py eval --bundle models/ink --pairs runs/ink_pairs --out out/eval_ink
    python main.py eval --runs runs/a runs/b --pairs runs/ink_pairs --out out/eval_ab
"""

from __future__ import annotations

import argparse
import html
import json
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from training import metrics
from training.errors import DatasetError
from training.images import preview_grid, to_tensor, to_uint8
from training.pairs import Pair, split_pairs
from training.student.networks import load_student

log = logging.getLogger(__name__)

Stylize = Callable[[np.ndarray], np.ndarray]  # (S, S, 3) uint8 BGR crop -> same


def reference_metrics(held: list[Pair]) -> dict:
    """Teacher and photo figures the stylizers are compared with."""
    photos, teacher = [p.photo for p in held], [p.stylized for p in held]
    return {
        "n": len(held),
        "teacher": {
            "sharpness": metrics.mean_sharpness(teacher),
            "block_ratio": metrics.mean_block_ratio(teacher),
            "identity": float(metrics.identity_similarity(photos, teacher).mean()),
        },
        "photos": {"sharpness": metrics.mean_sharpness(photos)},
    }


def output_metrics(
    held: list[Pair], outputs: list[np.ndarray], teacher_feats: dict[str, np.ndarray], keep: dict | None = None
) -> dict:
    photos = [p.photo for p in held]
    ident = metrics.identity_similarity(photos, outputs)
    el0, vgg = metrics.features(outputs, "el0"), metrics.features(outputs, "vgg")
    if keep is not None:
        keep["el0"] = el0
    return {
        "sharpness": metrics.mean_sharpness(outputs),
        "block_ratio": metrics.mean_block_ratio(outputs),
        "identity": float(ident.mean()),
        "identity_min": float(ident.min()),
        "fid_el0_to_teacher": metrics.fid(el0, teacher_feats["el0"]),
        "kid_el0_to_teacher": metrics.kid(el0, teacher_feats["el0"]),
        "fid_vgg_to_teacher": metrics.fid(vgg, teacher_feats["vgg"]),
        "l1_to_teacher": float(
            np.mean([np.abs(o.astype(np.float32) - p.stylized).mean() for o, p in zip(outputs, held)])
        ),
    }


def evaluate(
    stylizers: dict[str, Stylize], held: list[Pair], features: dict | None = None
) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """Metrics of every stylizer on the held-out pairs, plus their outputs (for grids).

    ``features``, when given, receives the EL0 features: ``{"teacher": ..., name: ...}``.
    """
    result = reference_metrics(held)
    teacher = [p.stylized for p in held]
    teacher_feats = {"el0": metrics.features(teacher, "el0"), "vgg": metrics.features(teacher, "vgg")}
    if features is not None:
        features["teacher"] = teacher_feats["el0"]
    outputs: dict[str, list[np.ndarray]] = {}
    result["tiers"] = {}
    for name, stylize in stylizers.items():
        outputs[name] = [stylize(p.photo) for p in held]
        keep: dict = {}
        result["tiers"][name] = output_metrics(held, outputs[name], teacher_feats, keep)
        if features is not None:
            features[name] = keep["el0"]
        result["tiers"][name]["sharpness_vs_teacher"] = (
            result["tiers"][name]["sharpness"] / result["teacher"]["sharpness"]
        )
        log.info("%s: %s", name, {k: round(v, 4) for k, v in result["tiers"][name].items()})
    return result, outputs


def exported_tier_stylizer(tier) -> Stylize:
    """A freshly exported tier (:class:`training.student.export.ExportedTier`) as a crop stylizer on onnxruntime."""
    from engine.backends import OnnxStylizer
    from engine.bundle import IOSpec

    session = OnnxStylizer(tier.onnx, threads=1, io_spec=IOSpec(alpha=tier.alpha))
    return array_stylizer(session, session.input_size)


def evaluate_bundle_tiers(tiers: list, held: list[Pair]) -> dict:
    """Metrics of freshly exported tiers on the held-out pairs."""
    return evaluate({t.id: exported_tier_stylizer(t) for t in tiers}, held)[0]


def array_stylizer(net: Callable[[np.ndarray], np.ndarray], size: int | None = None) -> Stylize:
    """Wrap a (1, 3, S, S) RGB [-1, 1] float function as a BGR uint8 crop stylizer (colour only: a 4th,
    alpha channel is left out).

    With ``size``, crops are resized to the network's static input and back (as the engine does).
    """

    def stylize(crop: np.ndarray) -> np.ndarray:
        side = crop.shape[0]
        if size and size != side:
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        x = to_tensor(crop[None], "bgr").numpy()
        out = to_uint8(torch.from_numpy(np.asarray(net(np.ascontiguousarray(x)))[:, :3]), "bgr")[0]
        return cv2.resize(out, (side, side), interpolation=cv2.INTER_LINEAR) if out.shape[0] != side else out

    return stylize


def bundle_stylizers(bundle_dir: Path, backend: str, threads: int) -> dict[str, Stylize]:
    from engine.backends import load_tier
    from engine.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    models = {t.id: load_tier(bundle, t, backend, threads) for t in bundle.manifest.tiers}
    return {tier_id: (lambda crop, m=m: m.stylize(crop)[:, :, :3]) for tier_id, m in models.items()}


def run_stylizers(runs: list[Path]) -> dict[str, Stylize]:
    out = {}
    for run in runs:
        net, _ = load_student(run)

        def forward(x: np.ndarray, net=net) -> np.ndarray:
            with torch.no_grad():
                return net(torch.from_numpy(x)).numpy()

        out[Path(run).name] = array_stylizer(forward)
    return out


# ----- the published loss ablation ------------------------------------------------------------

# Published table (sharpness = sum of Laplacian gradient magnitude, FID) for the four loss sets.
PUBLISHED_ABLATION = (
    ("pixel", "pixel loss", 3.44, 32.53),
    ("perceptual_gan", "+ perceptual + GAN", 6.03, 8.36),
    ("edge", "+ edge-promoting", 6.24, 8.09),
    ("augment", "+ augmentation", 6.57, 8.26),
)


def degrade_photo(photo: np.ndarray) -> np.ndarray:
    """A webcam-like version of a clean crop: Gaussian blur σ=1 then JPEG quality 40 (real encoder)."""
    blurred = cv2.GaussianBlur(photo, (0, 0), 1.0)
    _, enc = cv2.imencode(".jpg", blurred, [cv2.IMWRITE_JPEG_QUALITY, 40])
    return cv2.imdecode(enc, cv2.IMREAD_COLOR)


def bootstrap_fid_std(a: np.ndarray, b: np.ndarray, rounds: int = 100, seed: int = 0) -> float:
    """Std of FID over bootstrap resamples of the (paired) images: the noise of one FID figure."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, len(a), len(a))
        values.append(metrics.fid(a[idx], b[idx]))
    return float(np.std(values))


def ablation(runs: list[Path], held: list[Pair]) -> dict:
    """The four published rows, one run each (in table order), measured like the published table plus
    identity, a bootstrap noise estimate of FID-EL0, and FID-EL0 when the inputs are degraded webcam-like."""
    if len(runs) != len(PUBLISHED_ABLATION):
        raise DatasetError(f"the ablation needs {len(PUBLISHED_ABLATION)} runs in table order, got {len(runs)}")
    stylizers = dict(zip([row[0] for row in PUBLISHED_ABLATION], run_stylizers(runs).values()))
    feats: dict = {}
    result, outputs = evaluate(stylizers, held, feats)
    degraded = [Pair(p.key, degrade_photo(p.photo), p.stylized, p.split) for p in held]
    rows = []
    for (key, label, pub_sharp, pub_fid), run in zip(PUBLISHED_ABLATION, runs):
        m = result["tiers"][key]
        deg_out = [stylizers[key](p.photo) for p in degraded]
        rows.append(
            {
                "row": label,
                "run": str(run),
                "sharpness": m["sharpness"],
                "fid_el0_to_teacher": m["fid_el0_to_teacher"],
                "fid_el0_bootstrap_std": bootstrap_fid_std(feats[key], feats["teacher"]),
                "kid_el0_to_teacher": m["kid_el0_to_teacher"],
                "fid_vgg_to_teacher": m["fid_vgg_to_teacher"],
                "identity": m["identity"],
                "l1_to_teacher": m["l1_to_teacher"],
                "fid_el0_degraded_inputs": metrics.fid(metrics.features(deg_out, "el0"), feats["teacher"]),
                "sharpness_degraded_inputs": metrics.mean_sharpness(deg_out),
                "published_sharpness": pub_sharp,
                "published_fid": pub_fid,
            }
        )
    return {
        "n_heldout": len(held),
        "teacher": result["teacher"],
        "photos": result["photos"],
        "rows": rows,
        "outputs": outputs,
    }


def ablation_markdown(report: dict) -> str:
    lines = [
        "| row | sharpness | FID-EL0 → teacher (± bootstrap std) | KID-EL0 | FID-VGG | identity |"
        " FID-EL0, degraded inputs | published sharpness / FID |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['row']} | {r['sharpness']:.2f} | {r['fid_el0_to_teacher']:.1f} ± {r['fid_el0_bootstrap_std']:.1f} |"
            f" {r['kid_el0_to_teacher']:.4f} | {r['fid_vgg_to_teacher']:.1f} | {r['identity']:.3f} |"
            f" {r['fid_el0_degraded_inputs']:.1f} | {r['published_sharpness']:.2f} / {r['published_fid']:.2f} |"
        )
    t = report["teacher"]
    lines.append(f"| *teacher* | {t['sharpness']:.2f} | 0 | 0 | 0 | {t['identity']:.3f} | – | – |")
    return "\n".join(lines)


# ----- report ---------------------------------------------------------------------------------


def write_grid(path: Path, held: list[Pair], outputs: dict[str, list[np.ndarray]], count: int = 8) -> None:
    show = list(range(min(count, len(held))))
    grid = preview_grid(
        [held[i].photo for i in show],
        [[held[i].stylized for i in show]] + [[o[i] for i in show] for o in outputs.values()],
        128,
    )
    cv2.imwrite(str(path), grid)


def write_plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["tiers"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    panels = [
        ("sharpness", result["teacher"]["sharpness"], "sharpness (teacher dashed)"),
        ("identity", result["teacher"]["identity"], "SFace identity (teacher dashed)"),
        ("fid_el0_to_teacher", None, "FID-EL0 to teacher"),
    ]
    for ax, (key, ref, title) in zip(axes, panels):
        ax.bar(names, [result["tiers"][n][key] for n in names], color="#4a7")
        if ref is not None:
            ax.axhline(ref, color="k", linestyle="--")
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(result: dict) -> str:
    t = result["teacher"]
    lines = [
        "| stylizer | sharpness | ÷ teacher | 2×2 blocks | identity | FID-EL0 → teacher | KID-EL0 | FID-VGG | L1 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| teacher | {t['sharpness']:.2f} | 1.00 | {t['block_ratio']:.2f} | {t['identity']:.3f} | 0 | 0 | 0 | 0 |",
    ]
    for name, m in result["tiers"].items():
        lines.append(
            f"| {name} | {m['sharpness']:.2f} | {m['sharpness_vs_teacher']:.2f} | {m['block_ratio']:.2f} |"
            f" {m['identity']:.3f} |"
            f" {m['fid_el0_to_teacher']:.2f} | {m['kid_el0_to_teacher']:.4f} | {m['fid_vgg_to_teacher']:.2f} |"
            f" {m['l1_to_teacher']:.2f} |"
        )
    lines.append(f"\nPhotos' sharpness: {result['photos']['sharpness']:.2f}. {result['n']} held-out pairs.")
    lines.append("FID-EL0 uses EfficientNet-Lite0 features: not comparable with Inception FID.")
    return "\n".join(lines)


def write_report(out: Path, result: dict, held: list[Pair], outputs: dict[str, list[np.ndarray]], title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    write_grid(out / "grid.png", held, outputs)
    write_plot(out / "metrics.png", result)
    table = markdown_table(result)
    figures = "![before/after: photos, teacher, then each stylizer](grid.png)\n\n![metrics](metrics.png)\n"
    (out / "report.md").write_text(f"# {title}\n\n{table}\n\n{figures}")
    rows = f"<pre>{html.escape(table)}</pre>"
    (out / "report.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
        f"{rows}<p>Rows: photos, teacher, then {html.escape(', '.join(outputs))}.</p>"
        "<img src='grid.png'><br><img src='metrics.png'>"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stylecast eval", description=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--bundle", type=Path, help="bundle folder (e.g. models/ink)")
    what.add_argument("--runs", type=Path, nargs="+", help="student run directories")
    what.add_argument(
        "--ablation", type=Path, nargs=4, metavar="RUN", help="runs of the four published loss rows, in table order"
    )
    parser.add_argument("--pairs", type=Path, required=True, help="pairs folder with a held-out split")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--backend", default="onnx", choices=["onnx", "mnn"], help="bundle runtime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="evaluate on at most this many held-out pairs")
    args = parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)  # `main.py eval -- --bundle ...`
    torch.set_num_threads(args.threads)
    held = split_pairs(args.pairs, args.limit)
    if args.ablation:
        report = ablation(args.ablation, held)
        outputs = report.pop("outputs")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ablation.json").write_text(json.dumps(report, indent=2, default=float))
        (args.out / "ablation_table.md").write_text(ablation_markdown(report) + "\n")
        write_grid(args.out / "ablation_grid.png", held, outputs, count=6)
        log.info("ablation written to %s", args.out)
        return 0
    if args.bundle:
        stylizers, title = bundle_stylizers(args.bundle, args.backend, args.threads), f"{args.bundle} ({args.backend})"
    else:
        stylizers, title = run_stylizers(args.runs), "student runs"
    result, outputs = evaluate(stylizers, held)
    result["source"] = str(args.bundle or [str(r) for r in args.runs])
    write_report(args.out, result, held, outputs, f"Evaluation of {title} on {len(held)} held-out pairs")
    log.info("report written to %s", args.out)
    return 0
