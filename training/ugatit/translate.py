"""A trained U-GAT-IT as a pair teacher: ``train pairs --teacher ugatit:RUN``.

:class:`UgatitTeacher` is a :data:`training.pairs.Teacher` (a batch of aligned BGR photos → their
stylized versions): each photo is resized to the generator's side (area filter), translated A→B by
the EMA generator (or the raw one), and the result resized back to the photo's size (cubic), so the
pair has equal sizes as :class:`training.pairs.FolderPairs` requires. The pairs stage records which
checkpoint (path, sha256, step, weights, direction) made a pairs folder and refuses to mix in pairs of
another.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from engine.bundle import sha256_file
from training.errors import TrainingError
from training.images import resize_antialiased, to_tensor, to_uint8
from training.modules import load_strict
from training.runs import find_model_file, load_model_file
from training.ugatit.networks import Generator, GeneratorConfig
from training.ugatit.train import ARCH

log = logging.getLogger(__name__)

DIRECTIONS = {"A2B": "genA2B", "B2A": "genB2A"}
WEIGHTS = ("ema", "raw")


def load_translator(path: Path | str, direction: str = "A2B", weights: str = "ema") -> tuple[Generator, dict]:
    """The generator of a U-GAT-IT checkpoint, in eval mode, and the checkpoint's description."""
    if direction not in DIRECTIONS or weights not in WEIGHTS:
        raise TrainingError(f"direction must be one of {sorted(DIRECTIONS)} and weights one of {WEIGHTS}")
    file = find_model_file(path)
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
        x = to_tensor([resize_antialiased(p, self.size) for p in photos], "bgr", self.device)
        out = to_uint8(self.G(x)[0], "bgr")
        return [resize_antialiased(o, p.shape[0], p.shape[1]) for o, p in zip(out, photos)]
