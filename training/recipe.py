"""``train all``: the whole recipe from a data folder to an installed, hot-swappable style bundle.

Four starting points:

* ``teacher`` — a pretrained teacher folder (``teacher.json``) and real face photos or videos: the teacher
  makes the pairs (with alpha targets from the mask models beside it and the keep-skin-tone treatment),
  and the three tiers train side by side in one process, optionally fine-tuned from a parent style's
  students (``--init-from``). This is the route a laptop can afford.
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
from training.errors import TrainingError

log = logging.getLogger(__name__)

SOURCES = ("teacher", "ink", "pairs", "styles")
TIERS_BY_PRESET = {"tiny": ["light"], "cpu": ["light", "standard"], "gpu": ["light", "standard", "high"]}
TEACHER_TIERS = {"tiny": ["light"], "cpu": ["light", "standard", "high"], "gpu": ["light", "standard", "high"]}
# Teacher route, cpu preset: steps from scratch and when fine-tuning a parent style's students.
TEACHER_STEPS = {"scratch": "600", "finetune": "300"}
TEACHER_INPUT = 512  # faces are aligned at this side for the teachers (their preferred input); pairs are 256²
STYLE_SET_SIZE = {"tiny": 16, "cpu": 500, "gpu": 5000}
UGATIT_STEPS = {"tiny": 4, "cpu": 1200, "gpu": 100_000}
STYLEGAN_BUDGET = {"tiny": ["--steps", "4"], "cpu": ["--wall-minutes", "60"], "gpu": ["--kimg", "2000"]}
DONE = ".done"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, required=True, help="what --data holds")
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="face photos/videos, style images, or a pairs folder"
    )
    parser.add_argument("--faces", type=Path, nargs="*", default=[], help="real face photos/videos (styles, ink)")
    parser.add_argument("--teacher", type=Path, help="teacher folder (teacher.json) for --source teacher")
    parser.add_argument("--masks", type=Path, help="mask-model folder (default: 'masks' beside the teacher, if any)")
    parser.add_argument("--init-from", type=Path, help="teacher route: a parent style's student runs to fine-tune")
    parser.add_argument("--preset", default="cpu", choices=sorted(TIERS_BY_PRESET))
    parser.add_argument("--style-id", required=True, help="id of the bundle to build")
    parser.add_argument("--run", type=Path, help="run root (default: runs/<style-id>)")
    parser.add_argument("--install-to", type=Path, help="models folder to install the bundle into")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per stage")
    parser.add_argument("--device", default="cpu")


class Recipe:
    """Runs the steps of one ``train all`` call; each step is a stage in its own folder of the run root."""

    def __init__(self, root: Path, progress: str, threads: int) -> None:
        self.root, self.progress, self.threads = root, progress, threads

    def stage(self, argv: list[str], threaded: bool = True) -> None:
        """Run one stage through the training CLI; a failing stage stops the recipe."""
        from training.cli import main as cli_main

        log.info("train %s", " ".join(argv))
        threads = ["--threads", str(self.threads)] if threaded else []
        code = cli_main([*argv, *threads, "--progress", self.progress])
        if code != 0:
            raise TrainingError(f"stage '{argv[0]}' stopped with exit code {code}; run the same command to resume")

    def step(self, name: str, argv: list[str], resumable: bool = False, threaded: bool = True) -> Path:
        """Run ``argv`` (where ``{dir}`` is the step's folder) unless an earlier call finished it."""
        folder = self.root / name
        if not (folder / DONE).exists():
            args = [str(folder) if a == "{dir}" else a for a in argv]
            if resumable and (folder / "options.json").exists():
                args.append("--resume")
            self.stage(args, threaded)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / DONE).write_text("")
        return folder


