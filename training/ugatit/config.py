"""Training configuration and the ``tiny`` / ``cpu`` / ``gpu`` presets of the U-GAT-IT stage.

Loss weights, optimizer and schedule are the paper's: adversarial 1, cycle 10, identity 10, CAM 1000;
Adam(lr 1e-4, β 0.5/0.999, weight decay 1e-4); the learning rate decays linearly to 0 over the second
half of the run's ``--steps``.

Presets, sized on the throughput measured in ../shared/DESIGN.md (U-GAT-IT 128², ngf 32, batch 4: 0.37 it/s on
2 cores, i.e. ~1.3k iterations an hour — far from the ~100k a converged model needs, so ``cpu`` proves
the stage and gives a first look, it does not train a usable translator):

* ``tiny``: 32², ngf 8, 5-/3-layer discriminators — tests, a step takes milliseconds.
* ``cpu``: 128², ngf/ndf 32, 4 blocks, batch 4, the full (not light) generator, 7-/5-layer discriminators.
* ``gpu``: the paper's setting — 256², ngf/ndf 64, batch 1, full generator.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from training.errors import TrainingError
from training.options import opt
from training.ugatit.networks import DiscriminatorConfig, GeneratorConfig

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    img_size: int = opt(128, "training crop side")
    ngf: int = opt(32, "generator base width")
    ndf: int = opt(32, "discriminator base width")
    n_blocks: int = opt(4, "residual blocks of the generator")
    light: bool = opt(False, "the paper's light generator (a pooled MLP for AdaLIN's γ, β)")
    global_layers: int = opt(7, "layers of the global discriminator")
    local_layers: int = opt(5, "layers of the local discriminator")
    batch: int = opt(4, "images of each domain per step")
    lr: float = opt(1e-4, "Adam learning rate")
    beta1: float = opt(0.5, "Adam β1")
    beta2: float = opt(0.999, "Adam β2")
    weight_decay: float = opt(1e-4, "Adam weight decay")
    adv_weight: float = opt(1.0, "weight of the adversarial losses")
    cycle_weight: float = opt(10.0, "weight of the cycle L1")
    identity_weight: float = opt(10.0, "weight of the identity L1")
    cam_weight: float = opt(1000.0, "weight of the CAM losses")
    decay: bool = opt(True, "linear lr decay to 0 over the second half of the run")
    jitter: float = opt(30 / 256, "resize to (1 + jitter)·S, then random-crop S (the reference's 256 → 286 → 256)")
    flip: bool = opt(True, "random horizontal flips")
    ema_beta: float = opt(0.999, "EMA of both generators (translation and samples use it)")
    precision: str = opt("fp32", "autocast precision", choices=PRECISIONS)
    seed: int = opt(0, "random seed")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TrainingError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.batch < 1:
            raise TrainingError(f"--batch must be ≥ 1, got {self.batch}")
        if not 0.0 <= self.ema_beta < 1.0:
            raise TrainingError(f"ema_beta must be in [0, 1), got {self.ema_beta}")
        self.generator()  # validate the shapes early, with the networks' own messages
        self.discriminator("global")
        self.discriminator("local")

    @property
    def load_size(self) -> int:
        """Side at which images are held in memory; each step random-crops ``img_size`` from it."""
        return self.img_size + round(self.img_size * self.jitter)

    def generator(self) -> GeneratorConfig:
        return GeneratorConfig(img_size=self.img_size, ngf=self.ngf, n_blocks=self.n_blocks, light=self.light)

    def discriminator(self, kind: str) -> DiscriminatorConfig:
        layers = {"global": self.global_layers, "local": self.local_layers}[kind]
        return DiscriminatorConfig(img_size=self.img_size, ndf=self.ndf, n_layers=layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-normal form, so it compares equal to what options.json holds."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(img_size=32, ngf=8, ndf=8, n_blocks=2, global_layers=5, local_layers=3, batch=2, ema_beta=0.9),
    "cpu": TrainConfig(),
    "gpu": TrainConfig(img_size=256, ngf=64, ndf=64, batch=1),
}
