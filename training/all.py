"""``train all``: the whole recipe from a data folder to an installed, hot-swappable style bundle.

Three starting points:

* ``ink``    — real face photos; the procedural ink teacher makes the pairs.
* ``pairs``  — a (photo, stylized) pairs folder made elsewhere.
* ``styles`` — a folder of style images: StyleGAN2-ADA fine-tuning → a generated style set →
  U-GAT-IT between real faces and that set → translated pairs.

then students in the preset's tiers → ONNX/MNN export → bundle → installed into a models folder.
Each step is an ordinary stage run through the same CLI (so its options, checks and resume logic are
the stage's own) in its own sub-directory of ``--run``; running the same command again resumes where
it stopped and skips finished steps.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from engine.bundle import load_bundle
from training.runs import TrainingError

log = logging.getLogger(__name__)

SOURCES = ("ink", "pairs", "styles")
TIERS_BY_PRESET = {"tiny": ["light"], "cpu": ["light", "standard"], "gpu": ["light", "standard", "high"]}
STYLE_SET_SIZE = {"tiny": 16, "cpu": 500, "gpu": 5000}
UGATIT_STEPS = {"tiny": 4, "cpu": 1200, "gpu": 100_000}
STYLEGAN_BUDGET = {"tiny": ["--steps", "4"], "cpu": ["--wall-minutes", "60"], "gpu": ["--kimg", "2000"]}
DONE = ".done"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, required=True, help="what --data holds")
    parser.add_argument("--data", type=Path, required=True, help="style images, a pairs folder, or face photos")
    parser.add_argument("--faces", type=Path, nargs="*", default=[], help="real face photos/videos (styles, ink)")
    parser.add_argument("--preset", default="cpu", choices=sorted(TIERS_BY_PRESET))
    parser.add_argument("--style-id", required=True, help="id of the bundle to build")
    parser.add_argument("--run", type=Path, help="run root (default: runs/<style-id>)")
    parser.add_argument("--install-to", type=Path, help="models folder to install the bundle into")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per stage")
    parser.add_argument("--device", default="cpu")


def _stage(argv: list[str], progress: str) -> None:
    """Run one stage through the training CLI; a failing stage stops the recipe with its exit code."""
    from training.cli import main as cli_main

    log.info("train %s", " ".join(argv))
    code = cli_main([*argv, "--progress", progress])
    if code != 0:
        raise TrainingError(f"stage '{argv[0]}' stopped with exit code {code}; run the same command to resume")


def _step(root: Path, name: str) -> tuple[Path, bool]:
    """A step's folder and whether it already finished in an earlier run."""
    folder = root / name
    return folder, (folder / DONE).exists()


def _mark_done(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE).write_text("")


def _resume_flag(folder: Path) -> list[str]:
    return ["--resume"] if (folder / "options.json").exists() else []


def run(args: argparse.Namespace) -> int:
    root = args.run or Path("runs") / args.style_id
    root.mkdir(parents=True, exist_ok=True)
    progress = "json" if args.progress == "json" else args.progress
    common = ["--threads", str(args.threads)]
    device = ["--device", args.device]
    preset = args.preset

    pairs = args.data
    if args.source in ("ink", "styles"):
        face_inputs = args.faces or ([args.data] if args.source == "ink" else [])
        if not face_inputs:
            raise TrainingError("--source styles needs --faces: real face photos or videos to translate")
        faces, done = _step(root, "faces")
        if not done:
            _stage(["prepare", *map(str, face_inputs), "--out", str(faces)], progress)
            _mark_done(faces)
        pairs, done = _step(root, "pairs")
        if args.source == "ink" and not done:
            _stage(
                ["pairs", "--teacher", "ink", "--photos", str(faces), "--out", str(pairs), *common, *device], progress
            )
            _mark_done(pairs)
        if args.source == "styles" and not done:
            gan, gan_done = _step(root, "stylegan")
            if not gan_done:
                _stage(
                    [
                        "stylegan",
                        "--data",
                        str(args.data),
                        "--run",
                        str(gan),
                        "--preset",
                        preset,
                        *STYLEGAN_BUDGET[preset],
                        *_resume_flag(gan),
                        *common,
                        *device,
                    ],
                    progress,
                )
                _mark_done(gan)
            style_set, set_done = _step(root, "style_set")
            if not set_done:
                _stage(
                    [
                        "generate",
                        "--generator",
                        str(gan),
                        "--out",
                        str(style_set),
                        "--count",
                        str(STYLE_SET_SIZE[preset]),
                        *common,
                    ],
                    progress,
                )
                _mark_done(style_set)
            translator, tr_done = _step(root, "ugatit")
            if not tr_done:
                _stage(
                    [
                        "ugatit",
                        "--faces",
                        str(faces),
                        "--styles",
                        str(style_set / "images"),
                        "--run",
                        str(translator),
                        "--preset",
                        preset,
                        "--steps",
                        str(UGATIT_STEPS[preset]),
                        *_resume_flag(translator),
                        *common,
                        *device,
                    ],
                    progress,
                )
                _mark_done(translator)
            _stage(
                [
                    "ugatit-pairs",
                    "--checkpoint",
                    str(translator),
                    "--photos",
                    str(faces),
                    "--out",
                    str(pairs),
                    *common,
                    *device,
                ],
                progress,
            )
            _mark_done(pairs)

    student_runs = []
    for tier in TIERS_BY_PRESET[preset]:
        run_dir, done = _step(root, f"student-{tier}")
        if not done:
            _stage(
                [
                    "student",
                    "--pairs",
                    str(pairs),
                    "--run",
                    str(run_dir),
                    "--tier",
                    tier,
                    "--preset",
                    preset,
                    *_resume_flag(run_dir),
                    *common,
                    *device,
                ],
                progress,
            )
            _mark_done(run_dir)
        student_runs.append(run_dir)

    bundle_dir = root / "bundle" / args.style_id
    _stage(
        [
            "export",
            "--runs",
            *map(str, student_runs),
            "--out",
            str(bundle_dir),
            "--style-id",
            args.style_id,
            "--pairs",
            str(pairs),
            "--data",
            f"{args.source}: {args.data}",
        ],
        progress,
    )
    installed = install(bundle_dir, args.install_to) if args.install_to else bundle_dir
    record = {"event": "installed", "style_id": args.style_id, "path": str(installed)}
    if progress == "json":
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
    log.info("style %s ready in %s", args.style_id, installed)
    return 0


def install(bundle_dir: Path, models_dir: Path) -> Path:
    """Copy a validated bundle into a models folder, replacing an older one only once the copy is complete."""
    bundle = load_bundle(bundle_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / bundle.id
    staging = models_dir / f".{bundle.id}.installing"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle_dir, staging)
    load_bundle(staging)
    if target.exists():
        old = models_dir / f".{bundle.id}.old"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
    return target
