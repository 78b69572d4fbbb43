"""The two image domains of U-GAT-IT and their reproducible, augmented batches.

Domain A is real aligned faces: a ``train prepare`` folder (only its ``train`` split; held-out faces
stay out of training) or plain folders of aligned crops. Domain B is style images: any folders (a
style set, the StyleGAN ``generate`` output). Both are decoded once by :mod:`training.imagefolder`
(broken files skipped with a logged reason) at ``load_size`` = (1 + jitter)·S.

Augmentation is the reference's: horizontal flip and a random S×S crop of the (1 + jitter)·S image.
A batch is a pure function of (seed, domain, iteration): epoch-wise permutations and per-iteration
crop/flip draws from their own generator, so resuming a run reproduces the batches exactly without
saving any sampler state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from training.errors import DatasetError
from training.imagefolder import MIN_IMAGES, ImageSet, load_image_folder
from training.images import to_tensor
from training.prepare import MANIFEST, load_crops

log = logging.getLogger(__name__)


def load_domain(folders: Iterable[Path | str], size: int, role: str) -> ImageSet:
    """Every usable image under ``folders`` at ``size``²; a prepared folder contributes its train split only.

    A folder without any usable image is logged and skipped; fewer than ``MIN_IMAGES`` in all is an error
    that says what was wrong with each folder.
    """
    folders = [Path(f) for f in folders]
    images: list[np.ndarray] = []
    paths: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    problems: list[str] = []
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(f"{folder}: not a folder of {role} images")
        prepared = (folder / MANIFEST).exists()
        try:
            loaded = load_image_folder(folder / "crops" if prepared else folder, size, min_images=1)
        except DatasetError as exc:
            log.warning("no usable %s images: %s", role, exc)
            problems.append(str(exc))
            continue
        if prepared:
            train = {p.resolve() for p in load_crops(folder, "train")}
            keep = [i for i, p in enumerate(loaded.paths) if p.resolve() in train]
            log.info("%s: %d of %d prepared crops are in the train split", folder, len(keep), len(loaded))
            loaded = ImageSet(loaded.images[keep], tuple(loaded.paths[i] for i in keep), loaded.skipped)
        images.extend(loaded.images)
        paths.extend(loaded.paths)
        skipped.extend(loaded.skipped)
    if len(paths) < MIN_IMAGES:
        names = ", ".join(str(f) for f in folders)
        raise DatasetError(
            f"{names}: only {len(paths)} usable {role} image(s), at least {MIN_IMAGES} are needed"
            + "".join(f"; {p}" for p in problems)
        )
    return ImageSet(np.stack(images), tuple(paths), tuple(skipped))


class DomainSampler:
    """Augmented batches ``[B, 3, S, S]`` in [-1, 1] from ``images`` ``[N, L, L, 3]`` uint8 RGB (L ≥ S)."""

    def __init__(self, images: np.ndarray, size: int, batch: int, seed: int, stream: int, flip: bool = True) -> None:
        if images.shape[1] < size:
            raise DatasetError(f"images are {images.shape[1]}², smaller than the {size}² training crops")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.size, self.batch, self.flip = size, batch, flip
        self.seed, self.stream = seed, stream
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def _generator(self, *key: int) -> torch.Generator:
        value = 0
        for k in (self.seed, self.stream, *key):
            value = (value * 1_000_003 + k) % (2**61 - 1)
        return torch.Generator().manual_seed(value)

    def indices(self, iteration: int) -> list[int]:
        """Images of ``iteration``'s batch: consecutive slices of per-epoch permutations."""
        n = len(self)
        out = []
        for k in range(iteration * self.batch, (iteration + 1) * self.batch):
            epoch, pos = divmod(k, n)
            if self._perm is None or self._perm[0] != epoch:
                self._perm = (epoch, torch.randperm(n, generator=self._generator(0, epoch)))
            out.append(int(self._perm[1][pos]))
        return out

    def batch_at(self, iteration: int, device: str | torch.device = "cpu") -> torch.Tensor:
        gen = self._generator(1, iteration)
        room = self.images.shape[1] - self.size
        offsets = torch.randint(0, room + 1, (self.batch, 2), generator=gen)
        flips = torch.rand(self.batch, generator=gen) < 0.5
        crops = []
        for j, i in enumerate(self.indices(iteration)):
            y, x = int(offsets[j, 0]), int(offsets[j, 1])
            crop = self.images[i, y : y + self.size, x : x + self.size]
            crops.append(crop.flip(1) if self.flip and flips[j] else crop)
        return to_tensor(torch.stack(crops).numpy(), "rgb", device)

    def fixed(self, n: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """The first ``n`` images, centre-cropped, unflipped: the sample-grid inputs."""
        o = (self.images.shape[1] - self.size) // 2
        crops = self.images[:n, o : o + self.size, o : o + self.size]
        return to_tensor(crops.numpy(), "rgb", device)
