"""Training configuration and the ``tiny`` / ``cpu`` / ``gpu`` presets of the StyleGAN2-ADA stage.

Presets are sized on the throughput measured in ../shared/DESIGN.md: ``tiny`` runs a step in well under a
second (tests), ``cpu`` trains 64² with channels ≤ 128 on one or two cores, ``gpu`` is the 256²
configuration of the official "paper256" setup (channel base 16384, max 512).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from training.errors import TrainingError
from training.options import opt
from training.stylegan.networks import DiscriminatorConfig, GeneratorConfig

AUGMENT_MODES = ("ada", "fixed", "none")
DISCRIMINATORS = ("stylegan", "projected")
PRECISIONS = ("fp32", "bf16")


def lr_mult(item: str) -> tuple[str, float]:
    """``PREFIX=MULT`` (a learning-rate multiplier on the command line) → (prefix, multiplier)."""
    prefix, sep, mult = item.partition("=")
    try:
        if not sep:
            raise ValueError
        return prefix, float(mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects PREFIX=MULT, got {item!r}") from None


@dataclass(frozen=True)
class TrainConfig:
    resolution: int = opt(64, "image side")
    z_dim: int = opt(256, "latent size")
    w_dim: int = opt(256, "intermediate latent size")
    mapping_layers: int = opt(4, "layers of the mapping network")
    channel_base: int = opt(8192, "channel budget (channels at resolution r: base / r, capped)")
    channel_max: int = opt(128, "most channels of a layer")
    mbstd_group: int = opt(4, "minibatch standard deviation group size")
    batch: int = opt(8, "images per iteration (all ranks together)")
    batch_gpu: int = opt(8, "images per round and process")
    g_lr: float = opt(0.0025, "generator learning rate")
    d_lr: float = opt(0.0025, "discriminator learning rate")
    r1_gamma: float = opt(0.1, "R1 regularisation weight")
    r1_interval: int = opt(16, "iterations between R1 steps (lazy regularisation)")
    pl_weight: float = opt(2.0, "path-length regularisation weight (0: off)")
    pl_interval: int = opt(4, "iterations between path-length steps")
    pl_batch_shrink: int = opt(2, "batch divisor of the path-length step")
    pl_decay: float = opt(0.01, "decay of the path-length mean")
    style_mixing: float = opt(0.9, "probability of mixing two latents")
    ema_kimg: float = opt(2.5, "half-life of the G EMA in thousands of images")
    ema_rampup: float | None = opt(0.05, "EMA ramp-up as a fraction of the images shown")
    augment: str = opt("ada", "augmentation: ada (adaptive), fixed p, or none", choices=AUGMENT_MODES)
    aug_p: float = opt(0.0, "initial (ada) or fixed augmentation probability")
    ada_target: float = opt(0.6, "ADA's target for the sign of the real logits")
    ada_interval: int = opt(4, "iterations between ADA updates")
    ada_kimg: float = opt(10.0, "kimg for ADA's p to go from 0 to 1")
    discriminator: str = opt("stylegan", "discriminator kind", choices=DISCRIMINATORS)
    projected_channels: int = opt(64, "channels of the projected discriminator's heads")
    precision: str = opt("fp32", "autocast precision", choices=PRECISIONS)
    channels_last: bool = opt(False, "channels-last memory format")
    compile: bool = opt(False, "torch.compile D's main pass")
    freeze_d: int = opt(0, "freeze the first N discriminator blocks (from the input; Freeze-D)")
    freeze_g: tuple[str, ...] = opt((), "generator parameter prefixes to freeze, e.g. mapping")
    g_lr_mult: tuple[tuple[str, float], ...] = opt(
        (), "G learning-rate multipliers, e.g. synthesis.b4=0.1", parse=lr_mult
    )
    d_lr_mult: tuple[tuple[str, float], ...] = opt((), "D learning-rate multipliers, e.g. b64=0.1 b4=2", parse=lr_mult)
    seed: int = opt(0, "random seed")

    def __post_init__(self) -> None:
        if self.augment not in AUGMENT_MODES:
            raise TrainingError(f"--augment must be one of {AUGMENT_MODES}, got {self.augment!r}")
        if self.discriminator not in DISCRIMINATORS:
            raise TrainingError(f"--discriminator must be one of {DISCRIMINATORS}, got {self.discriminator!r}")
        if self.precision not in PRECISIONS:
            raise TrainingError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.batch % self.batch_gpu:
            raise TrainingError(f"--batch {self.batch} must be a multiple of --batch-gpu {self.batch_gpu}")
        if self.batch_gpu % max(self.pl_batch_shrink, 1) or self.batch_gpu < self.pl_batch_shrink:
            raise TrainingError(f"--batch-gpu {self.batch_gpu} must be a multiple of pl_batch_shrink")

    def generator(self) -> GeneratorConfig:
        return GeneratorConfig(
            resolution=self.resolution,
            z_dim=self.z_dim,
            w_dim=self.w_dim,
            mapping_layers=self.mapping_layers,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
        )

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(
            resolution=self.resolution,
            channel_base=self.channel_base,
            channel_max=self.channel_max,
            mbstd_group_size=self.mbstd_group,
        )

    def with_generator(self, g: GeneratorConfig) -> TrainConfig:
        """This config with the architecture of a base generator (transfer learning keeps the base's shape)."""
        return replace(
            self,
            resolution=g.resolution,
            z_dim=g.z_dim,
            w_dim=g.w_dim,
            mapping_layers=g.mapping_layers,
            channel_base=g.channel_base,
            channel_max=g.channel_max,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-normal form (tuples as lists), so it compares equal to what options.json holds."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["freeze_g"] = tuple(data.get("freeze_g", ()))
        for key in ("g_lr_mult", "d_lr_mult"):
            data[key] = tuple((str(k), float(v)) for k, v in data.get(key, ()))
        return cls(**data)


PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        resolution=16,
        z_dim=32,
        w_dim=32,
        mapping_layers=2,
        channel_base=256,
        channel_max=32,
        batch=4,
        batch_gpu=4,
        r1_gamma=0.01,
        ema_kimg=0.04,
        ada_kimg=0.5,
        ada_interval=2,
        projected_channels=16,
    ),
    "cpu": TrainConfig(),
    "gpu": TrainConfig(
        resolution=256,
        z_dim=512,
        w_dim=512,
        mapping_layers=8,
        channel_base=16384,
        channel_max=512,
        batch=32,
        batch_gpu=16,
        r1_gamma=1.0,
        ema_kimg=10.0,
        ada_kimg=500.0,
        precision="bf16",
        projected_channels=128,
    ),
}

# The transfer-learning tricks against losing variety (used with --base unless --no-variety-tricks):
# keep the mapping network (the latent distribution), slow down the coarse layers that carry pose and
# identity, and freeze the discriminator's first blocks (Freeze-D).
VARIETY_TRICKS: dict[str, Any] = {
    "freeze_g": ("mapping",),
    "g_lr_mult": (("synthesis.b4", 0.1), ("synthesis.b8", 0.3)),
    "freeze_d": 2,
}
