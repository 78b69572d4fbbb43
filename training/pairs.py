"""(photo, stylized) pairs for the student stage, behind one :class:`PairSource` protocol.

Sources:

* :class:`FolderPairs` — a folder with ``photos/`` and ``stylized/`` holding images of the same names
  (and optionally ``pairs.json`` giving each pair's split). This is what the student trains on.
* :class:`TeacherPairs` — aligned photos stylized on demand by a teacher callable.

``train pairs --teacher ink|ugatit:RUN|tier:BUNDLE:TIER|TEACHER_DIR`` materialises a source into a pairs folder
(resumable: pairs already written are kept; a folder made by another teacher is refused). Teachers are
the procedural ``ink`` teacher, a trained U-GAT-IT run, an installed style's tier, or a pretrained network
described by a ``teacher.json`` (:mod:`training.teachers.network`). Pairs are written at ``--size`` (the teacher itself
sees each crop at its own preferred size), with an ``alpha/`` target for learned blend masks and,
for colour styles, the keep-skin-tone treatment (:mod:`training.teachers.masks`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from engine.frames import read_image_file, to_bgr_uint8
from training.errors import DatasetError, TrainingError
from training.images import resize_antialiased
from training.loop import ABORTED_EXIT
from training.options import add_config_arguments, apply_flags, opt
from training.prepare import IMAGE_EXTS, MANIFEST, UNREADABLE, Manifest
from training.runs import AbortFlag, Progress, RunDir, abort_on_signals, atomic_write_text
from training.teachers.masks import BlendTargets, keep_skin_tone

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.json"
SOURCE_FILE = "teacher.json"  # which teacher (and settings) made a pairs folder
ALPHA_DIR = "alpha"


@dataclass(frozen=True)
class Pair:
    """One training pair: aligned (S, S, 3) uint8 BGR photo, its stylized version, optional (S, S) alpha."""

    key: str
    photo: np.ndarray
    stylized: np.ndarray
    split: str = "train"
    alpha: np.ndarray | None = None


class PairSource(Protocol):
    """Indexable (photo, stylized) pairs."""

    name: str

    def __len__(self) -> int: ...

    def names(self) -> list[str]: ...

    def split(self, key: str) -> str: ...

    def pair(self, key: str) -> Pair: ...

    def pairs(self, keys: list[str]) -> list[Pair]: ...


def _read(path: Path) -> np.ndarray:
    image = read_image_file(path)
    if image is None:
        raise DatasetError(f"{path}: {UNREADABLE}")
    return to_bgr_uint8(image)


def _images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTS}


class FolderPairs:
    """``root/photos/<name>.*`` paired with ``root/stylized/<name>.*``; every name must be in both."""

    def __init__(self, root: Path | str) -> None:
        root = Path(root)
        self.name = root.name
        self.root = root
        for sub in ("photos", "stylized"):
            if not (root / sub).is_dir():
                raise DatasetError(f"{root}: a pairs folder needs '{sub}/' (photos/ and stylized/ with equal names)")
        self._photos, self._stylized = _images(root / "photos"), _images(root / "stylized")
        only_p = sorted(set(self._photos) - set(self._stylized))
        only_s = sorted(set(self._stylized) - set(self._photos))
        if only_p or only_s:
            raise DatasetError(
                f"{root}: photos/ and stylized/ names do not match: "
                f"{len(only_p)} photos without a stylized version {only_p[:5]}, "
                f"{len(only_s)} stylized without a photo {only_s[:5]}"
            )
        if not self._photos:
            raise DatasetError(f"{root}: no image pairs in photos/ and stylized/")
        meta = root / PAIRS_FILE
        self._splits: dict[str, str] = _read_record(meta).get("splits", {}) if meta.exists() else {}
        self._alpha = _images(root / ALPHA_DIR) if (root / ALPHA_DIR).is_dir() else None
        if self._alpha is not None and set(self._alpha) != set(self._photos):
            missing = sorted(set(self._photos) - set(self._alpha))
            raise DatasetError(f"{root}: {ALPHA_DIR}/ lacks the targets of {len(missing)} pairs {missing[:5]}")

    @property
    def has_alpha(self) -> bool:
        return self._alpha is not None

    def __len__(self) -> int:
        return len(self._photos)

    def names(self) -> list[str]:
        return list(self._photos)

    def split(self, key: str) -> str:
        return self._splits.get(key, "train")

    def pair(self, key: str) -> Pair:
        photo, stylized = _read(self._photos[key]), _read(self._stylized[key])
        alpha = None
        if self._alpha is not None:
            alpha = cv2.imread(str(self._alpha[key]), cv2.IMREAD_GRAYSCALE)
            if alpha is None:
                raise DatasetError(f"{self._alpha[key]}: not a readable image")
        for path, image in ((self._stylized[key], stylized), (self._alpha and self._alpha[key], alpha)):
            if image is not None and image.shape[:2] != photo.shape[:2]:
                raise DatasetError(f"{path}: size {image.shape[:2]} differs from its photo {photo.shape[:2]}")
        return Pair(key, photo, stylized, self.split(key), alpha)

    def pairs(self, keys: list[str]) -> list[Pair]:
        return [self.pair(k) for k in keys]


Teacher = Callable[[list[np.ndarray]], list[np.ndarray]]


class TeacherPairs:
    """Aligned photos (a ``train prepare`` folder or a plain image folder) stylized by a teacher.

    The teacher sees each photo as stored (a network teacher resizes it to its own preferred size);
    with ``size``, photo and result are then brought to ``size``² with area averaging. With ``targets``
    each pair also gets an alpha target, and with ``skin_tone`` the keep-skin-tone treatment.
    """

    def __init__(
        self,
        photos: Path | str,
        teacher: Teacher,
        name: str,
        size: int | None = None,
        targets: BlendTargets | None = None,
        skin_tone: bool = False,
    ) -> None:
        photos = Path(photos)
        self.name = name
        self.teacher = teacher
        self.size, self.targets, self.skin_tone = size, targets, skin_tone
        if skin_tone and (targets is None or "skin_clothes_hair" not in targets.models):
            raise DatasetError("keeping the skin tone needs the skin_clothes_hair mask model (--masks)")
        if (photos / MANIFEST).exists():
            items = Manifest.load(photos / MANIFEST).items
            self._files = {Path(it["file"]).stem: photos / it["file"] for it in items}
            self._splits = {Path(it["file"]).stem: it["split"] for it in items}
        elif photos.is_dir():
            self._files, self._splits = _images(photos), {}
        else:
            raise DatasetError(f"{photos}: not a folder of aligned photos")
        if not self._files:
            raise DatasetError(f"{photos}: no photos")

    def __len__(self) -> int:
        return len(self._files)

    def names(self) -> list[str]:
        return list(self._files)

    def split(self, key: str) -> str:
        return self._splits.get(key, "train")

    def pairs(self, keys: list[str]) -> list[Pair]:
        """Stylize a batch of photos at once (teachers batch their networks). A photo that cannot be read
        is left out with a warning (``train pairs`` into the same folder again tries it again)."""
        images = {k: read_image_file(self._files[k]) for k in keys}
        for key in [k for k in keys if images[k] is None]:
            log.warning("%s: %s, skipped", self._files[key], UNREADABLE)
        keys = [k for k in keys if images[k] is not None]
        if not keys:
            return []
        originals = [to_bgr_uint8(images[k]) for k in keys]
        out = []
        for key, original, stylized in zip(keys, originals, self.teacher(originals)):
            if stylized.shape != original.shape:
                raise DatasetError(f"teacher {self.name}: returned {stylized.shape} for a {original.shape} photo")
            if self.size is not None:
                photo, stylized = (resize_antialiased(im, self.size) for im in (original, stylized))
            else:
                photo = original
            alpha = None
            if self.targets is not None:
                alpha, skin = self.targets(photo)
                if self.skin_tone:
                    stylized = keep_skin_tone(photo, stylized, skin, self.targets.skin)
            out.append(Pair(key, photo, stylized, self.split(key), alpha))
        return out

    def pair(self, key: str) -> Pair:
        pairs = self.pairs([key])
        if not pairs:
            raise DatasetError(f"{self._files[key]}: {UNREADABLE}")
        return pairs[0]


def _read_record(path: Path) -> dict:
    """A JSON object a pairs folder keeps (pairs.json, teacher.json); DatasetError when it is damaged."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc}); restore it, or make the pairs in a new --out") from exc
    if not isinstance(record, dict):
        raise DatasetError(f"{path}: not a JSON object; restore it, or make the pairs in a new --out")
    return record


