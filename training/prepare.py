"""``train prepare``: aligned real-face crops from photo folders and videos, with the run-time alignment.

Every face goes through :class:`engine.tracking.LargestFaceFinder` (mediapipe face mesh) and
:func:`engine.align.similarity_from_landmarks` / :func:`engine.align.warp_crop` — the very code the live
engine uses — so a training crop frames a face exactly as the app will. Only the largest face of an
image or frame is used. Broken files, files without a face and faces too small to give a sharp crop are
skipped with a logged reason; near-duplicates (consecutive video frames, re-encoded copies) are removed.

Output folder: ``crops/*.png`` (size² BGR) and ``manifest.json``::

    {"size": 256, "template": "ffhq", "items": [{"file", "source", "frame", "face_side", "split"}],
     "skipped": [{"source", "frame", "reason"}], "sources_done": [...]}

``split`` is "train" or "heldout", decided per *source* (a photo or a whole video) by a hash of its
name, so frames of one clip never straddle the split. The manifest is rewritten after every source:
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.align import FFHQ_TEMPLATE, similarity_from_landmarks, warp_crop
from engine.errors import SourceError
from engine.frames import read_image_file, to_bgr_uint8
from engine.sources import VideoFileSource
from engine.tracking import LargestFaceFinder
from training.errors import DatasetError
from training.loop import ABORTED_EXIT
from training.options import add_config_arguments, apply_flags, opt
from training.runs import AbortFlag, Progress, RunDir, abort_on_signals, atomic_write_text

log = logging.getLogger(__name__)

UNREADABLE = "not a readable image (broken, truncated or not an image)"  # a file cv2.imdecode refuses

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PrepareConfig:
    size: int = opt(256, "side of the aligned crops")
    every_seconds: float = opt(0.5, "video frame sampling interval (seconds)")
    max_frames_per_video: int = opt(60, "frames taken from one video at most")
    min_face: int = opt(64, "smallest accepted face side in source pixels (smaller faces upscale to mush)")
    dedup: float = opt(3.0, "mean |grey difference| of 32² thumbnails below which a crop is a duplicate")
    holdout: float = opt(0.15, "fraction of sources held back for evaluation")


@dataclass
class Manifest:
    size: int
    template: str
    items: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    sources_done: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text())
        return cls(data["size"], data["template"], data["items"], data["skipped"], data["sources_done"])

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1))


def split_of(source: str, holdout: float) -> str:
    """'heldout' for a stable pseudo-random ``holdout`` fraction of source names, else 'train'."""
    bucket = int(hashlib.sha1(source.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "heldout" if bucket < holdout else "train"


def find_sources(inputs: list[Path]) -> list[Path]:
    """Image and video files under ``inputs`` (files or folders, searched recursively), sorted."""
    found = []
    for root in inputs:
        if not root.exists():
            raise DatasetError(f"{root}: no such file or folder")
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        found += [p for p in paths if p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]
    if not found:
        raise DatasetError(f"no images or videos in {', '.join(map(str, inputs))}")
    return found


def thumbnail(crop: np.ndarray) -> np.ndarray:
    """(32, 32) float32 grey thumbnail used for near-duplicate detection (whole grey levels: a uint8 resize)."""
    return cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


class Thumbnails:
    """The thumbnails of the crops kept so far, asked whether a new one nearly duplicates any of them.

    A near-duplicate has a mean |grey difference| below ``threshold`` to some kept thumbnail. That mean
    is at least the difference of the two thumbnails' mean grey levels, so only thumbnails whose mean
    lies within ``threshold`` of the new one's can be duplicates: they are found by bisection in the
    means kept sorted, and only they are compared. The pruning is exact, not approximate: thumbnails
    hold whole grey levels, so every sum here (at most 255 · 1024 < 2²⁴) is exact in float32. The
    thumbnails live in one array grown by doubling, so adding one copies nothing.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._data = np.empty((64, 32, 32), np.float32)
        self._count = 0
        self._means: list[float] = []  # sorted
        self._order: list[int] = []  # row of self._data of each entry of self._means

    def is_duplicate(self, thumb: np.ndarray) -> bool:
        mean = float(thumb.mean())
        lo = bisect.bisect_right(self._means, mean - self.threshold)
        hi = bisect.bisect_left(self._means, mean + self.threshold)
        if lo >= hi:
            return False
        rows = self._data[self._order[lo:hi]]
        return float(np.abs(rows - thumb).mean(axis=(1, 2)).min()) < self.threshold

    def add(self, thumb: np.ndarray) -> None:
        if self._count == len(self._data):
            self._data = np.concatenate([self._data, np.empty_like(self._data)])
        self._data[self._count] = thumb
        mean = float(thumb.mean())
        at = bisect.bisect_right(self._means, mean)
        self._means.insert(at, mean)
        self._order.insert(at, self._count)
        self._count += 1


