"""Training configuration and the ``tiny`` / ``cpu`` / ``gpu`` presets of the StyleGAN2-ADA stage.

Presets are sized on the throughput measured in ../shared/DESIGN.md: ``tiny`` runs a step in well under a
second (tests), ``cpu`` trains 64² with channels ≤ 128 on one or two cores, ``gpu`` is the 256²
configuration of the official "paper256" setup (channel base 16384, max 512).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from training.errors import TrainingError
from training.stylegan.networks import DiscriminatorConfig, GeneratorConfig

AUGMENT_MODES = ("ada", "fixed", "none")
DISCRIMINATORS = ("stylegan", "projected")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    resolution: int = 64
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 4
    channel_base: int = 8192
    channel_max: int = 128
    mbstd_group: int = 4
    batch: int = 8
    batch_gpu: int = 8
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    r1_gamma: float = 0.1
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    ema_kimg: float = 2.5
    ema_rampup: float | None = 0.05
    augment: str = "ada"
    aug_p: float = 0.0
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 10.0
    discriminator: str = "stylegan"
    projected_channels: int = 64
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    freeze_d: int = 0
    freeze_g: tuple[str, ...] = ()
    g_lr_mult: tuple[tuple[str, float], ...] = ()
    d_lr_mult: tuple[tuple[str, float], ...] = ()
    seed: int = 0

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
