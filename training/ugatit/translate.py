"""A trained U-GAT-IT as a pair teacher, and the ``ugatit-pairs`` stage that writes a pairs folder.

:class:`UgatitTeacher` is a :data:`training.pairs.Teacher` (a batch of aligned BGR photos → their
stylized versions): each photo is resized to the generator's side (area filter), translated A→B by
the EMA generator (or the raw one), and the result resized back to the photo's size (cubic), so the
pair has equal sizes as :class:`training.pairs.FolderPairs` requires. :func:`ugatit_pair_source`
wraps it in the student stage's :class:`training.pairs.TeacherPairs` — the "checkpoint on the fly"
pair source — and ``ugatit-pairs`` materialises that with :func:`training.pairs.write_pairs`
(``photos/``, ``stylized/``, ``pairs.json``) plus ``translation.json``: which checkpoint (path,
sha256, step, weights, direction) made the pairs. A folder holding pairs of another checkpoint is
refused rather than mixed; the same checkpoint resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from engine.bundle import sha256_file
from training.modules import load_strict
from training.pairs import TeacherPairs, write_pairs
from training.runs import MODEL_FILE, AbortFlag, Progress, RunDir, TrainingError, abort_on_signals, load_model_file
from training.stylegan.images import from_uint8, to_uint8
from training.ugatit.networks import Generator, GeneratorConfig
from training.ugatit.train import ARCH

log = logging.getLogger(__name__)

TRANSLATION_FILE = "translation.json"
DIRECTIONS = {"A2B": "genA2B", "B2A": "genB2A"}
WEIGHTS = ("ema", "raw")


def checkpoint_path(path: Path | str) -> Path:
    """A run directory, its ``checkpoints/`` folder or a ``model.pt`` file → the model file."""
    path = Path(path)
    for candidate in (path / "checkpoints" / MODEL_FILE, path / MODEL_FILE):
        if candidate.is_file():
            return candidate
    return path


def load_translator(path: Path | str, direction: str = "A2B", weights: str = "ema") -> tuple[Generator, dict]:
    """The generator of a U-GAT-IT checkpoint, in eval mode, and the checkpoint's description."""
    if direction not in DIRECTIONS or weights not in WEIGHTS:
        raise TrainingError(f"direction must be one of {sorted(DIRECTIONS)} and weights one of {WEIGHTS}")
    file = checkpoint_path(path)
    ckpt = load_model_file(file)
    if ckpt["arch"] != ARCH:
        raise TrainingError(f"{file}: a '{ckpt['arch']}' checkpoint, not a U-GAT-IT one (arch '{ARCH}')")
    name = DIRECTIONS[direction]
    params = ckpt["params_ema" if weights == "ema" else "params"]
    try:
        cfg = GeneratorConfig(**ckpt["init_kwargs"]["generator"])
        state = params[name]
    except (KeyError, TypeError) as exc:
        raise TrainingError(f"{file}: U-GAT-IT checkpoint without a usable {name} ({exc})") from exc
    G = Generator(cfg)
    load_strict(G, state, f"{file} [{name} {weights}]")
    info = {
        "checkpoint": str(file),
        "sha256": sha256_file(file),
        "step": ckpt.get("step"),
        "direction": direction,
        "weights": weights,
        "generator": cfg.to_dict(),
    }
    return G.eval().requires_grad_(False), info


class UgatitTeacher:
    """``__call__(photos: list[[H, W, 3] uint8 BGR]) -> list[[H, W, 3] uint8 BGR]`` through a U-GAT-IT generator."""

    def __init__(
        self, checkpoint: Path | str, device: str = "cpu", direction: str = "A2B", weights: str = "ema"
    ) -> None:
        self.G, self.info = load_translator(checkpoint, direction, weights)
        self.G.to(device)
        self.device = device
        self.size = self.G.cfg.img_size

    @torch.no_grad()
    def __call__(self, photos: list[np.ndarray]) -> list[np.ndarray]:
        if not photos:
            return []
        rgb = [cv2.cvtColor(self._resize(p, self.size), cv2.COLOR_BGR2RGB) for p in photos]
        out = to_uint8(self.G(from_uint8(np.stack(rgb), self.device))[0])  # [N, S, S, 3] uint8 RGB
        return [self._resize(cv2.cvtColor(o, cv2.COLOR_RGB2BGR), p.shape[0], p.shape[1]) for o, p in zip(out, photos)]

    @staticmethod
    def _resize(image: np.ndarray, h: int, w: int | None = None) -> np.ndarray:
        w = h if w is None else w
        if image.shape[:2] == (h, w):
            return image
        interp = cv2.INTER_AREA if image.shape[0] > h else cv2.INTER_CUBIC
        return cv2.resize(image, (w, h), interpolation=interp)


def ugatit_pair_source(photos: Path | str, teacher: UgatitTeacher) -> TeacherPairs:
    """Aligned photos (a ``train prepare`` folder or an image folder) paired with their translations."""
    return TeacherPairs(photos, teacher, f"ugatit-{teacher.info['sha256'][:12]}")


def _check_folder(out: Path, info: dict[str, Any]) -> None:
    """Refuse to mix pairs of two teachers in one folder; the same checkpoint and settings resume."""
    existing = out / TRANSLATION_FILE
    if existing.exists():
        old = json.loads(existing.read_text())
        keys = ("sha256", "direction", "weights")
        if any(old.get(k) != info[k] for k in keys):
            raise TrainingError(
                f"{out}: holds pairs made by {old.get('checkpoint')} ({', '.join(f'{k}={old.get(k)}' for k in keys)});"
                " write to a new --out"
            )
    elif (out / "stylized").is_dir() and any((out / "stylized").iterdir()):
        raise TrainingError(f"{out}: already holds stylized images from another teacher; write to a new --out")


# ----- the ``ugatit-pairs`` stage --------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="a `train ugatit` run directory or model.pt")
    parser.add_argument("--photos", type=Path, required=True, help="a `train prepare` folder or aligned photos")
    parser.add_argument("--out", type=Path, required=True, help="pairs folder to write (photos/, stylized/)")
    parser.add_argument("--direction", default="A2B", choices=sorted(DIRECTIONS), help="A2B: photo → style")
    parser.add_argument("--weights", default="ema", choices=WEIGHTS, help="EMA or raw generator weights")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    teacher = UgatitTeacher(args.checkpoint, args.device, args.direction, args.weights)
    source = ugatit_pair_source(args.photos, teacher)
    _check_folder(args.out, teacher.info)
    options = {**teacher.info, "photos": str(args.photos), "batch": args.batch}
    run_dir = RunDir.open(args.out, "ugatit-pairs", options)
    abort = AbortFlag()
    try:
        (args.out / TRANSLATION_FILE).write_text(json.dumps({**teacher.info, "photos": str(args.photos)}, indent=1))
        with abort_on_signals(abort):
            written = write_pairs(source, args.out, args.batch, Progress(args.progress), abort)
    finally:
        run_dir.close()
    log.info("%d pairs written now, %d in %s", written, len(source), args.out)
    return 130 if abort else 0