def align_face(
    image: np.ndarray, size: int, min_face: int, find: LargestFaceFinder
) -> tuple[np.ndarray | None, str, float]:
    """(crop or None, reason when None, face side in source pixels) for the largest face of ``image``."""
    landmarks = find(image)
    if landmarks is None:
        return None, "no face found", 0.0
    sim = similarity_from_landmarks(landmarks, FFHQ_TEMPLATE)
    if sim.side < min_face:
        return None, f"face too small ({sim.side:.0f} px < {min_face})", sim.side
    return warp_crop(image, sim, size), "", sim.side


def read_frames(path: Path, cfg: PrepareConfig) -> list[tuple[int, np.ndarray]]:
    """Sampled (frame index, BGR frame) pairs of a video, upright as a player shows it (the engine's video
    source: a phone clip's faces are found only when turned); raises DatasetError when it cannot be read."""
    try:
        video = VideoFileSource(path)
    except SourceError as exc:
        raise DatasetError(str(exc)) from exc
    step = max(1, round(video.fps * cfg.every_seconds))
    frames = []
    try:
        while len(frames) < cfg.max_frames_per_video and (frame := video.read(every=step)) is not None:
            frames.append((frame.index, frame.image))
    finally:
        video.close()
    if not frames:
        raise DatasetError(f"{path}: no decodable frames")
    return frames


