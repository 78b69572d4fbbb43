"""``train estimate``: how long a ``train all`` route will take on this machine, from measured throughput.

Before a long run, the wizard (and a user on the command line) wants a figure for *this* CPU, not for the
machine the docs were measured on. The estimate times the parts that dominate, on this machine, now:

* the data: how many faces the sources give (images, plus the sampled frames of each video);
* the teacher: seconds per face at its input side (a warm call, then two timed), and the mask models' work
  per pair (the alpha target and the skin-tone treatment) when the route uses them;
* the students: seconds per training step of the route's tiers at the preset's crop and batch (side by side
  for the teacher route, one after the other otherwise), on random pairs, after a warm-up step, in each
  phase of the schedule (pixel and detail losses only; with the perceptual loss; with the discriminator
  too), weighted by the share of steps of each;
* the head mask (teacher route): seconds per step on random pairs;

and multiplies them by what the route does. Face alignment and export are not timed: they are small next to
the rest (0.6 and 5 min of the 55-minute hayao run, docs/styles.md) and are added as those figures.
The StyleGAN route is not estimated: on a CPU it never reaches a usable style (docs/stylegan.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.backends import cpu_model
from engine.errors import SourceError
from engine.sources import VideoFileSource, astronaut
from training.errors import TrainingError
from training.prepare import VIDEO_EXTS, PrepareConfig, find_sources
from training.recipe import HEAD_MASK_STEPS, TEACHER_INPUT, TEACHER_TIERS, TIERS_BY_PRESET, teacher_student_config
from training.student.train import StudentConfig, config_from

STEPS_TIMED = 3  # per phase (without and with the discriminator): single steps vary by ±30 %
FIXED_MINUTES = {"prepare": 0.6, "export": 5.0}  # measured on the hayao run (docs/styles.md), not timed here


def count_faces(inputs: list[Path], cfg: PrepareConfig = PrepareConfig()) -> int:
    """Images plus sampled video frames in ``inputs``: the most crops ``train prepare`` can make of them."""
    total = 0
    for path in find_sources(inputs):
        if path.suffix.lower() not in VIDEO_EXTS:
            total += 1
            continue
        try:
            video = VideoFileSource(path)
        except SourceError:  # prepare skips it too
            continue
        video.close()
        step = max(1, round(video.fps * cfg.every_seconds))
        total += min(cfg.max_frames_per_video, -(-video.expected_frames // step))  # frames 0, step, 2·step, ...
    return total


def teacher_seconds(teacher: str, side: int, threads: int) -> float:
    """Seconds per face of a teacher (``ink`` or a teacher folder) at input ``side``, median of two calls."""
    from training.pairs import resolve_teacher

    stylize = resolve_teacher(teacher, "cpu", threads).stylize
    face = astronaut(side)
    stylize([face])  # warm-up: graph optimisation, first allocations
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        stylize([face])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def masks_seconds(folder: Path, threads: int) -> float:
    """Seconds per pair of the mask models' work (alpha target of the photo, skin of the stylized face)."""
    from training.teachers.masks import BlendTargets, open_mask_models

    targets = BlendTargets(open_mask_models(folder, threads))
    face = astronaut(256)
    try:
        times = []
        for _ in range(3):  # the first call warms up
            t0 = time.perf_counter()
            targets(face)
            targets.skin(face)
            times.append(time.perf_counter() - t0)
    finally:
        targets.close()
    return float(np.median(times[1:]))


def phase_shares(cfg: StudentConfig) -> dict[tuple[bool, bool], float]:
    """The share of ``cfg.steps`` in each phase, keyed (perceptual loss on, discriminator on)."""
    vgg_from = cfg.perceptual_start if cfg.weights.perceptual > 0 else 1 << 30
    gan_from = cfg.gan_start if cfg.weights.gan > 0 else 1 << 30
    cuts = sorted({0, cfg.steps, *(min(c, cfg.steps) for c in (vgg_from, gan_from))})
    shares: dict[tuple[bool, bool], float] = {}
    for start, end in zip(cuts, cuts[1:]):
        key = (start >= vgg_from, start >= gan_from)
        shares[key] = shares.get(key, 0.0) + (end - start) / max(cfg.steps, 1)
    return shares


def student_step_seconds(tiers: list[str], cfg: StudentConfig) -> float:
    """Seconds per step of ``tiers`` trained side by side with ``cfg``'s crop and batch (random pairs): each
    phase of :func:`phase_shares` timed, weighted by its share of the steps."""
    from training.student.losses import PerceptualLoss
    from training.student.train import PairTensors, SharedBatches, StudentTrainer

    n, side = max(cfg.batch, 4), max(cfg.crop, 64)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8))
    alpha = torch.from_numpy(rng.integers(0, 256, (n, 1, side, side), dtype=np.uint8))
    pairs = PairTensors([str(i) for i in range(n)], images, images.flip(1), images, alpha)
    perceptual = PerceptualLoss("cpu") if cfg.weights.perceptual > 0 else None
    total = 0.0
    for (vgg, gan), share in phase_shares(cfg).items():
        phase = replace(cfg, perceptual_start=0 if vgg else 1 << 30, gan_start=0 if gan else 1 << 30)
        batches = SharedBatches(pairs, phase, "cpu", perceptual)
        trainers = [StudentTrainer(replace(phase, tier=t), pairs, pairs, batches, "cpu") for t in tiers]
        times = []
        for _ in range(STEPS_TIMED + 1):  # the first step warms up (allocations, oneDNN kernel choice)
            t0 = time.perf_counter()
            for t in trainers:
                t.step()
            times.append(time.perf_counter() - t0)
        total += share * float(np.median(times[1:]))
    return total