def run(args: argparse.Namespace) -> int:
    root = args.run or Path("runs") / args.style_id
    root.mkdir(parents=True, exist_ok=True)
    preset = args.preset
    device = ["--device", args.device]
    recipe = Recipe(root, args.progress, args.threads)

    if args.source == "teacher":
        return _teacher_route(args, recipe, root)
    if len(args.data) != 1:
        raise TrainingError(f"--source {args.source} takes one --data folder")
    args.data = args.data[0]
    pairs = args.data
    if args.source in ("ink", "styles"):
        face_inputs = args.faces or ([args.data] if args.source == "ink" else [])
        if not face_inputs:
            raise TrainingError("--source styles needs --faces: real face photos or videos to translate")
        faces = recipe.step("faces", ["prepare", *map(str, face_inputs), "--out", "{dir}"], threaded=False)
        if args.source == "ink":
            pairs = recipe.step(
                "pairs", ["pairs", "--teacher", "ink", "--photos", str(faces), "--out", "{dir}", *device]
            )
        else:
            gan = recipe.step(
                "stylegan",
                [
                    "stylegan",
                    "--data",
                    str(args.data),
                    "--run",
                    "{dir}",
                    "--preset",
                    preset,
                    *STYLEGAN_BUDGET[preset],
                    *device,
                ],
                resumable=True,
            )
            count = str(STYLE_SET_SIZE[preset])
            style_set = recipe.step(
                "style_set", ["generate", "--generator", str(gan), "--out", "{dir}", "--count", count]
            )
            translator = recipe.step(
                "ugatit",
                [
                    "ugatit",
                    "--faces",
                    str(faces),
                    "--styles",
                    str(style_set / "images"),
                    "--run",
                    "{dir}",
                    "--preset",
                    preset,
                    "--steps",
                    str(UGATIT_STEPS[preset]),
                    *device,
                ],
                resumable=True,
            )
            pairs = recipe.step(
                "pairs",
                ["pairs", "--teacher", f"ugatit:{translator}", "--photos", str(faces), "--out", "{dir}", *device],
            )

    student_runs = [
        recipe.step(
            f"student-{tier}",
            ["student", "--pairs", str(pairs), "--run", "{dir}", "--tier", tier, "--preset", preset, *device],
            resumable=True,
        )
        for tier in TIERS_BY_PRESET[preset]
    ]
    return _export_and_install(args, recipe, root, student_runs, pairs, f"{args.source}: {args.data}")


def _teacher_route(args: argparse.Namespace, recipe: Recipe, root: Path) -> int:
    """prepare (at the teacher's input side) -> teacher pairs -> three tiers side by side -> export."""
    from training.modules import cpu_has_native_bf16
    from training.teachers.network import load_teacher_spec

    if args.teacher is None:
        raise TrainingError("--source teacher needs --teacher: a folder with a teacher.json")
    spec = load_teacher_spec(args.teacher)  # fail before any work on a bad teacher
    masks = args.masks or (spec.path.parent.parent / "masks")
    device = ["--device", args.device]
    faces = recipe.step(
        "faces", ["prepare", *map(str, args.data), "--out", "{dir}", "--size", str(TEACHER_INPUT)], threaded=False
    )
    pairs_argv = ["pairs", "--teacher", str(args.teacher), "--photos", str(faces), "--out", "{dir}", "--size", "256"]
    if masks.is_dir():
        pairs_argv += ["--masks", str(masks)]
    pairs = recipe.step("pairs", [*pairs_argv, *device])
    tiers = TEACHER_TIERS[args.preset]
    student_argv = ["student", "--pairs", str(pairs), "--run", "{dir}", "--tier", *tiers, "--preset", args.preset]
    if args.preset == "cpu":
        steps = TEACHER_STEPS["finetune" if args.init_from else "scratch"]
        student_argv += ["--steps", steps, "--gan-start", str(int(steps) // 4)]
    if args.init_from:
        student_argv += ["--init-from", str(args.init_from)]
    if args.device == "cpu" and cpu_has_native_bf16():
        student_argv.append("--bf16")
    students = recipe.step("students", [*student_argv, *device], resumable=True)
    runs = [students] if len(tiers) == 1 else [students / t for t in tiers]
    data = f"teacher {spec.id} on faces of {', '.join(map(str, args.data))}"
    return _export_and_install(args, recipe, root, runs, pairs, data)


def _export_and_install(
    args: argparse.Namespace,
    recipe: Recipe,
    root: Path,
    student_runs: list[Path],
    pairs: Path,
    data: str,
) -> int:
    bundle_dir = root / "bundle" / args.style_id
    argv = ["export", "--runs", *map(str, student_runs), "--out", str(bundle_dir), "--style-id", args.style_id]
    recipe.stage([*argv, "--pairs", str(pairs), "--data", data], threaded=False)
    installed = install(bundle_dir, args.install_to) if args.install_to else bundle_dir
    if args.progress == "json":
        sys.stdout.write(json.dumps({"event": "installed", "style_id": args.style_id, "path": str(installed)}) + "\n")
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