def prepare(
    inputs: list[Path], out: Path, cfg: PrepareConfig, progress: Progress | None = None, abort: AbortFlag | None = None
) -> Manifest:
    """Align the faces of ``inputs`` into ``out`` (see module docstring); resumes an interrupted run."""
    progress = progress or Progress("none")
    abort = abort if abort is not None else AbortFlag()
    sources = find_sources(inputs)
    crops_dir = out / "crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    manifest = Manifest.load(path) if path.exists() else Manifest(cfg.size, FFHQ_TEMPLATE.name)
    if manifest.size != cfg.size:
        raise DatasetError(f"{path}: holds {manifest.size}² crops, asked for {cfg.size}²; use a new --out")
    thumbs_of = {}  # each crop decoded in turn: a resumed run over thousands of 512² crops holds only these
    for it in manifest.items:
        if (crop := read_image_file(out / it["file"])) is not None:
            thumbs_of[it["file"]] = thumbnail(to_bgr_uint8(crop))
    unreadable = {it["source"] for it in manifest.items if it["file"] not in thumbs_of}
    if unreadable:  # a damaged crop: its source is prepared again, with all its crops
        log.warning("unreadable crops in %s: preparing %s again", out, ", ".join(sorted(unreadable)))
        manifest.items = [it for it in manifest.items if it["source"] not in unreadable]
        manifest.sources_done = [s for s in manifest.sources_done if s not in unreadable]
    # what was skipped as unreadable is tried again (it may have been repaired since)
    manifest.skipped = [s for s in manifest.skipped if s["source"] in manifest.sources_done]
    thumbs = Thumbnails(cfg.dedup)
    for it in manifest.items:
        thumbs.add(thumbs_of[it["file"]])
    common = Path(os.path.commonpath([p.parent for p in sources]))
    progress.start("prepare", len(sources), len(manifest.sources_done))

    def skip(source: str, frame: int | None, reason: str) -> None:
        log.info("skip %s%s: %s", source, "" if frame is None else f" frame {frame}", reason)
        manifest.skipped.append({"source": source, "frame": frame, "reason": reason})

    with LargestFaceFinder() as find:
        for n, src in enumerate(sources, start=1):
            if abort:
                log.warning("prepare aborted after %d of %d sources; rerun to resume", n - 1, len(sources))
                break
            name = src.relative_to(common).as_posix()
            if name in manifest.sources_done:
                continue
            if src.suffix.lower() in VIDEO_EXTS:
                try:
                    frames = read_frames(src, cfg)
                except DatasetError as exc:
                    skip(name, None, str(exc).split(": ", 1)[-1])
                    continue  # not marked done: a repaired file is read on the next run
            else:
                image = read_image_file(src)
                if image is None:
                    skip(name, None, UNREADABLE)
                    continue
                frames = [(None, to_bgr_uint8(image))]
            for frame, image in frames:
                crop, reason, side = align_face(image, cfg.size, cfg.min_face, find)
                if crop is None:
                    skip(name, frame, reason)
                    continue
                thumb = thumbnail(crop)
                if thumbs.is_duplicate(thumb):
                    skip(name, frame, "near-duplicate of an earlier crop")
                    continue
                stem = name.replace("/", "__").rsplit(".", 1)[0] + ("" if frame is None else f"_f{frame:05d}")
                file = f"crops/{stem}.png"
                cv2.imwrite(str(out / file), crop)
                thumbs.add(thumb)
                split = split_of(name, cfg.holdout)
                manifest.items.append({"file": file, "source": name, "frame": frame, "face_side": side, "split": split})
            manifest.sources_done.append(name)
            manifest.save(path)
            progress.update(n, len(sources), crops=len(manifest.items))
    manifest.save(path)
    progress.finish(crops=len(manifest.items), skipped=len(manifest.skipped))
    if not manifest.items and not abort:
        raise DatasetError(f"no usable face in {len(sources)} files under {', '.join(map(str, inputs))}")
    return manifest


def load_crops(folder: Path, split: str | None = None) -> list[Path]:
    """Crop files of a prepared folder (optionally one split), or every image of a plain folder."""
    path = folder / MANIFEST
    if path.exists():
        items = Manifest.load(path).items
        return [folder / it["file"] for it in items if split is None or it["split"] == split]
    if split not in (None, "train"):
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS) if folder.is_dir() else []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", type=Path, help="photo folders, photos or videos")
    parser.add_argument("--out", type=Path, required=True, help="output folder (crops/ + manifest.json)")
    add_config_arguments(parser, PrepareConfig)


def prepare_folder(inputs: list[Path], out: Path, cfg: PrepareConfig, progress: Progress, abort: AbortFlag) -> Manifest:
    """The ``prepare`` stage: :func:`prepare` inside its run directory (options, log)."""
    run_dir = RunDir.open(out, "prepare", {"inputs": [str(p) for p in inputs], **asdict(cfg)})
    try:
        manifest = prepare(inputs, out, cfg, progress, abort)
    finally:
        run_dir.close()
    splits = {s: sum(it["split"] == s for it in manifest.items) for s in ("train", "heldout")}
    log.info("%d crops (%s), %d skipped -> %s", len(manifest.items), splits, len(manifest.skipped), out)
    return manifest


def run(args: argparse.Namespace) -> int:
    abort = AbortFlag()
    with abort_on_signals(abort):
        prepare_folder(args.inputs, args.out, apply_flags(PrepareConfig(), args), Progress(args.progress), abort)
    return ABORTED_EXIT if abort else 0