def check_source(out: Path, record: dict) -> None:
    """Refuse to mix pairs of two teachers (or settings) in one folder; the same ones resume. A folder with
    no pair yet (a run that failed before its first) takes any teacher and settings."""
    stylized = out / "stylized"
    if not (stylized.is_dir() and any(stylized.iterdir())):
        return
    path = out / SOURCE_FILE
    if not path.exists():
        raise TrainingError(f"{out}: already holds stylized images from another teacher; write to a new --out")
    old = _read_record(path)
    if old != record:
        changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        raise TrainingError(
            f"{out}: holds pairs made by teacher '{old.get('teacher', {}).get('id')}' with other settings"
            f" ({', '.join(changed)} differ); write to a new --out"
        )


def split_pairs(pairs: Path | str, limit: int | None = None, split: str = "heldout") -> list[Pair]:
    """The pairs of one split ("heldout" unless told) of a pairs folder; DatasetError when it has none.

    With ``limit``, pairs evenly spaced over the split (names are grouped by source, so the first ones
    would all come from one).
    """
    source = FolderPairs(pairs)
    keys = [k for k in source.names() if source.split(k) == split]
    if limit and len(keys) > limit:
        keys = [keys[i * len(keys) // limit] for i in range(limit)]
    if not keys:
        raise DatasetError(f"{pairs}: no '{split}' pairs (pairs.json marks none '{split}')")
    return source.pairs(keys)


def write_pairs(
    source: PairSource, out: Path, batch: int = 8, progress: Progress | None = None, abort: AbortFlag | None = None
) -> int:
    """Write every pair of ``source`` to ``out/photos`` + ``out/stylized`` (PNG) [+ ``out/alpha``] and
    ``out/pairs.json``.

    Pairs already on disk are kept, so an interrupted run resumes. Returns the number of pairs written now.
    """
    progress = progress or Progress("none")
    abort = abort if abort is not None else AbortFlag()
    for sub in ("photos", "stylized"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    keys = source.names()
    todo = [k for k in keys if not (out / "stylized" / f"{k}.png").exists()]
    progress.start(f"pairs:{source.name}", len(keys), len(keys) - len(todo))
    written = 0
    for i in range(0, len(todo), batch):
        if abort:
            log.warning(
                "pairs aborted with %d of %d written; rerun to resume", len(keys) - len(todo) + written, len(keys)
            )
            break
        for pair in source.pairs(todo[i : i + batch]):
            cv2.imwrite(str(out / "photos" / f"{pair.key}.png"), pair.photo)
            if pair.alpha is not None:
                (out / ALPHA_DIR).mkdir(exist_ok=True)
                cv2.imwrite(str(out / ALPHA_DIR / f"{pair.key}.png"), pair.alpha)
            tmp = out / "stylized" / f"{pair.key}.tmp.png"  # the stylized file marks a finished pair
            cv2.imwrite(str(tmp), pair.stylized)
            os.replace(tmp, out / "stylized" / f"{pair.key}.png")
            written += 1
        progress.update(len(keys) - len(todo) + written, len(keys))
    meta = {"source": source.name, "splits": {k: source.split(k) for k in keys}}
    atomic_write_text(out / PAIRS_FILE, json.dumps(meta, indent=1))
    progress.finish(pairs=len(keys))
    return written


@dataclass(frozen=True)
class ResolvedTeacher:
    """A teacher named on the command line: the callable and what a pairs folder records of it."""

    name: str
    stylize: Teacher
    record: dict
    colour: bool = True  # False for black-and-white styles, whose white paper is no skin tone to keep


def resolve_teacher(name: str, device: str = "cpu", threads: int = 2) -> ResolvedTeacher:
    """``ink``, ``ugatit:RUN`` (a U-GAT-IT run or its model file), ``tier:BUNDLE:TIER`` (an installed
    style's tier) or a teacher folder / teacher.json."""
    if name.startswith("tier:"):
        return _bundle_tier_teacher(name.removeprefix("tier:"), threads)
    if name == "ink":
        from training.teachers.ink import InkTeacher

        return ResolvedTeacher("ink", InkTeacher(device=device), {"id": "ink", "kind": "procedural"})
    if name.startswith("ugatit:"):
        from training.ugatit.translate import UgatitTeacher

        teacher = UgatitTeacher(name.split(":", 1)[1], device)
        return ResolvedTeacher(f"ugatit-{teacher.info['sha256'][:12]}", teacher, {"id": "ugatit", **teacher.info})
    from training.teachers.network import open_teacher

    teacher = open_teacher(name, threads)
    if teacher.spec.kind != "stylizer":
        raise DatasetError(f"{teacher.spec.path}: a '{teacher.spec.kind}' model cannot make pairs (kind: stylizer)")
    return ResolvedTeacher(teacher.spec.id, teacher, teacher.spec.record(), colour=not _monochrome(teacher))


def _bundle_tier_teacher(spec: str, threads: int) -> ResolvedTeacher:
    """A style's bigger tier as the teacher of its smaller one (a *teacher assistant*): the teacher may
    redraw geometry that a 0.26 GMAC tier cannot follow, while the high tier's output is a function such a
    tier can come close to (docs/styles.md, anime's light tier). The pairs record the first teacher's
    licence, which the bundle inherits, and which tier of which files taught them."""
    from engine.backends import load_tier
    from engine.bundle import load_bundle
    from engine.errors import StylecastError

    folder, _, tier_id = spec.rpartition(":")
    if not folder or not tier_id:
        raise DatasetError(f"teacher 'tier:{spec}': name a bundle folder and its tier, e.g. tier:models/anime:high")
    try:
        bundle = load_bundle(Path(folder))
        model = load_tier(bundle, bundle.tier(tier_id), "onnx", threads)
    except (StylecastError, OSError) as exc:
        raise DatasetError(f"teacher 'tier:{spec}': {exc}") from exc
    onnx = next(f for f in model.tier.files if f.runtime == "onnx")
    taught_by = {"bundle": bundle.id, "tier": tier_id, "file": onnx.file, "sha256": onnx.sha256}
    first = bundle.manifest.created.get("teacher")
    if not (isinstance(first, dict) and "license" in first):  # a style made without a recorded teacher
        first = {"id": f"{bundle.id}-{tier_id}", "kind": "bundle tier", "license": bundle.manifest.license}
    record = {**first, "via": taught_by}

    def stylize(crops: list[np.ndarray]) -> list[np.ndarray]:
        return [model.stylize(crop)[:, :, :3] for crop in crops]

    return ResolvedTeacher(f"{bundle.id}-{tier_id}", stylize, record, colour=not _monochrome(stylize))


def _monochrome(teacher) -> bool:
    """True when the teacher draws in black and white (its output of a colour test face has no chroma)."""
    from engine.sources import astronaut

    face = astronaut(256)
    lab = cv2.cvtColor(teacher([face])[0], cv2.COLOR_BGR2LAB).astype(np.float32)
    return float(np.abs(lab[:, :, 1:] - 128).mean()) < 2.0


@dataclass(frozen=True)
class PairsConfig:
    size: int | None = opt(None, "side of the written pairs (default: as the photos are stored)")
    alpha: bool = opt(True, "write alpha targets (needs --masks)")
    skin_tone: str = opt(
        "auto",
        "keep the photo's skin tone (auto: for colour teachers, when --masks has the skin model)",
        choices=("auto", "keep", "teacher"),
    )
    batch: int = opt(8, "photos stylized per teacher call")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher",
        default="ink",
        help="'ink', 'ugatit:RUN' (a U-GAT-IT run), 'tier:BUNDLE:TIER' (a style's tier) or a teacher folder",
    )
    parser.add_argument("--photos", type=Path, required=True, help="a `train prepare` folder or aligned photos")
    parser.add_argument("--out", type=Path, required=True, help="pairs folder to write (photos/, stylized/)")
    parser.add_argument("--masks", type=Path, help="mask-model folder (skin_clothes_hair.json, hair.json)")
    add_config_arguments(parser, PairsConfig)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch and teacher runtimes)")


def make_pairs(
    teacher_name: str,
    photos: Path,
    out: Path,
    cfg: PairsConfig,
    progress: Progress,
    abort: AbortFlag,
    masks: Path | None = None,
    device: str = "cpu",
    threads: int = 1,
) -> int:
    """The ``pairs`` stage: stylize ``photos`` with a teacher into the pairs folder ``out`` (resumable);
    returns the number of pairs written now. ``threads`` is the teacher runtimes' own setting."""
    from training.teachers.masks import BlendTargets, open_mask_models

    teacher = resolve_teacher(teacher_name, device, threads)
    models = open_mask_models(masks, threads) if cfg.alpha else {}
    skin_tone = cfg.skin_tone == "keep" or (
        cfg.skin_tone == "auto" and teacher.colour and "skin_clothes_hair" in models
    )
    record = {
        "teacher": teacher.record,
        "size": cfg.size,
        "alpha": cfg.alpha,
        "masks": sorted(m.spec.sha256 for m in models.values()),
        "skin_tone": "keep" if skin_tone else "teacher",
    }
    check_source(out, record)
    targets = BlendTargets(models) if cfg.alpha else None
    try:  # the photos and the mask models are checked before the pairs folder is started
        source = TeacherPairs(photos, teacher.stylize, teacher.name, cfg.size, targets, skin_tone)
        if targets is not None:
            from engine.sources import astronaut

            targets(astronaut(cfg.size or 256))  # a mask model that cannot run fails here
        options = {"teacher": teacher_name, "photos": str(photos), "batch": cfg.batch, **record}
        run_dir = RunDir.open(out, "pairs", options)
    except BaseException:
        if targets is not None:
            targets.close()
        raise
    try:
        atomic_write_text(out / SOURCE_FILE, json.dumps(record, indent=1))
        written = write_pairs(source, out, cfg.batch, progress, abort)
    finally:
        run_dir.close()
        if targets is not None:
            targets.close()
    log.info("%d pairs written now, %d in %s (skin tone: %s)", written, len(source), out, record["skin_tone"])
    return written


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    abort = AbortFlag()
    with abort_on_signals(abort):
        cfg = apply_flags(PairsConfig(), args)
        make_pairs(
            args.teacher,
            args.photos,
            args.out,
            cfg,
            Progress(args.progress),
            abort,
            args.masks,
            args.device,
            args.threads,
        )
    return ABORTED_EXIT if abort else 0