def head_mask_step_seconds() -> float:
    """Seconds per ``train head-mask`` step (default config, random 256² pairs), median after a warm-up."""
    from training.student.head_mask import HeadMaskConfig, HeadMaskTrainer

    cfg = HeadMaskConfig()
    rng = np.random.default_rng(0)
    photos = torch.from_numpy(rng.integers(0, 256, (cfg.batch, 3, 256, 256), dtype=np.uint8))
    alpha = torch.from_numpy(rng.integers(0, 256, (cfg.batch, 1, 256, 256), dtype=np.uint8))
    trainer = HeadMaskTrainer(cfg, (photos, alpha), (photos[:0], alpha[:0]))
    times = []
    for _ in range(STEPS_TIMED + 1):
        t0 = time.perf_counter()
        trainer.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def estimate(
    source: str, data: list[Path], preset: str, teacher: Path | None, threads: int, finetune: bool = False
) -> dict:
    """The route's estimated minutes, its parts and what was measured (see module docstring)."""
    from training.modules import cpu_has_native_bf16
    from training.teachers.network import load_teacher_spec

    if source == "styles":
        raise TrainingError("the style-image route trains StyleGAN2 and U-GAT-IT: it needs a GPU (docs/stylegan.md)")
    torch.set_num_threads(threads)
    bf16 = cpu_has_native_bf16()
    parts = {"prepare": FIXED_MINUTES["prepare"], "export": FIXED_MINUTES["export"]}
    measured: dict[str, float] = {}
    if source == "teacher":
        if teacher is None:
            raise TrainingError("--source teacher needs --teacher")
        faces = count_faces(data)
        measured["teacher_s_per_face"] = teacher_seconds(str(teacher), TEACHER_INPUT, threads)
        masks = load_teacher_spec(teacher).path.parent.parent / "masks"  # where train all looks for them
        measured["masks_s_per_face"] = masks_seconds(masks, threads) if masks.is_dir() else 0.0
        parts["pairs"] = faces * (measured["teacher_s_per_face"] + measured["masks_s_per_face"]) / 60
        tiers = TEACHER_TIERS[preset]
        cfg = teacher_student_config(preset, finetune, bf16)
        steps = cfg.steps
        measured["student_s_per_step"] = student_step_seconds(tiers, cfg)
        if masks.is_dir():  # the pairs get alpha targets, and train all a head mask, only with the mask models
            measured["head_mask_s_per_step"] = head_mask_step_seconds()
            parts["head_mask"] = HEAD_MASK_STEPS[preset] * measured["head_mask_s_per_step"] / 60
    else:
        faces = count_faces(data) if source == "ink" else 0
        if source == "ink":
            measured["teacher_s_per_face"] = teacher_seconds("ink", 256, threads)
            parts["pairs"] = faces * measured["teacher_s_per_face"] / 60
        else:
            parts.pop("prepare")
        tiers = TIERS_BY_PRESET[preset]
        cfg = config_from(preset)
        steps = cfg.steps
        measured["student_s_per_step"] = sum(student_step_seconds([t], cfg) for t in tiers)
    parts["students"] = steps * measured["student_s_per_step"] / 60
    most = int(faces * (1 - PrepareConfig().holdout))  # every image and frame a usable face, before dedup
    warning = (
        f"{faces} images and video frames give at most about {most} training faces after the held-out split;"
        f" the {preset} preset needs at least {cfg.min_pairs}: add photos or videos"
        if source in ("teacher", "ink") and most < cfg.min_pairs
        else None
    )
    return {
        "event": "estimate",
        "source": source,
        "preset": preset,
        "minutes": round(sum(parts.values()), 1),
        "parts": {k: round(v, 1) for k, v in parts.items()},
        "measured": {k: round(v, 3) for k, v in measured.items()},
        "faces": faces,
        "tiers": tiers,
        "steps": steps,
        "bf16": bf16,
        "threads": threads,
        "cpu": cpu_model(),
        "warning": warning,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=("teacher", "ink", "pairs", "styles"), required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="as for train all")
    parser.add_argument("--teacher", type=Path, help="teacher folder (teacher route)")
    parser.add_argument("--preset", default="cpu", choices=sorted(TIERS_BY_PRESET))
    parser.add_argument("--init-from", type=Path, help="teacher route: fine-tuning a parent style (fewer steps)")
    parser.add_argument("--threads", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    record = estimate(args.source, args.data, args.preset, args.teacher, args.threads, args.init_from is not None)
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
    return 0
