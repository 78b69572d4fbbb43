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
Each step calls a stage's own function with its typed config (so its checks and resume logic are the
stage's own), in its own sub-directory of ``--run``; running the same command again resumes where it
stopped and skips finished steps. Process-wide settings (torch threads, logging) are made once, here.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from engine.bundle import load_bundle
from training.errors import DatasetError, TrainingError
from training.loop import ABORTED_EXIT, Budget
from training.options import add_config_arguments, apply_flags
from training.pairs import PairsConfig
from training.runs import AbortFlag, Progress, abort_on_signals, replace_folder

log = logging.getLogger(__name__)

SOURCES = ("teacher", "ink", "pairs", "styles")
TIERS_BY_PRESET = {"tiny": ["light"], "cpu": ["light", "standard"], "gpu": ["light", "standard", "high"]}
TEACHER_TIERS = {"tiny": ["light"], "cpu": ["light", "standard", "high"], "gpu": ["light", "standard", "high"]}
# Teacher route, cpu preset: steps from scratch and when fine-tuning a parent style's students, on CPUs with
# native bf16. The first half learns from the pixel and detail losses alone (about a third of a full step's
# cost); the perceptual loss joins at half, the discriminator a sixteenth later. Without native bf16 a full step
# runs in fp32 at about 4× the cost (8.6 against 2.1 s on a Zen 3, docs/styles.md), so a third of the steps
# keeps the route within about 90 minutes there.
TEACHER_STEPS = {"scratch": 1600, "finetune": 800}
FP32_STEP_SHARE = 1 / 3
TEACHER_INPUT = 512  # faces are aligned at this side for the teachers (their preferred input); pairs are 256²
# The head mask (training.student.head_mask): one small network for every tier, 8-11 minutes on 2 cores (cpu).
HEAD_MASK_STEPS = {"tiny": 4, "cpu": 3000, "gpu": 6000}
STYLE_SET_SIZE = {"tiny": 16, "cpu": 500, "gpu": 5000}
UGATIT_STEPS = {"tiny": 4, "cpu": 1200, "gpu": 100_000}
STYLEGAN_BUDGET = {"tiny": dict(steps=4), "cpu": dict(wall_minutes=60), "gpu": dict(kimg=2000)}
DONE = ".done"


