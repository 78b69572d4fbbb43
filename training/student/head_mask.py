"""``train head-mask``: a small network that finds the head (face and hair) in an aligned crop. Export builds
it into new styles (``train export --head-mask``); :mod:`training.student.graft` adds it to installed ones.

A student's predicted alpha is drawn by its bottleneck, whose receptive field is about 50 px of the 256²
crop for the light tier and 80 px for the high tier. A beige wall beside a cheek looks like the cheek at
that scale, so the tiers' alphas spill over the backdrop (anime light: mean alpha 0.30 where the target
keeps the photo, 0.14 L1 to the target on held-out faces): a pale halo and a fogged background. The head
mask works at a quarter of the side and goes down to S/32, so every output pixel sees the whole crop.
It learns the same alpha targets from the photo alone (they come from the photo's skin and hair masks, not
from the teacher), so one head mask serves every style.

Each tier then blends through ``min(its alpha, head mask)``: the style shows where both say head. The
tier's alpha keeps the fine hair edge, the head mask removes the spill. Colour is untouched.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.blend import crop_edge_window
from training.errors import DatasetError, TrainingError
from training.images import to_uint8, to_uint8_tensor
from training.loop import ABORTED_EXIT, Budget, LoopOptions, resume, train_loop
from training.modules import count_params
from training.options import add_config_arguments, apply_flags, opt
from training.pairs import FolderPairs
from training.runs import (
    AbortFlag,
    Progress,
    RunDir,
    StageContext,
    abort_on_signals,
    find_model_file,
    load_model_file,
    seed_everything,
)
from training.student.augment import AugmentConfig, colour_jitter, mirror
from training.student.networks import InvertedResidual, conv_bn, count_macs, ds_conv

log = logging.getLogger(__name__)

HELDOUT_FILE = "heldout.json"  # the trained head mask's L1 on the held-out pairs, for the bundles it joins
HEAD_MASK_LINE = (
    "Each tier blends through min(its alpha, a head mask): a small network that sees the whole crop and finds"
    " the face and hair (train head-mask), so the style does not spill over the backdrop."
)


class HeadMaskNet(nn.Module):
    """(N, 3, S, S) RGB [-1, 1] -> (N, 1, S, S) head mask in [-1, 1] (-1 keeps the photo, 1 shows the style).

    Average-pools the crop by ``scale``, then a small U-Net down to 1/8 of that (S/32) and back; the mask
    is resized bilinearly to S. The alpha targets are feathered (σ 5 px at 256²), so a quarter-resolution
    mask loses little; the tier's own alpha keeps the finer edge (see the module docstring)."""

    arch = "head_mask"

    def __init__(self, width: int = 16, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.enc1 = conv_bn(3, width, 3, 2)
        self.enc2 = ds_conv(width, 2 * width, 2)
        self.enc3 = ds_conv(2 * width, 4 * width, 2)
        self.body = nn.Sequential(InvertedResidual(4 * width, 2, True), InvertedResidual(4 * width, 2, True))
        self.dec2 = ds_conv(4 * width, 2 * width)
        self.dec1 = ds_conv(2 * width, width)
        self.dec0 = ds_conv(width, width)
        self.head = nn.Conv2d(width, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(x, self.scale)
        e1 = self.enc1(small)
        e2 = self.enc2(e1)
        h = self.body(self.enc3(e2))
        h = self.dec2(_twice(h)) + e2
        h = self.dec1(_twice(h)) + e1
        mask = torch.tanh(self.head(self.dec0(_twice(h))))
        # the reshape leaves onnxruntime's blocked layout at S/scale, so the resize to S runs on one plain
        # channel, not on one padded to a block of 16 (0.36 ms of the head mask's 0.93 ms at S = 256, scale 4)
        plain = mask.reshape(-1, 1, *mask.shape[-2:])
        return F.interpolate(plain, scale_factor=float(self.scale), mode="bilinear", align_corners=False)


def _twice(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class HeadMasked(nn.Module):
    """A tier's RGBA network whose alpha is bounded by a head mask: ``min(alpha, head mask)``."""

    def __init__(self, tier: nn.Module, head_mask: nn.Module) -> None:
        super().__init__()
        self.tier, self.head_mask = tier, head_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.tier(x)
        return torch.cat([out[:, :3], torch.minimum(out[:, 3:], self.head_mask(x))], 1)


def load_head_mask(path: Path) -> tuple[HeadMaskNet, dict]:
    """The trained head mask of a ``train head-mask`` run (or its model file), in eval mode."""
    file = find_model_file(Path(path))
    record = load_model_file(file)
    if record.get("arch") != HeadMaskNet.arch:
        raise TrainingError(f"{file}: a '{record.get('arch')}' model, not a head mask (train head-mask)")
    net = HeadMaskNet(**record["init_kwargs"])
    net.load_state_dict(record["params"])
    return net.eval(), record


def head_mask_record(run: Path, net: HeadMaskNet, record: dict, size: int) -> dict:
    """What a bundle's metrics say of the head mask its tiers blend through."""
    held = run / HELDOUT_FILE if run.is_dir() else None
    return {
        "run": run.name,
        "steps": record.get("step"),
        "gmacs": round(count_macs(net, size) / 1e9, 4),
        "params": count_params(net),
        **(json.loads(held.read_text()) if held and held.exists() else {}),
    }


# ----- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadMaskConfig:
    steps: int = opt(3000, "optimisation steps")
    batch: int = opt(32, "pairs per step")
    lr: float = opt(2e-3, "peak learning rate (AdamW; warm-up, then cosine decay to zero)")
    width: int = opt(16, "channels of the first layer (x2, x4 deeper)")
    scale: int = opt(4, "the crop is average-pooled by this factor first (the mask's resolution: side / scale)")
    under_weight: float = opt(3.0, "how much more a mask below its target costs than one above it (see mask_l1)")
    jitter: float = opt(0.06, "random zoom, shift (half as far, of the side) and rotation (× 150°) of the crops")
    seed: int = opt(0, "random seed")


def load_alpha_targets(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(photos (N, 3, S, S) uint8 RGB, alpha targets (N, 1, S, S) uint8) of one split of a pairs folder."""
    source = FolderPairs(root)
    if not source.has_alpha:
        raise DatasetError(f"{root}: the pairs have no alpha targets (make them with train pairs --masks)")
    pairs = source.pairs([k for k in source.names() if source.split(k) == split])
    if not pairs:
        return torch.zeros(0, 3, 1, 1, dtype=torch.uint8), torch.zeros(0, 1, 1, 1, dtype=torch.uint8)
    alpha = torch.from_numpy(np.stack([p.alpha for p in pairs]))[:, None]
    return to_uint8_tensor([p.photo for p in pairs], "bgr"), alpha


def mask_l1(pred: torch.Tensor, target: torch.Tensor, window: torch.Tensor, under: float = 1.0) -> torch.Tensor:
    """Mean |shown − target| in [0, 1]: the prediction (in [-1, 1]) as the engine shows it, through the
    crop-edge window (the targets carry the window already). Training weighs the error below the target
    ``under`` times: the head mask only ever lowers a tier's alpha (``min``), so where it is unsure it should
    err towards the head, or it would cut into the hair that the tier's own alpha draws."""
    error = (pred + 1) / 2 * window - target
    return torch.where(error < 0, -under * error, error).mean()


def jittered(photo: torch.Tensor, target: torch.Tensor, amount: float, window: torch.Tensor) -> tuple:
    """Photo and target moved together by a random similarity (zoom up to ``amount``, shift up to half of it
    of the side, as ``affine_grid``'s coordinates span 2, rotation up to ``amount`` × 150°), as face alignment
    wobbles; the target gets the crop-edge window again at the new edges. Resampling blurs, but the head
    mask's input is average-pooled and its targets are feathered."""
    n = photo.shape[0]
    u = torch.rand(n, 4) * 2 - 1
    zoom, angle = 1 + amount * u[:, 0], math.radians(150) * amount * u[:, 1]
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, amount * u[:, 2]], 1), torch.stack([sin, cos, amount * u[:, 3]], 1)], 1
    )
    grid = F.affine_grid(theta, list(photo.shape), align_corners=False)
    photo = F.grid_sample(photo, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    target = F.grid_sample(target, grid, mode="bilinear", padding_mode="zeros", align_corners=False) * window
    return photo, target


class HeadMaskTrainer:
    """One ``train head-mask`` run (a :class:`training.loop.Trainer`)."""

    progress_keys = ("loss",)

    def __init__(self, cfg: HeadMaskConfig, train: tuple, heldout: tuple) -> None:
        self.cfg = cfg
        self.photos, self.targets = train
        self.heldout = heldout
        self.net = HeadMaskNet(cfg.width, cfg.scale)
        self.opt = torch.optim.AdamW(self.net.parameters(), cfg.lr, weight_decay=1e-4)
        self.window = torch.from_numpy(crop_edge_window(self.photos.shape[-1]).copy())
        self.augment = AugmentConfig()
        self.iteration = 0
        self.images_per_step = cfg.batch

    def learning_rate(self) -> float:
        """Linear warm-up over 5 % of the steps, then cosine decay: a function of the step alone, so a
        resumed run continues the same schedule."""
        steps, warm = self.cfg.steps, max(1, self.cfg.steps // 20)
        if self.iteration < warm:
            return self.cfg.lr * (self.iteration + 1) / warm
        return self.cfg.lr * 0.5 * (1 + math.cos(math.pi * (self.iteration - warm) / max(1, steps - warm)))

    def step(self) -> dict[str, float]:
        pick = torch.randint(0, len(self.photos), (self.cfg.batch,))
        photo = self.photos[pick].float() / 127.5 - 1
        target = self.targets[pick].float() / 255
        # mirroring and colour only: camera degradations (blur, noise, JPEG) vanish in the average pooling,
        # and at 256² they cost twice the rest of the step
        photo, target = mirror([photo, target], self.augment)
        (photo,) = colour_jitter([photo], self.augment)
        if self.cfg.jitter > 0:
            photo, target = jittered(photo, target, self.cfg.jitter, self.window)
        for group in self.opt.param_groups:
            group["lr"] = self.learning_rate()
        self.net.train()
        loss = mask_l1(self.net(photo), target, self.window, self.cfg.under_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.iteration += 1
        return {"loss": float(loss.detach())}

    def gauges(self) -> dict[str, float]:
        return {"lr": self.learning_rate()}

    def state(self) -> tuple[dict, dict]:
        model = {
            "arch": HeadMaskNet.arch,
            "init_kwargs": {"width": self.cfg.width, "scale": self.cfg.scale},
            "params": self.net.state_dict(),
            "step": self.iteration,
        }
        return model, {"step": self.iteration, "opt": self.opt.state_dict()}

    def load(self, model: dict, state: dict) -> None:
        self.net.load_state_dict(model["params"])
        self.opt.load_state_dict(state["opt"])
        self.iteration = state["step"]

    @torch.no_grad()
    def heldout_l1(self) -> float | None:
        photos, targets = self.heldout
        if not len(photos):
            return None
        self.net.eval()
        pred = torch.cat([self.net(p.float() / 127.5 - 1) for p in photos.split(32)])
        return float(mask_l1(pred, targets.float() / 255, self.window))

    @torch.no_grad()
    def samples(self) -> np.ndarray:
        """Up to 4 held-out (else training) faces in columns; rows photo / alpha target / head mask."""
        photos, targets = self.heldout if len(self.heldout[0]) else (self.photos, self.targets)
        photo = photos[:4].float() / 127.5 - 1
        self.net.eval()
        rows = [photo, (targets[:4].float() / 127.5 - 1).expand(-1, 3, -1, -1), self.net(photo).expand(-1, 3, -1, -1)]
        return np.vstack([np.hstack(list(to_uint8(r, "rgb"))) for r in rows])


def train_head_mask(pairs: Path, cfg: HeadMaskConfig, ctx: StageContext) -> dict:
    """Train (or resume) a head mask on the alpha targets of a pairs folder; returns its summary."""
    seed_everything(cfg.seed)
    train, heldout = load_alpha_targets(pairs, "train"), load_alpha_targets(pairs, "heldout")
    if not len(train[0]):
        raise DatasetError(f"{pairs}: no training pairs for the head mask")
    trainer = HeadMaskTrainer(cfg, train, heldout)
    clock = resume(trainer, ctx.run)
    log.info(
        "head mask: %d params; %d train / %d held-out pairs", count_params(trainer.net), len(train[0]), len(heldout[0])
    )
    loop = LoopOptions(Budget(steps=cfg.steps), log_every=20, sample_every=500, ckpt_every=200)
    summary = train_loop([(trainer, ctx.run)], loop, "head-mask", ctx.progress, ctx.abort, clock)
    l1 = trainer.heldout_l1()
    if l1 is not None and not summary["aborted"]:  # a stopped run's figure would outlive it in export records
        (ctx.run.root / HELDOUT_FILE).write_text(json.dumps({"heldout_l1": l1, "heldout_pairs": len(heldout[0])}))
        log.info("head mask: held-out L1 %.4f", l1)
    return {"steps": trainer.iteration, "finished": not summary["aborted"], "heldout_l1": l1}


# ----- CLI ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pairs", type=Path, required=True, help="pairs folder with alpha targets (train pairs --masks)"
    )
    parser.add_argument("--run", type=Path, required=True, help="run directory")
    add_config_arguments(parser, HeadMaskConfig)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")


def head_mask_stage(
    pairs: Path, run: Path, cfg: HeadMaskConfig, progress: Progress, abort: AbortFlag, resume: bool = False
) -> dict:
    """The ``head-mask`` stage in its run directory ``run``."""
    run_dir = RunDir.open(run, "head_mask", {"pairs": str(pairs), **asdict(cfg)}, resume=resume)
    try:
        return train_head_mask(pairs, cfg, StageContext(run_dir, progress, abort))
    finally:
        run_dir.close()


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    abort = AbortFlag()
    with abort_on_signals(abort):
        cfg = apply_flags(HeadMaskConfig(), args)
        summary = head_mask_stage(args.pairs, args.run, cfg, Progress(args.progress), abort, args.resume)
    return 0 if summary["finished"] else ABORTED_EXIT
