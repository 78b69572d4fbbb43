"""``train student``: distil (photo, stylized) pairs into a real-time student of one compute tier.

One training step: sample a batch of random crops (the student is fully convolutional, so crops of the
256² pairs teach it at full scale for a fraction of the cost), augment, update the PatchGAN
discriminator (real targets vs student outputs, plus edge-smoothed targets as extra fakes), then the
student (L1 + detail + perceptual + adversarial [+ identity] [+ alpha L1]), then its EMA copy, which is
what gets exported.

The perceptual loss joins after ``perceptual_start`` steps and the adversarial loss after ``gan_start``:
VGG16's forward and backward passes are most of a step's cost (a light student's step is about 7× cheaper
without them), so the students first learn the teacher's mapping from the cheap pixel and detail losses,
and the perceptual and adversarial losses then refine texture, as in CartoonGAN's initialisation phase
and ESRGAN's PSNR-oriented pre-training.

Presets (``--preset``): ``tiny`` for tests (seconds), ``cpu`` (about an hour on 2 cores for the
standard tier), ``gpu`` (full 256² crops, long).
"""

from __future__ import annotations

import argparse
import copy
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from engine.blend import crop_edge_window, mix
from engine.bundle import MANIFEST, load_bundle
from training.errors import DatasetError, TrainingError
from training.images import to_uint8, to_uint8_tensor
from training.loop import ABORTED_EXIT, Budget, LoopOptions, resume, train_loop
from training.modules import count_params, cpu_has_native_bf16, load_strict, ramped_decay, update_ema
from training.options import SKIP, add_config_arguments, apply_flags, opt
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
from training.student.augment import AugmentConfig, augment_batch
from training.student.losses import (
    LossWeights,
    PatchDiscriminator,
    PerceptualLoss,
    detail_loss,
    edge_smooth,
    lsgan_d_loss,
    lsgan_g_loss,
)
from training.student.networks import TIERS, build_student, count_macs, fit_head, same_body, student_from_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentConfig:
    tier: str = field(default="light", metadata=SKIP)  # --tier takes several, trained side by side
    crop: int = opt(128, "side of the random training crops")
    batch: int = opt(8, "pairs per step")
    steps: int = opt(3000, "training steps")
    lr_g: float = opt(2e-4, "student learning rate")
    lr_d: float = opt(2e-4, "discriminator learning rate")
    perceptual_start: int = opt(0, "step at which the perceptual (VGG16) loss starts")
    gan_start: int = opt(300, "step at which the adversarial loss starts")
    weights: LossWeights = field(default_factory=LossWeights, metadata={"suffix": "-weight"})
    augment: bool = opt(True, "photo-side augmentation (blur, noise, JPEG, colour)")
    balance_tones: bool = opt(False, "draw pairs so that every band of skin lightness comes up about as often")
    photo_outside_alpha: bool = opt(
        True, "colour targets show the photo where the alpha target is 0 (pairs with alpha targets): see load_pairs"
    )
    ema: float = opt(0.999, "EMA decay of the exported student")
    head_kernel: int = opt(3, "kernel size of the output conv, 3 or 1 (1: a faster light tier; see StudentSpec)")
    seed: int = opt(0, "random seed")
    min_pairs: int = opt(16, "fewest training pairs accepted")
    d_base: int = opt(32, "discriminator width")
    bf16: bool = opt(False, "bfloat16 autocast (refused on CPUs without native bf16)")
    log_every: int = opt(50, "steps between stats records")
    sample_every: int = opt(500, "steps between sample grids")
    ckpt_every: int = opt(250, "steps between checkpoints")


PRESETS: dict[str, dict] = {
    "tiny": dict(
        crop=64, batch=4, steps=24, gan_start=6, min_pairs=4, d_base=16, log_every=4, sample_every=12, ckpt_every=12
    ),
    # half the steps on the cheap losses, then the perceptual loss, the discriminator after another 200; the
    # EMA averages over ~200 steps so that it holds the final phase's weights, not the pixel phase's
    "cpu": dict(crop=128, batch=8, steps=3000, perceptual_start=1500, gan_start=1700, ema=0.995),
    "gpu": dict(crop=256, batch=16, steps=30000, gan_start=2000, log_every=100, sample_every=2000, ckpt_every=1000),
}

