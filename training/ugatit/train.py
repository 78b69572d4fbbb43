"""The U-GAT-IT training loop and the ``ugatit`` stage.

One iteration = one discriminator step then one generator step on a batch of each domain, both
directions (A→B, B→A), exactly as the reference:

* D: LSGAN on the patch logits and on the CAM logits of the global and local discriminators of both
  domains (reals → 1, translations → 0), weight ``adv_weight``.
* G: LSGAN (translations → 1, both heads, both discriminators), cycle L1 ``A→B→A ≈ A``, identity L1
  ``B→A(A) ≈ A``, and the generator CAM loss (BCE: the CAM logit says "from my source domain" for the
  input it translates, "not" for the identity input); weights ``adv/cycle/identity/cam``.
* ρ clipping of every AdaLIN/LIN after the generator step, then the EMA update of both generators.

Reproducibility: the batches are a pure function of (seed, iteration) (see data.py) and nothing else
draws random numbers, so a resumed run continues bit-exactly (tested).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.errors import TrainingError
from training.images import grid, to_uint8
from training.loop import Budget, LoopOptions, add_loop_arguments, exit_code, loop_options, resume, train_loop
from training.modules import cpu_state_dict, load_strict, ramped_decay, update_ema
from training.options import add_config_arguments, apply_flags
from training.runs import AbortFlag, Progress, RunDir, abort_on_signals
from training.ugatit.config import PRESETS, TrainConfig
from training.ugatit.data import DomainSampler
from training.ugatit.networks import Discriminator, Generator, clip_rho

log = logging.getLogger(__name__)

ARCH = "ugatit"
GENERATORS = ("genA2B", "genB2A")
DISCRIMINATORS = ("disGA", "disGB", "disLA", "disLB")


class Trainer:
    """Networks, optimizers and the iteration counter; ``step()`` runs one iteration (a
    :class:`training.loop.Trainer`)."""

    progress_keys = ("loss_G", "loss_D", "cycle")

    def __init__(
        self, cfg: TrainConfig, images_a: np.ndarray, images_b: np.ndarray, total_steps: int, device: str = "cpu"
    ) -> None:
        if total_steps < 1:
            raise TrainingError(f"--steps must be ≥ 1, got {total_steps}")
        self.cfg = cfg
        self.device = device
        self.total_steps = total_steps
        self.data_a = DomainSampler(images_a, cfg.img_size, cfg.batch, cfg.seed, stream=0, flip=cfg.flip)
        self.data_b = DomainSampler(images_b, cfg.img_size, cfg.batch, cfg.seed, stream=1, flip=cfg.flip)
        torch.manual_seed(cfg.seed)
        self.genA2B = Generator(cfg.generator()).to(device)
        self.genB2A = Generator(cfg.generator()).to(device)
        self.disGA = Discriminator(cfg.discriminator("global")).to(device)
        self.disGB = Discriminator(cfg.discriminator("global")).to(device)
        self.disLA = Discriminator(cfg.discriminator("local")).to(device)
        self.disLB = Discriminator(cfg.discriminator("local")).to(device)
        self.ema = {name: copy.deepcopy(getattr(self, name)).eval().requires_grad_(False) for name in GENERATORS}
        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        self.opt_G = torch.optim.Adam(itertools.chain(*(self._net(n).parameters() for n in GENERATORS)), **adam)
        self.opt_D = torch.optim.Adam(itertools.chain(*(self._net(n).parameters() for n in DISCRIMINATORS)), **adam)
        self.iteration = 0
        self.images_per_step = cfg.batch
        device_type = torch.device(device).type
        self._autocast = (
            (lambda: torch.autocast(device_type, dtype=torch.bfloat16)) if cfg.precision == "bf16" else nullcontext
        )

    def _net(self, name: str) -> torch.nn.Module:
        return getattr(self, name)

    def lr_at(self, iteration: int) -> float:
        """Constant, then linear decay to 0 over the second half of ``total_steps`` (the reference's schedule)."""
        half = self.total_steps // 2
        if not self.cfg.decay or iteration < half:
            return self.cfg.lr
        return self.cfg.lr * max(self.total_steps - iteration, 0) / (self.total_steps - half)

    # ----- one iteration ---------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        lr = self.lr_at(self.iteration)
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr
        real_A = self.data_a.batch_at(self.iteration, self.device)  # [B, 3, S, S] in [-1, 1]
        real_B = self.data_b.batch_at(self.iteration, self.device)
        d_pairs = (
            ("GA", self.disGA, real_A),
            ("LA", self.disLA, real_A),
            ("GB", self.disGB, real_B),
            ("LB", self.disLB, real_B),
        )

        # Discriminators: reals → 1, translations into their domain → 0, patch and CAM heads.
        self._requires_grad(DISCRIMINATORS, True)
        with torch.no_grad(), self._autocast():
            fakes = {"A": self.genB2A(real_B)[0], "B": self.genA2B(real_A)[0]}
        with self._autocast():
            adv_D = real_A.new_zeros(())
            for name, D, real in d_pairs:
                real_logit, real_cam, _ = D(real)
                fake_logit, fake_cam, _ = D(fakes[name[1]])
                adv_D = adv_D + _lsgan(real_logit, 1) + _lsgan(real_cam, 1) + _lsgan(fake_logit, 0)
                adv_D = adv_D + _lsgan(fake_cam, 0)
            loss_D = cfg.adv_weight * adv_D
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        self.opt_D.step()

        # Generators: fool both discriminators, cycle back, leave the target domain alone, CAM.
        self._requires_grad(DISCRIMINATORS, False)
        with self._autocast():
            fake_A2B, cam_A2B, _ = self.genA2B(real_A)
            fake_B2A, cam_B2A, _ = self.genB2A(real_B)
            fake_A2B2A = self.genB2A(fake_A2B)[0]
            fake_B2A2B = self.genA2B(fake_B2A)[0]
            fake_A2A, cam_A2A, _ = self.genB2A(real_A)
            fake_B2B, cam_B2B, _ = self.genA2B(real_B)
            fakes = {"A": fake_B2A, "B": fake_A2B}
            adv_G = real_A.new_zeros(())
            for name, D, _ in d_pairs:
                logit, cam, _ = D(fakes[name[1]])
                adv_G = adv_G + _lsgan(logit, 1) + _lsgan(cam, 1)
            cycle = _l1(fake_A2B2A, real_A) + _l1(fake_B2A2B, real_B)
            identity = _l1(fake_A2A, real_A) + _l1(fake_B2B, real_B)
            cam_G = _bce(cam_B2A, 1) + _bce(cam_A2A, 0) + _bce(cam_A2B, 1) + _bce(cam_B2B, 0)
            loss_G = (
                cfg.adv_weight * adv_G
                + cfg.cycle_weight * cycle
                + cfg.identity_weight * identity
                + cfg.cam_weight * cam_G
            )
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        for name in GENERATORS:
            clip_rho(self._net(name))
        self._update_ema()
        self.iteration += 1
        stats = {
            "loss_D": loss_D,
            "loss_G": loss_G,
            "adv_D": adv_D,
            "adv_G": adv_G,
            "cycle": cycle,
            "identity": identity,
            "cam_G": cam_G,
        }
        return {k: float(v.detach()) for k, v in stats.items()}

    def gauges(self) -> dict[str, float]:
        return {"lr": self.lr_at(self.iteration), "rho_mean": self._rho_mean()}

    def samples(self) -> np.ndarray:
        return sample_grid(self)

    def _requires_grad(self, names: tuple[str, ...], flag: bool) -> None:
        for name in names:
            self._net(name).requires_grad_(flag)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = ramped_decay(self.cfg.ema_beta, self.iteration)
        for name in GENERATORS:
            update_ema(self.ema[name], self._net(name), decay)

    @torch.no_grad()
    def _rho_mean(self) -> float:
        rhos = [p for n, p in self.genA2B.named_parameters() if n.endswith("rho")]
        return float(torch.cat([r.flatten() for r in rhos]).mean())

    # ----- checkpoint state ------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        cfg = self.cfg
        model = {
            "arch": ARCH,
            "init_kwargs": {
                "generator": cfg.generator().to_dict(),
                "disc_global": cfg.discriminator("global").to_dict(),
                "disc_local": cfg.discriminator("local").to_dict(),
            },
            "params": {name: cpu_state_dict(self._net(name)) for name in GENERATORS + DISCRIMINATORS},
            "params_ema": {name: cpu_state_dict(self.ema[name]) for name in GENERATORS},
            "step": self.iteration,
        }
        state = {"iteration": self.iteration, "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict()}
        return model, state

    def load(self, model: dict[str, Any], state: dict[str, Any]) -> None:
        if model.get("arch") != ARCH:
            raise TrainingError(f"cannot resume from a '{model.get('arch')}' checkpoint: this is a U-GAT-IT run")
        for name in GENERATORS + DISCRIMINATORS:
            load_strict(self._net(name), model["params"][name], f"checkpoint [{name}]")
        for name in GENERATORS:
            load_strict(self.ema[name], model["params_ema"][name], f"checkpoint [{name} EMA]")
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.iteration = state["iteration"]


def _lsgan(x: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(x.float(), torch.full_like(x, target, dtype=torch.float32))


def _bce(logit: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logit.float(), torch.full_like(logit, target, dtype=torch.float32))


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(a.float(), b.float())


# ----- sample grids ----------------------------------------------------------------------------


def _overlay(heatmap: torch.Tensor, images: np.ndarray) -> np.ndarray:
    """CAM heatmaps ``[B, 1, h, w]`` (per-image min-max) in the JET colormap over ``[B, S, S, 3]`` uint8 RGB."""
    out = []
    for h, img in zip(heatmap.float().cpu().numpy()[:, 0], images):
        h = (h - h.min()) / max(float(h.max() - h.min()), 1e-8)
        h = cv2.resize((h * 255).astype(np.uint8), img.shape[:2][::-1], interpolation=cv2.INTER_CUBIC)
        jet = cv2.cvtColor(cv2.applyColorMap(h, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        out.append(((jet.astype(np.uint16) + img) // 2).astype(np.uint8))
    return np.stack(out)


@torch.no_grad()
def sample_grid(trainer: Trainer, n: int = 4) -> np.ndarray:
    """Columns = samples; rows A, CAM(A→B), A→B, A→B→A, B, CAM(B→A), B→A, B→A→B, from the EMA generators."""
    a2b, b2a = trainer.ema["genA2B"], trainer.ema["genB2A"]
    rows = []
    for real, forward, back in ((trainer.data_a, a2b, b2a), (trainer.data_b, b2a, a2b)):
        x = real.fixed(min(n, len(real)), trainer.device)
        y, _, heat = forward(x)
        rows += [
            to_uint8(x, "rgb"),
            _overlay(heat, to_uint8(x, "rgb")),
            to_uint8(y, "rgb"),
            to_uint8(back(y)[0], "rgb"),
        ]
    cols = min(len(r) for r in rows)
    return grid(np.concatenate([r[:cols] for r in rows]), cols=cols)


# ----- the ``ugatit`` stage ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--faces", nargs="+", required=True, help="domain A: a `train prepare` folder or aligned faces")
    parser.add_argument("--styles", nargs="+", required=True, help="domain B: style image folder(s)")
    parser.add_argument("--run", required=True, help="run directory (created, or resumed with --resume)")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, required=True, help="iterations; the lr decays over the second half")
    parser.add_argument("--cpu-minutes", type=float, help="stop early after this much CPU time (resume later)")
    add_config_arguments(parser, TrainConfig)
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    add_loop_arguments(parser)


def ugatit_stage(
    faces: list[Path],
    styles: list[Path],
    run: Path,
    cfg: TrainConfig,
    budget: Budget,
    progress: Progress,
    abort: AbortFlag,
    resume_run: bool = False,
    device: str = "cpu",
    loop: LoopOptions | None = None,
) -> dict[str, Any]:
    """The ``ugatit`` stage: train (or resume) a translator between aligned faces and style images in ``run``;
    ``budget.steps`` also sets the learning-rate schedule. Returns the loop's summary."""
    from training.ugatit.data import load_domain

    if budget.steps is None:
        raise TrainingError("a U-GAT-IT run needs a step budget (its learning rate decays over it)")
    domain_a = load_domain(faces, cfg.load_size, "face")
    domain_b = load_domain(styles, cfg.load_size, "style")
    options = {
        **cfg.to_dict(),
        "steps": budget.steps,
        "faces": [str(Path(f)) for f in faces],
        "styles": [str(Path(s)) for s in styles],
        "images_a": len(domain_a),
        "images_b": len(domain_b),
    }
    run_dir = RunDir.open(run, ARCH, options, resume=resume_run)
    try:
        trainer = Trainer(cfg, domain_a.images, domain_b.images, budget.steps, device)
        clock = resume(trainer, run_dir) if resume_run else None
        if clock is not None:
            log.info("resumed at iteration %d", trainer.iteration)
        log.info("%d faces, %d style images, %d² on %s", len(domain_a), len(domain_b), cfg.img_size, device)
        options = replace(loop or LoopOptions(budget), budget=budget)
        return train_loop([(trainer, run_dir)], options, ARCH, progress, abort, clock)
    finally:
        run_dir.close()


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = Budget(steps=args.steps, cpu_minutes=args.cpu_minutes)
    abort = AbortFlag()
    with abort_on_signals(abort):
        summary = ugatit_stage(
            args.faces,
            args.styles,
            args.run,
            apply_flags(PRESETS[args.preset], args),
            budget,
            Progress(args.progress),
            abort,
            args.resume,
            args.device,
            loop_options(args, budget, log_every=10, sample_every=200, ckpt_every=200),
        )
    return exit_code(summary)
