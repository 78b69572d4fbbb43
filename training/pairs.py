"""(photo, stylized) pairs for the student stage, behind one :class:`PairSource` protocol.

Sources:

* :class:`FolderPairs` — a folder with ``photos/`` and ``stylized/`` holding images of the same names
  (and optionally ``pairs.json`` giving each pair's split). This is what the student trains on.
* :class:`TeacherPairs` — aligned photos stylized on demand by a teacher callable (the procedural ink
  teacher now; U-GAT-IT translation and StyleGAN fusion pairs plug in the same way).

``train pairs`` materialises a source into a pairs folder (resumable: pairs already written are kept).
The registry of teacher sources is a literal table (:data:`TEACHERS`).
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

from engine.errors import DatasetError
from training.prepare import IMAGE_EXTS, MANIFEST, Manifest
from training.runs import AbortFlag, Progress, RunDir, abort_on_signals

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.json"


@dataclass(frozen=True)
class Pair:
    """One training pair: aligned (S, S, 3) uint8 BGR photo and its stylized version."""

    key: str
    photo: np.ndarray
    stylized: np.ndarray
    split: str = "train"


class PairSource(Protocol):
    """Indexable (photo, stylized) pairs."""

    name: str

    def __len__(self) -> int: ...

    def names(self) -> list[str]: ...

    def split(self, key: str) -> str: ...

    def pair(self, key: str) -> Pair: ...

    def pairs(self, keys: list[str]) -> list[Pair]: ...


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: not a readable image")
    return image


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
        self._splits: dict[str, str] = json.loads(meta.read_text()).get("splits", {}) if meta.exists() else {}

    def __len__(self) -> int:
        return len(self._photos)

    def names(self) -> list[str]:
        return list(self._photos)

    def split(self, key: str) -> str:
        return self._splits.get(key, "train")

    def pair(self, key: str) -> Pair:
        photo, stylized = _read(self._photos[key]), _read(self._stylized[key])
        if photo.shape != stylized.shape:
            raise DatasetError(
                f"{self._stylized[key]}: size {stylized.shape[:2]} differs from its photo {photo.shape[:2]}"
            )
        return Pair(key, photo, stylized, self.split(key))

    def pairs(self, keys: list[str]) -> list[Pair]:
        return [self.pair(k) for k in keys]


Teacher = Callable[[list[np.ndarray]], list[np.ndarray]]


class TeacherPairs:
    """Aligned photos (a ``train prepare`` folder or a plain image folder) stylized by a teacher."""

    def __init__(self, photos: Path | str, teacher: Teacher, name: str) -> None:
        photos = Path(photos)
        self.name = name
        self.teacher = teacher
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
        """Stylize a batch of photos at once (teachers batch their networks)."""
        photos = [_read(self._files[k]) for k in keys]
        return [Pair(k, p, s, self.split(k)) for k, p, s in zip(keys, photos, self.teacher(photos))]

    def pair(self, key: str) -> Pair:
        return self.pairs([key])[0]


def write_pairs(
    source: PairSource, out: Path, batch: int = 8, progress: Progress | None = None, abort: AbortFlag | None = None
) -> int:
    """Write every pair of ``source`` to ``out/photos`` + ``out/stylized`` (PNG) and ``out/pairs.json``.

    Pairs already on disk are kept, so an interrupted run resumes. Returns the number of pairs written now.
    """
    progress = progress or Progress("none")
    abort = abort if abort is not None else AbortFlag()
    (out / "photos").mkdir(parents=True, exist_ok=True)
    (out / "stylized").mkdir(parents=True, exist_ok=True)
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
            tmp = out / "stylized" / f"{pair.key}.tmp.png"  # the stylized file marks a finished pair
            cv2.imwrite(str(tmp), pair.stylized)
            os.replace(tmp, out / "stylized" / f"{pair.key}.png")
            written += 1
        progress.update(len(keys) - len(todo) + written, len(keys))
    meta = {"source": source.name, "splits": {k: source.split(k) for k in keys}}
    (out / PAIRS_FILE).write_text(json.dumps(meta, indent=1))
    progress.finish(pairs=len(keys))
    return written


def _ink(device: str) -> Teacher:
    from training.teachers.ink import InkTeacher

    return InkTeacher(device=device)


# Teacher registry: name -> factory(device). Later stages add their translators here.
TEACHERS: dict[str, Callable[[str], Teacher]] = {"ink": _ink}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default="ink", choices=sorted(TEACHERS), help="procedural teacher")
    parser.add_argument("--photos", type=Path, required=True, help="a `train prepare` folder or aligned photos")
    parser.add_argument("--out", type=Path, required=True, help="pairs folder to write (photos/, stylized/)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    options = {"teacher": args.teacher, "photos": str(args.photos), "batch": args.batch}
    run_dir = RunDir.open(args.out, "pairs", options)
    abort = AbortFlag()
    try:
        source = TeacherPairs(args.photos, TEACHERS[args.teacher](args.device), args.teacher)
        with abort_on_signals(abort):
            written = write_pairs(source, args.out, args.batch, Progress(args.progress), abort)
    finally:
        run_dir.close()
    log.info("%d pairs written now, %d in %s", written, len(source), args.out)
    return 1 if abort else 0