# Ablation rows of the published table, as loss switches on top of a preset (without the later detail loss).
ABLATION_ROWS: dict[str, dict] = {
    "pixel": dict(weights=LossWeights(perceptual=0.0, detail=0.0, gan=0.0, edge=False), augment=False),
    "perceptual_gan": dict(weights=LossWeights(detail=0.0, edge=False), augment=False),
    "edge": dict(weights=LossWeights(detail=0.0, edge=True), augment=False),
    "augment": dict(weights=LossWeights(detail=0.0, edge=True), augment=True),
}


def config_from(preset: str, **overrides) -> StudentConfig:
    if preset not in PRESETS:
        raise TrainingError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    return replace(StudentConfig(**PRESETS[preset]), **{k: v for k, v in overrides.items() if v is not None})


# ----- data -----------------------------------------------------------------------------------


@dataclass
class PairTensors:
    """Pairs held in memory as uint8 RGB tensors (N, 3, S, S): photos, targets, edge-smoothed targets, and
    the alpha targets (N, 1, S, S) when the pairs folder has them."""

    keys: list[str]
    photos: torch.Tensor
    targets: torch.Tensor
    smoothed: torch.Tensor
    alpha: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.keys)


def photo_outside(photo: np.ndarray, stylized: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The teacher's picture where the alpha target shows the style, the photo where it keeps the photo.

    The engine shows the student's colour only through its predicted alpha, but a teacher repaints the
    whole crop (anime_jp whitens the background). A student taught that background draws it wherever its
    alpha spills past the hair: a pale halo and a fogged backdrop (the earlier anime light tier moved 22 %
    of the held-out faces' background pixels by more than 12 grey levels). Taught the photo there, a
    spilled alpha shows the photo.
    """
    return mix(photo, stylized, alpha.astype(np.float32) / 255.0)


def load_pairs(root: Path, split: str, photo_outside_alpha: bool = False) -> PairTensors:
    """All pairs of one split of a pairs folder, with the edge-smoothed targets computed once; with
    ``photo_outside_alpha`` (and alpha targets), the targets are :func:`photo_outside` composites."""
    source = FolderPairs(root)
    keys = [k for k in source.names() if source.split(k) == split]
    pairs = source.pairs(keys)
    if photo_outside_alpha and source.has_alpha:
        pairs = [replace(p, stylized=photo_outside(p.photo, p.stylized, p.alpha)) for p in pairs]
    sizes = {p.photo.shape for p in pairs}
    if len(sizes) > 1:
        raise DatasetError(f"{root}: pairs have mixed sizes {sorted(sizes)}; prepare them at one size")
    empty = torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
    alpha = None
    if source.has_alpha:
        alpha = torch.from_numpy(np.stack([p.alpha for p in pairs]))[:, None] if pairs else empty[:, :1]
    return PairTensors(
        keys,
        to_uint8_tensor([p.photo for p in pairs], "bgr") if pairs else empty,
        to_uint8_tensor([p.stylized for p in pairs], "bgr") if pairs else empty,
        to_uint8_tensor([edge_smooth(p.stylized) for p in pairs], "bgr") if pairs else empty,
        alpha,
    )


def tone_weights(photos: torch.Tensor, alpha: torch.Tensor, bands: int = 8, cap: float = 4.0) -> torch.Tensor:
    """A sampling weight per pair that draws every band of skin lightness about as often as any other, up to
    ``cap`` times the uniform weight. Darker-skinned faces are rare in face data, and students that saw them
    rarely kept their tone worse than their pairs did (anime: +6 to +8.5 L* on the darkest quarter against
    +1.2 in the pairs). A pair's lightness is the photo's mean luma where its alpha target holds, in the
    middle of the crop: the face (the alpha covers the hair as well)."""
    size = photos.shape[-1]
    middle = slice(size // 4, size - size // 4)
    rgb = photos[:, :, middle, middle].float()
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    face = (alpha[:, 0, middle, middle] > 127).float()
    area = face.sum((1, 2))
    tone = torch.where(area > 0, (luma * face).sum((1, 2)) / area.clamp(min=1), luma.mean((1, 2)))
    edges = torch.linspace(float(tone.min()), float(tone.max()), bands + 1)[1:-1]
    band = torch.bucketize(tone, edges)
    weights = 1.0 / torch.bincount(band, minlength=bands)[band].float()
    return (weights / weights.mean()).clamp(max=cap)


def sample_batch(
    data: PairTensors, batch: int, crop: int, device: str, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """Random pairs (drawn by ``weights`` where given), one random crop position per pair shared by
    photo/target/smoothed[/alpha]; floats in [-1, 1]. With alpha targets, the alpha crops come last, then
    the engine's crop-edge window at the same places (in [0, 1]): the engine shows a predicted alpha
    multiplied by that window, and a random crop cannot tell the student where the window falls, so the
    alpha loss applies it to the prediction."""
    size = data.photos.shape[-1]
    if crop > size:
        raise TrainingError(f"crop {crop} is larger than the {size}² pairs")
    idx = torch.randint(len(data), (batch,)) if weights is None else torch.multinomial(weights, batch, True)
    ys, xs = torch.randint(size - crop + 1, (batch,)), torch.randint(size - crop + 1, (batch,))

    def crops(t: torch.Tensor, index=idx) -> torch.Tensor:
        return torch.stack([t[i, :, y : y + crop, x : x + crop] for i, y, x in zip(index, ys, xs)])

    images = (data.photos, data.targets, data.smoothed, data.alpha)
    out = [crops(t).to(device).float() / 127.5 - 1.0 for t in images if t is not None]
    if data.alpha is not None:
        window = torch.tensor(crop_edge_window(size))[None, None]  # a copy: the cached array is read-only
        out.append(crops(window, torch.zeros(batch, dtype=torch.long)).to(device))
    return tuple(out)


# ----- training -------------------------------------------------------------------------------


class SharedBatches:
    """The augmented batch of each step, drawn once for all the students trained side by side, with its
    targets' VGG features: every student sees the batches the first would see alone."""

    def __init__(self, train: PairTensors, cfg: StudentConfig, device: str, perceptual: PerceptualLoss | None):
        self.train, self.cfg, self.device, self.perceptual = train, cfg, device, perceptual
        self.aug = AugmentConfig()
        self.weights = None
        if cfg.balance_tones and train.alpha is not None:
            self.weights = tone_weights(train.photos, train.alpha)
            log.info("tone-balanced sampling: pair weights %.2f-%.2f", self.weights.min(), self.weights.max())
        self._step: int | None = None

    def at(self, step: int) -> tuple[tuple, dict | None]:
        """(photo, target, edge-smoothed target, [alpha target, crop-edge window] or []) and the target features
        of ``step``."""
        if step != self._step:
            cfg = self.cfg
            photo, target, smoothed, *alpha = sample_batch(self.train, cfg.batch, cfg.crop, self.device, self.weights)
            if cfg.augment:
                photo, (target, smoothed), alpha = augment_batch(photo, [target, smoothed], self.aug, alpha)
            use_vgg = self.perceptual is not None and step >= cfg.perceptual_start
            feats = self.perceptual.target_features(target) if use_vgg else None
            self._step, self._batch = step, ((photo, target, smoothed, alpha), feats)
        return self._batch


class StudentTrainer:
    """The networks and optimisers of one student run; ``step()`` trains one step (a
    :class:`training.loop.Trainer`)."""

    progress_keys = ("l1", "detail", "perceptual", "d", "g_adv", "alpha_l1", "identity")

    def __init__(
        self, cfg: StudentConfig, train: PairTensors, preview: PairTensors, batches: SharedBatches, device: str
    ) -> None:
        self.cfg, self.train, self.preview, self.batches, self.device = cfg, train, preview, batches, device
        self.spec = asdict(replace(TIERS[cfg.tier], alpha=train.alpha is not None, head=cfg.head_kernel))
        self.g = build_student(**self.spec).to(device)
        self.g_ema = copy.deepcopy(self.g).eval()
        for p in self.g_ema.parameters():
            p.requires_grad_(False)
        w = cfg.weights
        self.use_gan = w.gan > 0
        self.d = PatchDiscriminator(cfg.d_base).to(device) if self.use_gan else None
        self.perceptual = batches.perceptual if w.perceptual > 0 else None
        self.identity = None
        if w.identity > 0:
            from training.student.identity import IdentityLoss

            self.identity = IdentityLoss(device)
        self.opt_g = torch.optim.Adam(self.g.parameters(), cfg.lr_g, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), cfg.lr_d, betas=(0.5, 0.999)) if self.d else None
        self.iteration = 0
        self.images_per_step = cfg.batch

    def _autocast(self):
        dev_type = "cuda" if str(self.device).startswith("cuda") else "cpu"
        return torch.autocast(dev_type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    # checkpoint ---------------------------------------------------------------------------

    def model_record(self) -> dict:
        return {
            "arch": "student",
            "init_kwargs": self.spec,
            "params": self.g.state_dict(),
            "params_ema": self.g_ema.state_dict(),
            "step": self.iteration,
            "tier": self.cfg.tier,
        }

    def state(self) -> tuple[dict, dict]:
        state = {"step": self.iteration, "opt_g": self.opt_g.state_dict()}
        if self.d is not None:
            state |= {"d": self.d.state_dict(), "opt_d": self.opt_d.state_dict()}
        return self.model_record(), state

    def init_from(self, path: Path) -> None:
        """Start from another run's student weights (fine-tuning), or from an installed bundle's tier of the same
        name (its ONNX file: :func:`student_from_onnx`); the discriminator starts fresh."""
        if (path / MANIFEST).is_file():
            self._init_from_bundle(path)
            return
        file = find_model_file(path)
        record = load_model_file(file)
        if not same_body(record["init_kwargs"], self.spec):
            raise TrainingError(f"{file}: a {record.get('tier')} student {record['init_kwargs']}, not {self.spec}")
        load_strict(self.g, fit_head(record["params"], self.g), str(file))
        load_strict(self.g_ema, fit_head(record.get("params_ema") or record["params"], self.g), str(file))
        log.info("student initialised from %s (step %s)", file, record.get("step"))

    def _init_from_bundle(self, folder: Path) -> None:
        bundle = load_bundle(folder)
        tier = next((t for t in bundle.manifest.tiers if t.id == self.cfg.tier), None)
        onnx = next((f for f in tier.files if f.runtime == "onnx"), None) if tier else None
        if onnx is None:
            raise TrainingError(f"{folder}: the bundle has no ONNX file of the {self.cfg.tier} tier to start from")
        photos = self.train.photos[:32].float() / 127.5 - 1.0
        state = fit_head(student_from_onnx(folder / onnx.file, self.spec, photos).state_dict(), self.g)
        load_strict(self.g, state, str(folder / onnx.file))
        load_strict(self.g_ema, state, str(folder / onnx.file))
        log.info("student initialised from the %s tier of %s", self.cfg.tier, folder)

    def load(self, model: dict, state: dict) -> None:
        self.g.load_state_dict(model["params"])
        self.g_ema.load_state_dict(model["params_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.d is not None:
            self.d.load_state_dict(state["d"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.iteration = state["step"]
        log.info("%s resumed at step %d", self.cfg.tier, self.iteration)

    # one step -----------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        cfg, w = self.cfg, self.cfg.weights
        (photo, target, smoothed, alpha), target_feats = self.batches.at(self.iteration)
        self.g.train()
        stats: dict[str, float] = {}
        gan_on = self.use_gan and self.iteration >= cfg.gan_start
        with self._autocast():
            out = self.g(photo)
            fake = out[:, :3]
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
            if w.detail > 0:
                detail = detail_loss(fake, target)
                loss = loss + w.detail * detail
                stats["detail"] = float(detail.detach())
            if target_feats is not None:  # the perceptual phase has begun
                perc = self.perceptual(fake, target, target_feats)
                loss = loss + w.perceptual * perc
                stats["perceptual"] = float(perc.detach())
            if gan_on:
                self.d.requires_grad_(False)
                adv = lsgan_g_loss(self.d(fake))
                self.d.requires_grad_(True)
                loss = loss + w.gan * adv
                stats["g_adv"] = float(adv.detach())
            if alpha:
                target_alpha, window = alpha
                shown = (out[:, 3:] + 1) * window - 1  # what the engine blends with, in [-1, 1]
                alpha_l1 = (shown - target_alpha).abs().mean()
                loss = loss + w.alpha * alpha_l1
                stats["alpha_l1"] = float(alpha_l1.detach())
            if self.identity is not None:
                ident = self.identity(photo, fake)
                loss = loss + w.identity * ident
                stats["identity"] = float(ident.detach())
        self.opt_g.zero_grad(set_to_none=True)
        loss.float().backward()
        self.opt_g.step()
        update_ema(self.g_ema, self.g, ramped_decay(cfg.ema, self.iteration))
        self.iteration += 1
        return stats

    def gauges(self) -> dict[str, float]:
        return {"gan_on": float(self.use_gan and self.iteration >= self.cfg.gan_start)}

    @torch.no_grad()
    def samples(self) -> np.ndarray:
        """Up to 4 preview pairs in columns; rows photo / teacher / EMA student [/ its alpha], RGB."""
        data = self.preview if len(self.preview) else self.train
        n = min(4, len(data))
        photo = data.photos[:n].to(self.device).float() / 127.5 - 1
        out = self.g_ema(photo)
        rows = [photo, data.targets[:n].float() / 127.5 - 1, out[:, :3]]
        if out.shape[1] == 4:  # the predicted blend mask, as grey
            rows.append(out[:, 3:].expand(-1, 3, -1, -1))
        return np.vstack([np.hstack(list(to_uint8(r, "rgb"))) for r in rows])


def train_students(
    pairs: Path, cfgs: list[StudentConfig], ctxs: list[StageContext], init_from: list[Path | None] | None = None
) -> list[dict]:
    """Train students (one per config, e.g. the three tiers) side by side on a pairs folder.

    The configs must differ only in their tier. Returns each one's summary (tier, GMACs, params, steps).
    """
    cfg = cfgs[0]
    for c in cfgs:
        if c.tier not in TIERS:
            raise TrainingError(f"unknown tier '{c.tier}' (known: {', '.join(TIERS)})")
        if c.head_kernel not in (1, 3):
            raise TrainingError(f"--head-kernel must be 1 or 3, not {c.head_kernel}")
        if replace(c, tier=cfg.tier) != cfg:
            raise TrainingError("students trained together must share every option but the tier")
    seed_everything(cfg.seed)
    if str(ctxs[0].device).startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels
    train = load_pairs(pairs, "train", cfg.photo_outside_alpha)
    if len(train) < cfg.min_pairs:
        raise DatasetError(f"{pairs}: only {len(train)} training pairs; this preset needs at least {cfg.min_pairs}")
    if cfg.weights.identity > 0 and cfg.crop != train.photos.shape[-1]:
        raise TrainingError(
            f"the identity loss needs whole aligned faces: use --crop {train.photos.shape[-1]} (got {cfg.crop})"
        )
    preview = load_pairs(pairs, "heldout", cfg.photo_outside_alpha)
    device = ctxs[0].device
    perceptual = PerceptualLoss(device) if cfg.weights.perceptual > 0 else None
    batches = SharedBatches(train, cfg, device, perceptual)
    trainers = [StudentTrainer(c, train, preview, batches, device) for c in cfgs]
    clocks = [resume(t, ctx.run) for t, ctx in zip(trainers, ctxs)]
    if not all(clocks):
        for t, clock, parent in zip(trainers, clocks, init_from or [None] * len(trainers)):
            if clock is None and parent is not None:
                t.init_from(Path(parent))
        seed_everything(cfg.seed)
    summaries = []
    for t in trainers:
        macs = count_macs(t.g, 256)  # no RNG use: a resumed run must continue its random stream exactly
        log.info(
            "student %s: %.3f GMAC at 256², %d params; %d train / %d held-out pairs%s",
            t.cfg.tier,
            macs / 1e9,
            count_params(t.g),
            len(train),
            len(preview),
            ", with a learned alpha" if train.alpha is not None else "",
        )
        summaries.append({"tier": t.cfg.tier, "gmacs": macs / 1e9, "params": count_params(t.g)})
    loop = LoopOptions(Budget(steps=cfg.steps), cfg.log_every, cfg.sample_every, cfg.ckpt_every)
    stage = "student:" + "+".join(c.tier for c in cfgs)
    members = [(t, ctx.run) for t, ctx in zip(trainers, ctxs)]
    summary = train_loop(members, loop, stage, ctxs[0].progress, ctxs[0].abort, clocks[0])
    return [{**s, "steps": t.iteration, "finished": not summary["aborted"]} for s, t in zip(summaries, trainers)]


def train_student(pairs: Path, cfg: StudentConfig, ctx: StageContext, init_from: Path | None = None) -> dict:
    """Train one student on a pairs folder; returns its summary (tier, GMACs, params, steps)."""
    return train_students(pairs, [cfg], [ctx], [init_from])[0]


# ----- CLI ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pairs", type=Path, required=True, help="pairs folder (photos/, stylized/)")
    parser.add_argument(
        "--run", type=Path, required=True, help="run directory (with several tiers: one per tier inside)"
    )
    parser.add_argument(
        "--tier", nargs="+", default=["light"], choices=list(TIERS), help="one tier, or several trained side by side"
    )
    parser.add_argument("--preset", default="cpu", choices=list(PRESETS), help="defaults of the options below")
    parser.add_argument("--ablation", choices=list(ABLATION_ROWS), help="loss set of one published ablation row")
    add_config_arguments(parser, StudentConfig)
    parser.add_argument(
        "--init-from",
        type=Path,
        help="fine-tune: start from this run's (or a model file's) student; with several tiers, a"
        " folder holding one run per tier; or an installed style's bundle folder (each tier from its own)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue the run's last checkpoint")
    parser.add_argument("--export-to", type=Path, help="after training, export a bundle to this folder")
    parser.add_argument("--style-id", default="ink", help="bundle style id for --export-to")


def tier_runs(run: Path, tiers: list[str]) -> list[Path]:
    """One run directory per tier: ``run`` itself for a single tier, ``run/<tier>`` for several."""
    return [run] if len(tiers) == 1 else [run / t for t in tiers]


def parent_runs(init_from: Path, tiers: list[str]) -> list[Path]:
    """Where each tier starts when fine-tuning: an installed bundle (each tier rebuilt from its own ONNX file),
    the tier's own folder of a multi-tier run (also when one tier alone is fine-tuned), or else the run
    layout of :func:`tier_runs`."""
    if (init_from / MANIFEST).is_file():
        return [init_from] * len(tiers)
    if all((init_from / t).is_dir() for t in tiers):
        return [init_from / t for t in tiers]
    return tier_runs(init_from, tiers)


def student_stage(
    pairs: Path,
    run: Path,
    tiers: list[str],
    cfg: StudentConfig,
    progress: Progress,
    abort: AbortFlag,
    init_from: Path | None = None,
    resume: bool = False,
    device: str = "cpu",
    labels: dict | None = None,
) -> list[dict]:
    """The ``student`` stage: ``tiers`` trained side by side on ``pairs``, in ``run`` (one folder per tier when
    there are several); ``labels`` (e.g. the preset) are recorded with the options."""
    if cfg.bf16 and device == "cpu" and not cpu_has_native_bf16():
        raise TrainingError("--bf16: this CPU has no native bfloat16 (AVX512-BF16/AMX); autocast would be ~100× slower")
    cfgs = [replace(cfg, tier=t) for t in tiers]
    runs = tier_runs(run, tiers)
    parents = parent_runs(init_from, tiers) if init_from else [None] * len(runs)
    run_dirs = []
    try:
        for c, run_path, parent in zip(cfgs, runs, parents):
            options = {"pairs": str(pairs), **(labels or {}), **asdict(c)}
            if parent:
                options["init_from"] = str(parent)
            run_dirs.append(RunDir.open(run_path, "student", options, resume=resume))
        ctxs = [StageContext(r, progress, abort, device=device) for r in run_dirs]
        return train_students(pairs, cfgs, ctxs, parents)
    finally:
        for r in run_dirs:
            r.close()


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    cfg = config_from(args.preset, **(ABLATION_ROWS[args.ablation] if args.ablation else {}))
    abort = AbortFlag()
    with abort_on_signals(abort):
        summaries = student_stage(
            args.pairs,
            args.run,
            args.tier,
            apply_flags(cfg, args),
            Progress(args.progress),
            abort,
            args.init_from,
            args.resume,
            args.device,
            {"preset": args.preset, "ablation": args.ablation},
        )
    finished = all(s["finished"] for s in summaries)
    if finished and args.export_to:
        from training.student.export import export_bundle

        export_bundle(tier_runs(args.run, args.tier), args.export_to, style_id=args.style_id, pairs=args.pairs)
    return 0 if finished else ABORTED_EXIT
