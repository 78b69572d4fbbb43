"""Inversion of (aligned) face images into a generator's W+ space by optimisation.

Per image: start at the average w, optimise the latent (W+ by default, or one w) and, optionally, the
generator's noise maps with Adam under LPIPS (offline VGG16 + lpips heads) + pixel MSE, with the
official projector's schedule (learning-rate ramp up/down, decaying latent noise early on) and its
noise regulariser (multi-scale autocorrelation of the noise maps, which keeps the noise from
absorbing the image). Images smaller than 128² are upsampled for LPIPS, whose VGG features are too
coarse below that.

The W+ latents are what the ``generate`` stage renders through a fused/stylized generator; the
optimised noise maps stay with the reconstruction (the stylized generator uses its own).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.errors import TrainingError
from training.images import to_tensor, to_uint8
from training.runs import Progress
from training.stylegan.networks import Generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InversionConfig:
    steps: int = 300
    lr: float = 0.1
    space: str = "w+"  # "w+" (one w per layer) or "w"
    optimize_noise: bool = True
    lpips_weight: float = 1.0
    pixel_weight: float = 1.0
    noise_reg_weight: float = 1e5
    initial_noise_factor: float = 0.05
    noise_ramp: float = 0.75
    lr_rampdown: float = 0.25
    lr_rampup: float = 0.05
    lpips_min_size: int = 128


@dataclass
class InversionResult:
    ws: torch.Tensor  # [1, num_ws, w_dim]
    image: torch.Tensor  # [1, 3, R, R] in [-1, 1]
    losses: list[float]


def w_stats(G: Generator, samples: int = 2000, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Mean w and the RMS distance of w samples from it (scale of the latent noise)."""
    z = torch.randn([samples, G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
    mean = w.mean(0)
    return mean, float(((w - mean).square().sum() / samples) ** 0.5)


def _noise_buffers(G: Generator) -> list[torch.Tensor]:
    return [buf for name, buf in G.synthesis.named_buffers() if name.endswith("noise_const")]


def _noise_regulariser(bufs: list[torch.Tensor]) -> torch.Tensor:
    """Σ over maps and octaves of squared autocorrelation at 1-pixel shifts (official projector)."""
    reg = torch.zeros([])
    for buf in bufs:
        noise = buf[None, None]
        while True:
            reg = reg + (noise * torch.roll(noise, 1, dims=3)).mean().square()
            reg = reg + (noise * torch.roll(noise, 1, dims=2)).mean().square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return reg


class Inverter:
    def __init__(self, G: Generator, cfg: InversionConfig = InversionConfig(), lpips=None) -> None:
        if cfg.space not in ("w", "w+"):
            raise TrainingError(f"inversion space must be w or w+, got {cfg.space!r}")
        self.G = copy.deepcopy(G).eval().requires_grad_(False)
        self.cfg = cfg
        if lpips is None and cfg.lpips_weight > 0:
            from training.pretrained import lpips_vgg

            lpips = lpips_vgg("cpu")
        self.lpips = lpips
        self.w_avg, self.w_std = w_stats(self.G)

    def _perceptual(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.lpips is None:
            return torch.zeros([])
        if a.shape[-1] < self.cfg.lpips_min_size:
            size = (self.cfg.lpips_min_size, self.cfg.lpips_min_size)
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return self.lpips(a, b).mean()

    def invert(self, target: torch.Tensor, seed: int = 0) -> InversionResult:
        """``target`` ``[1, 3, R, R]`` in [-1, 1] at the generator's resolution."""
        cfg, G = self.cfg, self.G
        gen = torch.Generator().manual_seed(seed)
        num = G.num_ws if cfg.space == "w+" else 1
        w_opt = self.w_avg[None, None].repeat(1, num, 1).clone().requires_grad_(True)
        bufs = _noise_buffers(G)
        params = [w_opt]
        if cfg.optimize_noise:
            for buf in bufs:
                buf.copy_(torch.randn(buf.shape, generator=gen))
                buf.requires_grad_(True)
            params += bufs
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
        losses = []
        for step in range(cfg.steps):
            t = step / max(cfg.steps, 1)
            noise_scale = self.w_std * cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp) ** 2
            lr_ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown)
            lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
            lr_ramp *= min(1.0, t / cfg.lr_rampup)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_ramp
            w = w_opt + torch.randn(w_opt.shape, generator=gen) * noise_scale
            ws = w.repeat(1, G.num_ws // num, 1)
            synth = G.synthesis(ws, noise_mode="const")
            loss = cfg.lpips_weight * self._perceptual(synth, target)
            loss = loss + cfg.pixel_weight * F.mse_loss(synth, target)
            if cfg.optimize_noise:
                loss = loss + cfg.noise_reg_weight * _noise_regulariser(bufs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if cfg.optimize_noise:
                with torch.no_grad():
                    for buf in bufs:
                        buf -= buf.mean()
                        buf *= buf.square().mean().rsqrt()
        with torch.no_grad():
            ws = w_opt.detach().repeat(1, G.num_ws // num, 1)
            image = G.synthesis(ws, noise_mode="const")
        for buf in bufs:
            buf.requires_grad_(False)
        return InversionResult(ws, image, losses)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def load_targets(paths: list[Path], resolution: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Aligned face files → (``[N, R, R, 3]`` uint8 RGB at the generator's size, originals as BGR)."""
    from training.imagefolder import square_resize, to_rgb8

    targets, originals = [], []
    for path in paths:
        img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise TrainingError(f"{path}: cannot be decoded")
        rgb = to_rgb8(img, path)
        originals.append(cv2.cvtColor(square_resize(rgb, max(rgb.shape[:2])), cv2.COLOR_RGB2BGR))
        targets.append(square_resize(rgb, resolution))
    return np.stack(targets), originals


# ----- the ``invert`` stage ---------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--generator", required=True, help="generator to invert into (e.g. the face base)")
    parser.add_argument("--faces", required=True, nargs="+", help="aligned face images or folders of them")
    parser.add_argument("--out", required=True, help="output folder (latents.npy, images/, manifest.json)")
    parser.add_argument("--steps", type=int, default=InversionConfig.steps)
    parser.add_argument("--space", default="w+", choices=("w", "w+"))
    parser.add_argument("--no-noise", action="store_true", help="keep the noise maps fixed")
    parser.add_argument("--limit", type=int, help="invert at most N faces")
    parser.add_argument("--identity", action="store_true", help="also report SFace identity similarity")
    parser.add_argument("--threads", type=int)


def run(args) -> int:
    from training.imagefolder import IMAGE_SUFFIXES, list_image_files
    from training.stylegan.checkpoint import load_generator
    from training.stylegan.generate import write_image_set

    if args.threads:
        torch.set_num_threads(args.threads)
    G = load_generator(args.generator)
    paths: list[Path] = []
    for item in map(Path, args.faces):
        paths += [p for p in list_image_files(item) if p.suffix.lower() in IMAGE_SUFFIXES] if item.is_dir() else [item]
    paths = paths[: args.limit] if args.limit else paths
    if not paths:
        raise TrainingError(f"no images found in {' '.join(args.faces)}")
    cfg = InversionConfig(steps=args.steps, space=args.space, optimize_noise=not args.no_noise)
    report = invert_files(G, paths, cfg, Progress(args.progress), identity=args.identity)
    info = {"mode": "inversion", "generator": str(args.generator), "config": cfg.__dict__, **report["summary"]}
    manifest = write_image_set(Path(args.out), report["images"], report["ws"], report["records"], info)
    log.info("inverted %d faces: %s (%s)", len(paths), report["summary"], manifest)
    return 0


def invert_files(
    G: Generator, paths: list[Path], cfg: InversionConfig, progress: Progress | None = None, identity: bool = False
) -> dict[str, Any]:
    """Invert each file; per-image and mean PSNR / LPIPS (at the generator's size) and optional identity."""
    targets, originals = load_targets(paths, G.img_resolution)
    inverter = Inverter(G, cfg)
    records, images, ws_all = [], [], []
    if progress is not None:
        progress.start("invert", len(paths))
    for i, (path, target) in enumerate(zip(paths, targets)):
        result = inverter.invert(to_tensor(target[None], "rgb"), seed=i)
        recon = to_uint8(result.image, "rgb")[0]
        with torch.no_grad():
            lp = float(inverter._perceptual(result.image, to_tensor(target[None], "rgb")))
        records.append({"source": str(path), "psnr": psnr(recon, target), "lpips": lp, "final_loss": result.losses[-1]})
        images.append(recon)
        ws_all.append(result.ws)
        if progress is not None:
            progress.update(i + 1, len(paths), psnr=records[-1]["psnr"], lpips=lp)
    if identity:
        from training.metrics import identity_similarity

        size = originals[0].shape[0]
        up = [
            cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2BGR), (o.shape[1], o.shape[0]), interpolation=cv2.INTER_CUBIC)
            for im, o in zip(images, originals)
        ]
        # What the generator's resolution alone loses: the target itself, down- and upsampled.
        ceiling = [
            cv2.resize(cv2.cvtColor(t, cv2.COLOR_RGB2BGR), (o.shape[1], o.shape[0]), interpolation=cv2.INTER_CUBIC)
            for t, o in zip(targets, originals)
        ]
        sims, ceil = identity_similarity(originals, up), identity_similarity(originals, ceiling)
        for rec, s, c in zip(records, sims, ceil):
            rec["identity"], rec["identity_ceiling"] = float(s), float(c)
        log.info("identity measured on %d² originals", size)
    summary = {
        f"mean_{k}": float(np.mean([r[k] for r in records]))
        for k in ("psnr", "lpips", "identity", "identity_ceiling")
        if k in records[0]
    }
    if progress is not None:
        progress.finish(**summary)
    return {"records": records, "images": np.stack(images), "ws": torch.cat(ws_all), "summary": summary}