class Aborted(Exception):
    """A step stopped on request (its checkpoint is saved); the recipe stops before the next one."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=SOURCES, required=True, help="what --data holds")
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="face photos/videos, style images, or a pairs folder"
    )
    parser.add_argument("--faces", type=Path, nargs="*", default=[], help="real face photos/videos (styles, ink)")
    parser.add_argument("--teacher", type=Path, help="teacher folder (teacher.json) for --source teacher")
    parser.add_argument("--masks", type=Path, help="mask-model folder (default: 'masks' beside the teacher, if any)")
    parser.add_argument("--init-from", type=Path, help="teacher route: a parent style's student runs to fine-tune")
    add_config_arguments(parser, PairsConfig, dest="pairs.", only=("skin_tone",))
    parser.add_argument("--preset", default="cpu", choices=sorted(TIERS_BY_PRESET))
    parser.add_argument("--style-id", required=True, help="id of the bundle to build")
    parser.add_argument("--name", help="the style's display name (default: its id)")
    parser.add_argument("--run", type=Path, help="run root (default: runs/<style-id>)")
    parser.add_argument("--install-to", type=Path, help="models folder to install the bundle into")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")


class Recipe:
    """The steps of one ``train all`` call; each is a stage run in its own folder of the run root."""

    def __init__(self, root: Path, progress: Progress, abort: AbortFlag) -> None:
        self.root, self.progress, self.abort = root, progress, abort

    def done(self, name: str) -> bool:
        """Whether an earlier call finished the step ``name``."""
        return (self.root / name / DONE).exists()

    def step(self, name: str, work: Callable[[Path, bool], object]) -> Path:
        """Run ``work(folder, resume)`` unless an earlier call finished it; ``resume`` is True when an earlier
        call started it. Raises :class:`Aborted` when the step was stopped on request."""
        folder = self.root / name
        if not self.done(name):
            log.info("step %s", name)
            work(folder, (folder / "options.json").exists())
            if self.abort:
                raise Aborted(name)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / DONE).write_text("")
        return folder


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    root = args.run or Path("runs") / args.style_id
    root.mkdir(parents=True, exist_ok=True)
    abort = AbortFlag()
    recipe = Recipe(root, Progress(args.progress), abort)
    try:
        with abort_on_signals(abort):
            if args.source == "teacher":
                runs, pairs, data, head_mask = _teacher_route(args, recipe)
            else:
                (runs, pairs, data), head_mask = _classic_route(args, recipe), None
            _export_and_install(args, recipe, runs, pairs, data, head_mask)
    except Aborted as stopped:
        log.warning("stopped in step %s; run the same command to resume", stopped)
        return ABORTED_EXIT
    return 0


def _classic_route(args: argparse.Namespace, recipe: Recipe) -> tuple[list[Path], Path, str]:
    """ink / pairs / styles: (faces →) pairs → one student run per tier of the preset."""
    from training.pairs import make_pairs
    from training.prepare import PrepareConfig, prepare_folder
    from training.student.train import config_from, student_stage

    if len(args.data) != 1:
        raise TrainingError(f"--source {args.source} takes one --data folder")
    data, preset, progress, abort = args.data[0], args.preset, recipe.progress, recipe.abort
    pairs = data
    if args.source in ("ink", "styles"):
        face_inputs = args.faces or ([data] if args.source == "ink" else [])
        if not face_inputs:
            raise TrainingError("--source styles needs --faces: real face photos or videos to translate")
        faces = recipe.step("faces", lambda out, _: prepare_folder(face_inputs, out, PrepareConfig(), progress, abort))
        teacher = "ink" if args.source == "ink" else f"ugatit:{_styles_translator(args, recipe, data, faces)}"
        pairs = recipe.step(
            "pairs",
            lambda out, _: make_pairs(
                teacher,
                faces,
                out,
                apply_flags(PairsConfig(), args, dest="pairs."),
                progress,
                abort,
                None,
                args.device,
                args.threads,
            ),
        )
    cfg = config_from(preset)
    runs = [
        recipe.step(
            f"student-{tier}",
            lambda out, resume, tier=tier: student_stage(
                pairs, out, [tier], cfg, progress, abort, resume=resume, device=args.device, labels={"preset": preset}
            ),
        )
        for tier in TIERS_BY_PRESET[preset]
    ]
    return runs, pairs, f"{args.source}: {data}"


def _styles_translator(args: argparse.Namespace, recipe: Recipe, styles: Path, faces: Path) -> Path:
    """StyleGAN2-ADA on the style images → a generated style set → U-GAT-IT between faces and that set."""
    from training.stylegan.config import PRESETS as GAN_PRESETS
    from training.stylegan.generate import generate_set
    from training.stylegan.train import budget_of, stylegan_stage
    from training.ugatit.config import PRESETS as UGATIT_PRESETS
    from training.ugatit.train import ugatit_stage

    preset, progress, abort, device = args.preset, recipe.progress, recipe.abort, args.device
    gan_cfg = GAN_PRESETS[preset]
    gan_budget = budget_of(gan_cfg, **STYLEGAN_BUDGET[preset])
    gan = recipe.step(
        "stylegan",
        lambda out, resume: stylegan_stage([styles], out, gan_cfg, gan_budget, progress, abort, None, resume, device),
    )
    style_set = recipe.step("style_set", lambda out, _: generate_set(gan, out, progress, count=STYLE_SET_SIZE[preset]))
    steps = Budget(steps=UGATIT_STEPS[preset])
    cfg = UGATIT_PRESETS[preset]
    return recipe.step(
        "ugatit",
        lambda out, resume: ugatit_stage(
            [faces], [style_set / "images"], out, cfg, steps, progress, abort, resume, device
        ),
    )


def teacher_student_config(preset: str, finetune: bool, bf16: bool):
    """The students' config on the teacher route: the preset's, in bf16 where asked, with the cpu preset's own
    schedule (fewer steps when fine-tuning a parent style or without bf16; see :data:`TEACHER_STEPS`)."""
    from training.student.train import config_from

    cfg = replace(config_from(preset), bf16=bf16)
    if preset != "cpu":
        return cfg
    steps = TEACHER_STEPS["finetune" if finetune else "scratch"]
    steps = steps if bf16 else round(steps * FP32_STEP_SHARE)
    return replace(cfg, steps=steps, perceptual_start=steps // 2, gan_start=steps // 2 + steps // 16)


def _teacher_route(args: argparse.Namespace, recipe: Recipe) -> tuple[list[Path], Path, str, Path | None]:
    """prepare (at the teacher's input side) -> teacher pairs -> three tiers side by side, and a head mask
    when the pairs have alpha targets."""
    from training.modules import cpu_has_native_bf16
    from training.pairs import FolderPairs, make_pairs, resolve_teacher
    from training.prepare import MANIFEST, Manifest, PrepareConfig, prepare_folder
    from training.student.head_mask import HeadMaskConfig, head_mask_stage
    from training.student.train import student_stage, tier_runs
    from training.teachers.network import load_teacher_spec

    if args.teacher is None:
        raise TrainingError("--source teacher needs --teacher: a folder with a teacher.json")
    spec = load_teacher_spec(args.teacher)
    progress, abort, device = recipe.progress, recipe.abort, args.device
    if not recipe.done("pairs"):  # fail before any work on a teacher that cannot run (it draws a test face)
        resolve_teacher(str(args.teacher), device, args.threads)
    masks = args.masks or (spec.path.parent.parent / "masks")
    faces = recipe.step(
        "faces",
        lambda out, _: prepare_folder(args.data, out, PrepareConfig(size=TEACHER_INPUT), progress, abort),
    )
    bf16 = device == "cpu" and cpu_has_native_bf16()
    cfg = teacher_student_config(args.preset, finetune=args.init_from is not None, bf16=bf16)
    splits = [item["split"] for item in Manifest.load(faces / MANIFEST).items]
    if splits.count("train") < cfg.min_pairs:  # found out now, not after the teacher has drawn them all
        raise DatasetError(
            f"{faces}: {splits.count('train')} training faces ({splits.count('heldout')} more held out); the"
            f" {args.preset} preset needs at least {cfg.min_pairs}: add photos or videos"
        )
    pairs = recipe.step(
        "pairs",
        lambda out, _: make_pairs(
            str(args.teacher),
            faces,
            out,
            apply_flags(PairsConfig(size=256), args, dest="pairs."),
            progress,
            abort,
            masks if masks.is_dir() else None,
            device,
            args.threads,
        ),
    )
    tiers = TEACHER_TIERS[args.preset]
    labels = {"preset": args.preset}
    students = recipe.step(
        "students",
        lambda out, resume: student_stage(
            pairs, out, tiers, cfg, progress, abort, args.init_from, resume, device, labels
        ),
    )
    head_mask = None
    if FolderPairs(pairs).has_alpha:
        head_cfg = HeadMaskConfig(steps=HEAD_MASK_STEPS[args.preset])
        head_mask = recipe.step(
            "head-mask", lambda out, resume: head_mask_stage(pairs, out, head_cfg, progress, abort, resume)
        )
    data = (
        f"teacher {spec.id} on faces of {', '.join(map(str, args.data))}: {splits.count('train')} training faces;"
        f" {splits.count('heldout')} more, split off by source, were held out of training"
    )
    return tier_runs(students, tiers), pairs, data, head_mask


def _export_and_install(
    args: argparse.Namespace, recipe: Recipe, runs: list[Path], pairs: Path, data: str, head_mask: Path | None
) -> None:
    from training.student.export import export_bundle

    bundle_dir = recipe.root / "bundle" / args.style_id
    export_bundle(runs, bundle_dir, args.style_id, name=args.name, pairs=pairs, data=data, head_mask=head_mask)
    installed = install(bundle_dir, args.install_to) if args.install_to else bundle_dir
    if args.progress == "json":
        sys.stdout.write(json.dumps({"event": "installed", "style_id": args.style_id, "path": str(installed)}) + "\n")
        sys.stdout.flush()
    log.info("style %s ready in %s", args.style_id, installed)


def install(bundle_dir: Path, models_dir: Path) -> Path:
    """Copy a validated bundle into a models folder, replacing an older one only once the copy is complete."""
    bundle = load_bundle(bundle_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / bundle.id
    staging = models_dir / f".{bundle.id}.installing"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle_dir, staging)
    load_bundle(staging)
    replace_folder(target, staging)
    return target
