"""``train student``: distil (photo, stylized) pairs into a real-time student of one compute tier.

One training step: sample a batch of random crops (the student is fully convolutional, so crops of the
256² pairs teach it at full scale for a fraction of the cost), augment, update the PatchGAN
discriminator (real targets vs student outputs, plus edge-smoothed targets as extra fakes), then the
student (L1 + perceptual + adversarial [+ identity]), then its EMA copy, which is what gets exported.

Presets (``--preset``): ``tiny`` for tests (seconds), ``cpu`` (about an hour on 2 cores for the
standard tier), ``gpu`` (full 256² crops, long). The adversarial loss starts after ``gan_start`` steps
of reconstruction-only warm-up, as in CartoonGAN's initialisation phase.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.errors import DatasetError
from training.metrics import to_images
from training.modules import count_params, load_strict
from training.pairs import FolderPairs
from training.runs import (
    MODEL_FILE,
    AbortFlag,
    Progress,
    RunDir,
    StageContext,
    TrainingError,
    abort_on_signals,
    load_model_file,
    seed_everything,
)
from training.student.augment import AugmentConfig, augment_batch
from training.student.losses import (
    LossWeights,
    PatchDiscriminator,
    PerceptualLoss,
    edge_smooth,
    lsgan_d_loss,
    lsgan_g_loss,
)
from training.student.networks import TIERS, build_student, count_macs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentConfig:
    tier: str = "light"
    crop: int = 128
    batch: int = 8
    steps: int = 3000
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    gan_start: int = 300
    weights: LossWeights = field(default_factory=LossWeights)
    augment: bool = True
    ema: float = 0.999
    seed: int = 0
    min_pairs: int = 16
    d_base: int = 32
    bf16: bool = False
    log_every: int = 50
    sample_every: int = 500
    ckpt_every: int = 250


PRESETS: dict[str, dict] = {
    "tiny": dict(
        crop=64, batch=4, steps=24, gan_start=6, min_pairs=4, d_base=16, log_every=4, sample_every=12, ckpt_every=12
    ),
    "cpu": dict(crop=128, batch=8, steps=3000, gan_start=300),
    "gpu": dict(crop=256, batch=16, steps=30000, gan_start=2000, log_every=100, sample_every=2000, ckpt_every=1000),
}

# Ablation rows of the published table, as loss switches on top of a preset.
ABLATION_ROWS: dict[str, dict] = {
    "pixel": dict(weights=LossWeights(perceptual=0.0, gan=0.0, edge=False), augment=False),
    "perceptual_gan": dict(weights=LossWeights(edge=False), augment=False),
    "edge": dict(weights=LossWeights(edge=True), augment=False),
    "augment": dict(weights=LossWeights(edge=True), augment=True),
}


def config_from(preset: str, **overrides) -> StudentConfig:
    if preset not in PRESETS:
        raise TrainingError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    return replace(StudentConfig(**PRESETS[preset]), **{k: v for k, v in overrides.items() if v is not None})


# ----- data -----------------------------------------------------------------------------------


@dataclass
class PairTensors:
    """Pairs held in memory as uint8 RGB tensors (N, 3, S, S): photos, targets, edge-smoothed targets."""

    keys: list[str]
    photos: torch.Tensor
    targets: torch.Tensor
    smoothed: torch.Tensor

    def __len__(self) -> int:
        return len(self.keys)


def _rgb_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(images)[..., ::-1])).permute(0, 3, 1, 2).contiguous()


def load_pairs(root: Path, split: str) -> PairTensors:
    """All pairs of one split of a pairs folder, with the edge-smoothed targets computed once."""
    source = FolderPairs(root)
    keys = [k for k in source.names() if source.split(k) == split]
    pairs = source.pairs(keys)
    sizes = {p.photo.shape for p in pairs}
    if len(sizes) > 1:
        raise DatasetError(f"{root}: pairs have mixed sizes {sorted(sizes)}; prepare them at one size")
    return PairTensors(
        keys,
        _rgb_tensor([p.photo for p in pairs]) if pairs else torch.zeros(0, 3, 1, 1, dtype=torch.uint8),
        _rgb_tensor([p.stylized for p in pairs]) if pairs else torch.zeros(0, 3, 1, 1, dtype=torch.uint8),
        _rgb_tensor([edge_smooth(p.stylized) for p in pairs]) if pairs else torch.zeros(0, 3, 1, 1, dtype=torch.uint8),
    )


def sample_batch(data: PairTensors, batch: int, crop: int, device: str) -> tuple[torch.Tensor, ...]:
    """Random pairs, one random crop position per pair shared by photo/target/smoothed; floats in [-1, 1]."""
    size = data.photos.shape[-1]
    if crop > size:
        raise TrainingError(f"crop {crop} is larger than the {size}² pairs")
    idx = torch.randint(len(data), (batch,))
    ys, xs = torch.randint(size - crop + 1, (batch,)), torch.randint(size - crop + 1, (batch,))
    out = []
    for t in (data.photos, data.targets, data.smoothed):
        crops = torch.stack([t[i, :, y : y + crop, x : x + crop] for i, y, x in zip(idx, ys, xs)])
        out.append(crops.to(device).float() / 127.5 - 1.0)
    return tuple(out)


# ----- training -------------------------------------------------------------------------------


class StudentTrainer:
    """Owns the networks, optimisers and the step loop of one student run."""

    def __init__(self, cfg: StudentConfig, train: PairTensors, preview: PairTensors, ctx: StageContext) -> None:
        self.cfg, self.train, self.preview, self.ctx = cfg, train, preview, ctx
        dev = ctx.device
        self.spec = asdict(TIERS[cfg.tier])
        self.g = build_student(**self.spec).to(dev)
        self.g_ema = copy.deepcopy(self.g).eval()
        for p in self.g_ema.parameters():
            p.requires_grad_(False)
        w = cfg.weights
        self.use_gan = w.gan > 0
        self.d = PatchDiscriminator(cfg.d_base).to(dev) if self.use_gan else None
        self.perceptual = PerceptualLoss(dev) if w.perceptual > 0 else None
        self.identity = None
        if w.identity > 0:
            from training.student.identity import IdentityLoss

            self.identity = IdentityLoss(dev)
        self.opt_g = torch.optim.Adam(self.g.parameters(), cfg.lr_g, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), cfg.lr_d, betas=(0.5, 0.999)) if self.d else None
        self.aug = AugmentConfig()
        self.step = 0

    def _autocast(self):
        dev_type = "cuda" if str(self.ctx.device).startswith("cuda") else "cpu"
        return torch.autocast(dev_type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    # checkpoint ---------------------------------------------------------------------------

    def model_record(self) -> dict:
        return {
            "arch": "student",
            "init_kwargs": self.spec,
            "params": self.g.state_dict(),
            "params_ema": self.g_ema.state_dict(),
            "step": self.step,
            "tier": self.cfg.tier,
        }

    def save(self) -> None:
        state = {"step": self.step, "opt_g": self.opt_g.state_dict()}
        if self.d is not None:
            state |= {"d": self.d.state_dict(), "opt_d": self.opt_d.state_dict()}
        self.ctx.run.save_checkpoint(self.model_record(), state)
        log.info("checkpoint at step %d", self.step)

    def init_from(self, path: Path) -> None:
        """Start from another run's student weights (fine-tuning); the discriminator starts fresh."""
        file = path / "checkpoints" / MODEL_FILE if path.is_dir() else path
        record = load_model_file(file)
        if record["init_kwargs"] != self.spec:
            raise TrainingError(f"{file}: a {record.get('tier')} student {record['init_kwargs']}, not {self.spec}")
        load_strict(self.g, record["params"], str(file))
        load_strict(self.g_ema, record.get("params_ema") or record["params"], str(file))
        log.info("student initialised from %s (step %s)", file, record.get("step"))

    def resume(self) -> bool:
        loaded = self.ctx.run.load_checkpoint()
        if loaded is None:
            return False
        model, state = loaded
        self.g.load_state_dict(model["params"])
        self.g_ema.load_state_dict(model["params_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.d is not None:
            self.d.load_state_dict(state["d"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.step = state["step"]
        log.info("resumed at step %d", self.step)
        return True

    # one step -----------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        cfg, w = self.cfg, self.cfg.weights
        photo, target, smoothed = sample_batch(self.train, cfg.batch, cfg.crop, self.ctx.device)
        if cfg.augment:
            photo, (target, smoothed) = augment_batch(photo, [target, smoothed], self.aug)
        stats: dict[str, float] = {}
        gan_on = self.use_gan and self.step >= cfg.gan_start
        with self._autocast():
            fake = self.g(photo)
        if gan_on:
            with self._autocast():
                fakes = [self.d(fake.detach())]
                if w.edge:
                    fakes.append(self.d(smoothed))
                loss_d = lsgan_d_loss(self.d(target), fakes)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.float().backward()
            self.opt_d.step()
            stats["d"] = float(loss_d.detach())
        with self._autocast():
            l1 = (fake - target).abs().mean()
            loss = w.l1 * l1
            stats["l1"] = float(l1.detach())
            if self.perceptual is not None:
                perc = self.perceptual(fake, target)
                loss = loss + w.perceptual * perc
                stats["perceptual"] = float(perc.detach())
            if gan_on:
                self.d.requires_grad_(False)
                adv = lsgan_g_loss(self.d(fake))
                self.d.requires_grad_(True)
                loss = loss + w.gan * adv
                stats["g_adv"] = float(adv.detach())
            if self.identity is not None:
                ident = self.identity(photo, fake)
                loss = loss + w.identity * ident
                stats["identity"] = float(ident.detach())
        self.opt_g.zero_grad(set_to_none=True)
        loss.float().backward()
        self.opt_g.step()
        self.update_ema()
        self.step += 1
        return stats

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        for pe, p in zip(self.g_ema.parameters(), self.g.parameters()):
            pe.lerp_(p.detach(), 1 - decay)
        for be, b in zip(self.g_ema.buffers(), self.g.buffers()):
            be.copy_(b)

    @torch.no_grad()
    def write_sample(self) -> Path | None:
        """Grid of up to 4 preview pairs: photo / teacher / EMA student, at full size."""
        data = self.preview if len(self.preview) else self.train
        if not len(data):
            return None
        n = min(4, len(data))
        photo = data.photos[:n].to(self.ctx.device).float() / 127.5 - 1
        out = to_images(self.g_ema(photo))
        rows = [to_images(photo), to_images(data.targets[:n].float() / 127.5 - 1), out]
        grid = np.vstack([np.hstack(list(r)) for r in rows])
        path = self.ctx.run.root / "samples" / f"step_{self.step:06d}.png"
        cv2.imwrite(str(path), grid)
        if self.ctx.on_sample:
            self.ctx.on_sample(path)
        return path

    def fit(self) -> bool:
        """Train to ``cfg.steps`` (from a resumed step if any). Returns False when aborted."""
        cfg, ctx = self.cfg, self.ctx
        ctx.progress.start(f"student:{cfg.tier}", cfg.steps, self.step)
        self.g.train()
        t0, done_since_log = time.perf_counter(), 0
        while self.step < cfg.steps:
            if ctx.abort:
                self.save()
                ctx.progress.finish(aborted=True, step=self.step)
                log.warning("aborted at step %d; the checkpoint is saved, rerun with --resume", self.step)
                return False
            stats = self.train_step()
            done_since_log += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                elapsed = time.perf_counter() - t0
                record = {"step": self.step, **stats, "img_per_s": done_since_log * cfg.batch / max(elapsed, 1e-9)}
                ctx.run.write_stats(record)
                t0, done_since_log = time.perf_counter(), 0
            ctx.progress.update(self.step, cfg.steps, **stats)
            if self.step % cfg.sample_every == 0:
                self.write_sample()
            if self.step % cfg.ckpt_every == 0 and self.step < cfg.steps:
                self.save()
        self.save()
        self.write_sample()
        ctx.progress.finish(step=self.step)
        return True


def train_student(pairs: Path, cfg: StudentConfig, ctx: StageContext, init_from: Path | None = None) -> dict:
    """Train one student on a pairs folder; returns its summary (tier, GMACs, params, steps)."""
    if cfg.tier not in TIERS:
        raise TrainingError(f"unknown tier '{cfg.tier}' (known: {', '.join(TIERS)})")
    seed_everything(cfg.seed)
    if str(ctx.device).startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels
    train = load_pairs(pairs, "train")
    if len(train) < cfg.min_pairs:
        raise DatasetError(f"{pairs}: only {len(train)} training pairs; this preset needs at least {cfg.min_pairs}")
    if cfg.weights.identity > 0 and cfg.crop != train.photos.shape[-1]:
        raise TrainingError(
            f"the identity loss needs whole aligned faces: use --crop {train.photos.shape[-1]} (got {cfg.crop})"
        )
    preview = load_pairs(pairs, "heldout")
    trainer = StudentTrainer(cfg, train, preview, ctx)
    if not trainer.resume():
        if init_from is not None:
            trainer.init_from(Path(init_from))
        seed_everything(cfg.seed)
    macs = count_macs(trainer.g, 256)  # no RNG use: a resumed run must continue its random stream exactly
    log.info(
        "student %s: %.3f GMAC at 256², %d params; %d train / %d held-out pairs",
        cfg.tier,
        macs / 1e9,
        count_params(trainer.g),
        len(train),
        len(preview),
    )
    finished = trainer.fit()
    return {
        "tier": cfg.tier,
        "gmacs": macs / 1e9,
        "params": count_params(trainer.g),
        "steps": trainer.step,
        "finished": finished,
    }


# ----- CLI ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=Path, required=True, help="pairs folder (photos/, stylized/)")
    parser.add_argument("--run", type=Path, required=True, help="run directory")
    parser.add_argument("--tier", default="light", choices=list(TIERS))
    parser.add_argument("--preset", default="cpu", choices=list(PRESETS))
    parser.add_argument("--ablation", choices=list(ABLATION_ROWS), help="loss set of one published ablation row")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--crop", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--gan-start", type=int, help="step at which the adversarial loss starts")
    parser.add_argument("--init-from", type=Path, help="fine-tune: start from this run's (or model.pt's) student")
    parser.add_argument("--gan-weight", type=float, help="weight of the adversarial loss (preset default 0.1)")
    parser.add_argument("--perceptual-weight", type=float, help="weight of the VGG16 loss (preset default 1)")
    parser.add_argument("--identity", type=float, help="weight of the SFace identity loss (default 0: off)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    parser.add_argument("--export-to", type=Path, help="after training, export a bundle to this folder")
    parser.add_argument("--style-id", default="ink", help="bundle style id for --export-to")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    overrides = dict(
        steps=args.steps, batch=args.batch, crop=args.crop, seed=args.seed, tier=args.tier, gan_start=args.gan_start
    )
    if args.ablation:
        overrides |= ABLATION_ROWS[args.ablation]
    cfg = config_from(args.preset, **overrides)
    weights = {"gan": args.gan_weight, "perceptual": args.perceptual_weight, "identity": args.identity}
    cfg = replace(cfg, weights=replace(cfg.weights, **{k: v for k, v in weights.items() if v is not None}))
    if args.bf16:
        cfg = replace(cfg, bf16=True)
    options = {"pairs": str(args.pairs), "preset": args.preset, "ablation": args.ablation, **asdict(cfg)}
    if args.init_from:
        options["init_from"] = str(args.init_from)
    run_dir = RunDir.open(args.run, "student", options, resume=args.resume)
    abort = AbortFlag()
    try:
        ctx = StageContext(run_dir, Progress(args.progress), abort, device=args.device)
        with abort_on_signals(abort):
            summary = train_student(args.pairs, cfg, ctx, args.init_from)
        if summary["finished"] and args.export_to:
            from training.export import export_bundle

            export_bundle([args.run], args.export_to, style_id=args.style_id, pairs=args.pairs)
    finally:
        run_dir.close()
    return 0 if summary["finished"] else 1
