"""The StyleGAN2-ADA training loop.

One iteration runs the phases G main → G path-length reg (every ``pl_interval``) → D main → D R1
(every ``r1_interval``), then the EMA update and, every ``ada_interval``, the ADA probability update.
The global batch is split into rounds of ``batch_gpu`` images; with ``torchrun`` each rank runs its
share of the rounds and gradients are summed over ranks (see distributed.py), so a 2-process run and
a 1-process run with the same batch and ``batch_gpu`` compute the same thing.

Reproducibility: the global RNG is re-seeded from (seed, iteration, phase, global round index) before
every round, and the data order is a pure function of (seed, iteration). A run therefore depends only
on its configuration and the weights/optimizer/ADA state at an iteration: resuming from a checkpoint
continues bit-exactly, and the ranks of a distributed run draw exactly the numbers a single process
would draw for the same rounds.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.errors import TrainingError
from training.images import grid, save_grid, to_uint8
from training.loop import Budget, Clock, LoopOptions, add_loop_arguments, exit_code, loop_options, resume, train_loop
from training.modules import cpu_state_dict, load_strict, update_ema
from training.options import add_config_arguments, apply_flags
from training.runs import AbortFlag, Progress, RunDir
from training.stylegan import loss as L
from training.stylegan.augment import AdaController, AugmentPipe
from training.stylegan.checkpoint import RUN_ARCH, LoadedNetworks, save_generator
from training.stylegan.config import TrainConfig
from training.stylegan.distributed import World
from training.stylegan.networks import Discriminator, Generator

log = logging.getLogger(__name__)


def _round_seed(seed: int, iteration: int, phase: int, round_idx: int) -> int:
    return (seed * 1_000_003 + iteration * 1_009 + phase * 101 + round_idx) % (2**62)


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def build_discriminator(cfg: TrainConfig, device: str) -> torch.nn.Module:
    if cfg.discriminator == "projected":
        from training.stylegan.projected import ProjectedDiscriminator

        return ProjectedDiscriminator(cfg.resolution, channels=cfg.projected_channels, device=device, seed=cfg.seed)
    return Discriminator(cfg.discriminator_config())


class Trainer:
    """Holds the networks, optimizers and loop state; ``step()`` runs one iteration (a
    :class:`training.loop.Trainer`)."""

    progress_keys = ("loss_G", "loss_D", "augment_p")

    def __init__(
        self, cfg: TrainConfig, images: np.ndarray, world: World = World(), base: LoadedNetworks | None = None
    ) -> None:
        self.cfg = cfg
        self.world = world
        self.device = world.device
        if images.shape[1] != cfg.resolution:
            raise TrainingError(f"images are {images.shape[1]}², the configuration trains {cfg.resolution}²")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)  # [N, R, R, 3] uint8
        torch.manual_seed(cfg.seed)
        self.G = Generator(cfg.generator()).to(self.device).train()
        self.D = build_discriminator(cfg, self.device).to(self.device).train()
        if base is not None:
            self._load_base(base)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if base is not None:
            self.G_ema.load_state_dict(base.G_ema.state_dict())
        if cfg.channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)
        self.frozen = self._freeze()
        self.opt_G = self._optimizer(self.G, cfg.g_lr, cfg.pl_interval if cfg.pl_weight > 0 else None, cfg.g_lr_mult)
        self.opt_D = self._optimizer(self.D, cfg.d_lr, cfg.r1_interval if self._use_r1 else None, cfg.d_lr_mult)
        self.augment = AugmentPipe().to(self.device) if cfg.augment != "none" else None
        self.ada = AdaController(target=cfg.ada_target, interval=cfg.ada_interval, speed_kimg=cfg.ada_kimg)
        self.ada.p = cfg.aug_p
        self.pl_mean = torch.zeros([], device=self.device)
        self.iteration = 0
        self.nimg = 0
        self.images_per_step = cfg.batch
        # fixed latents of the sample grids, drawn without touching the global RNG
        self.grid_z = torch.randn([16, cfg.z_dim], generator=torch.Generator().manual_seed(1234)).to(self.device)
        self._perm_cache: dict[int, torch.Tensor] = {}
        autocast = None
        if cfg.precision == "bf16":
            autocast = torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)
        D_main = self.D
        if cfg.compile:
            D_main = torch.compile(self.D)
        common = dict(
            G=self.G,
            augment=self.augment,
            style_mixing=cfg.style_mixing,
            r1_gamma=cfg.r1_gamma,
            pl_weight=cfg.pl_weight,
            pl_batch_shrink=cfg.pl_batch_shrink,
            autocast=autocast,
        )
        self.ctx_main = L.LossContext(D=D_main, **common)
        self.ctx_reg = L.LossContext(D=self.D, **common)  # double backward does not go through torch.compile

    # ----- setup -------------------------------------------------------------------------------

    @property
    def _use_r1(self) -> bool:
        return self.cfg.r1_gamma > 0 and self.cfg.discriminator == "stylegan"

    def _load_base(self, base: LoadedNetworks) -> None:
        load_strict(self.G, (base.G or base.G_ema).state_dict(), base.source)
        if base.D is not None and isinstance(self.D, Discriminator):
            try:
                load_strict(self.D, base.D.state_dict(), base.source + " [D]")
            except TrainingError as exc:
                log.warning("base discriminator not used: %s", exc)
        elif isinstance(self.D, Discriminator):
            log.info("the base has no discriminator: D starts from scratch")

    def _freeze(self) -> set[str]:
        """Names of parameters that never train (frozen G prefixes, the first ``freeze_d`` D blocks)."""
        frozen: set[str] = set()
        for name, _ in self.G.named_parameters():
            if any(_matches(name, p) for p in self.cfg.freeze_g):
                frozen.add("G." + name)
        if self.cfg.freeze_d and isinstance(self.D, Discriminator):
            blocks = [f"b{r}" for r in self.D.block_resolutions[: self.cfg.freeze_d]]
            for name, _ in self.D.named_parameters():
                if any(_matches(name, b) for b in blocks):
                    frozen.add("D." + name)
        elif self.cfg.freeze_d:
            log.warning("--freeze-d applies to the StyleGAN discriminator only; the projected one is ignored")
        for prefix, module in (("G.", self.G), ("D.", self.D)):
            for name, p in module.named_parameters():
                if prefix + name in frozen:
                    p.requires_grad_(False)
        if frozen:
            log.info("frozen parameters: %d tensors (%s)", len(frozen), ", ".join(self.cfg.freeze_g) or "-")
        return frozen

    def _trainable(self, module: torch.nn.Module, prefix: str) -> list[tuple[str, torch.nn.Parameter]]:
        params = getattr(module, "trainable_named_parameters", module.named_parameters)()
        return [(n, p) for n, p in params if prefix + n not in self.frozen]

    def _optimizer(
        self, module: torch.nn.Module, lr: float, reg_interval: int | None, mults: tuple[tuple[str, float], ...]
    ) -> torch.optim.Adam:
        """Adam(β1=0, β2=0.99) with the lazy-regularisation correction and per-prefix lr multipliers."""
        ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
        prefix = "G." if module is self.G else "D."
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for name, p in self._trainable(module, prefix):
            mult = 1.0
            best = -1
            for pre, m in mults:
                if _matches(name, pre) and len(pre) > best:
                    mult, best = m, len(pre)
            groups.setdefault(mult, []).append(p)
        param_groups = [{"params": ps, "lr": lr * ratio * m} for m, ps in sorted(groups.items())]
        return torch.optim.Adam(param_groups, lr=lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)

    def _set_requires_grad(self, module: torch.nn.Module, flag: bool) -> None:
        prefix = "G." if module is self.G else "D."
        for _, p in self._trainable(module, prefix):
            p.requires_grad_(flag)

    # ----- data --------------------------------------------------------------------------------

    def _batch_indices(self, iteration: int) -> torch.Tensor:
        """Global batch of iteration ``iteration``: consecutive slices of per-epoch permutations."""
        n = self.images.shape[0]
        start = iteration * self.cfg.batch
        out = []
        for k in range(start, start + self.cfg.batch):
            epoch, pos = divmod(k, n)
            perm = self._perm_cache.get(epoch)
            if perm is None:
                gen = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
                perm = torch.randperm(n, generator=gen)
                self._perm_cache = {epoch: perm}
            out.append(int(perm[pos]))
        return torch.tensor(out)

    def _my_rounds(self) -> list[int]:
        """Global round indices this rank runs (round r covers images [r·batch_gpu, (r+1)·batch_gpu))."""
        total = self.cfg.batch // self.cfg.batch_gpu
        if total % self.world.size:
            raise TrainingError(
                f"batch {self.cfg.batch} / batch_gpu {self.cfg.batch_gpu} = {total} rounds cannot be split over "
                f"{self.world.size} processes"
            )
        per = total // self.world.size
        return [k * self.world.size + self.world.rank for k in range(per)]

    # ----- one iteration ---------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        cfg = self.cfg
        it = self.iteration
        total_rounds = cfg.batch // cfg.batch_gpu
        rounds = self._my_rounds()
        idx = self._batch_indices(it).to(self.device)
        reals = self.images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1  # [B, 3, R, R] in [-1, 1]
        if cfg.channels_last:
            reals = reals.contiguous(memory_format=torch.channels_last)
        self.augment_p_sync()
        logged: dict[str, torch.Tensor] = {}

        def add(stats: dict[str, torch.Tensor], weight: float) -> None:
            for k, v in stats.items():
                logged[k] = logged.get(k, torch.zeros([], device=self.device)) + v.float() * weight

        def seed(phase: int, r: int) -> None:
            torch.manual_seed(_round_seed(cfg.seed, it, phase, r))

        # G main.
        self._set_requires_grad(self.G, True)
        self._set_requires_grad(self.D, False)
        self.opt_G.zero_grad(set_to_none=True)
        w_sum = torch.zeros([cfg.w_dim], device=self.device)
        for r in rounds:
            seed(0, r)
            z = torch.randn([cfg.batch_gpu, cfg.z_dim], device=self.device)
            loss, stats, w_mean = L.g_main(self.ctx_main, z, gain=1 / total_rounds)
            loss.backward()
            add(stats, 1 / total_rounds)
            w_sum += w_mean / total_rounds
        self._opt_step(self.opt_G, self.G, "G.")
        self.G.mapping.update_w_avg(self.world.all_reduce_sum(w_sum), beta=0.995)

        # G path-length regularisation.
        if cfg.pl_weight > 0 and it % cfg.pl_interval == 0:
            self.opt_G.zero_grad(set_to_none=True)
            len_sum = torch.zeros([], device=self.device)
            for r in rounds:
                seed(1, r)
                z = torch.randn([cfg.batch_gpu, cfg.z_dim], device=self.device)
                loss, stats, lengths = L.g_reg(self.ctx_reg, z, self.pl_mean, gain=cfg.pl_interval / total_rounds)
                loss.backward()
                add(stats, 1 / total_rounds)
                len_sum += lengths / total_rounds
            self._opt_step(self.opt_G, self.G, "G.")
            self.pl_mean.copy_(self.pl_mean.lerp(self.world.all_reduce_sum(len_sum), cfg.pl_decay))

        # D main.
        self._set_requires_grad(self.G, False)
        self._set_requires_grad(self.D, True)
        self.opt_D.zero_grad(set_to_none=True)
        for r in rounds:
            seed(2, r)
            z = torch.randn([cfg.batch_gpu, cfg.z_dim], device=self.device)
            real = reals[r * cfg.batch_gpu : (r + 1) * cfg.batch_gpu]
            loss, stats, real_logits = L.d_main(self.ctx_main, real, z, gain=1 / total_rounds)
            loss.backward()
            add(stats, 1 / total_rounds)
            self.ada.accumulate(real_logits)
        self._opt_step(self.opt_D, self.D, "D.")

        # D R1 regularisation.
        if self._use_r1 and it % cfg.r1_interval == 0:
            self.opt_D.zero_grad(set_to_none=True)
            for r in rounds:
                seed(3, r)
                real = reals[r * cfg.batch_gpu : (r + 1) * cfg.batch_gpu]
                loss, stats = L.d_reg(self.ctx_reg, real, gain=cfg.r1_interval / total_rounds)
                loss.backward()
                add(stats, 1 / total_rounds)
            self._opt_step(self.opt_D, self.D, "D.")
        self._set_requires_grad(self.G, True)

        self._update_ema()
        self.iteration += 1
        self.nimg += cfg.batch
        if cfg.augment == "ada" and self.iteration % cfg.ada_interval == 0:
            totals = torch.tensor([self.ada.sign_sum, self.ada.count], dtype=torch.float64, device=self.device)
            self.world.all_reduce_sum(totals)
            self.ada.adjust(cfg.batch, (float(totals[0]), float(totals[1])))
        names = sorted(logged)
        values = torch.stack([logged[k] for k in names]) if names else torch.zeros(0, device=self.device)
        values = self.world.all_reduce_sum(values)
        return {k: float(v) for k, v in zip(names, values.cpu())}

    def gauges(self) -> dict[str, float]:
        out = {"kimg": self.nimg / 1000, "augment_p": self.augment_p}
        if self.cfg.augment == "ada":
            out["ada_rt"] = self.ada.r_t
        return out

    @torch.no_grad()
    def samples(self) -> np.ndarray:
        rng = torch.get_rng_state()  # noise buffers aside, synthesis may draw: keep the training stream intact
        images = self.G_ema(self.grid_z, noise_mode="const")
        torch.set_rng_state(rng)
        return grid(to_uint8(images, "rgb"), cols=4)

    @property
    def augment_p(self) -> float:
        if self.cfg.augment == "none":
            return 0.0
        return self.ada.p

    def augment_p_sync(self) -> None:
        if self.augment is not None:
            self.augment.p = self.augment_p

    def _opt_step(self, opt: torch.optim.Optimizer, module: torch.nn.Module, prefix: str) -> None:
        params = [p for _, p in self._trainable(module, prefix)]
        self.world.all_reduce_grads(params)
        for p in params:
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()

    @torch.no_grad()
    def _update_ema(self) -> None:
        cfg = self.cfg
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * cfg.ema_rampup)
        update_ema(self.G_ema, self.G, 0.5 ** (cfg.batch / max(ema_nimg, 1e-8)))

    # ----- checkpoint state --------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        d_kwargs = self.cfg.discriminator_config().to_dict() if isinstance(self.D, Discriminator) else {}
        model = {
            "arch": RUN_ARCH,
            "init_kwargs": {"G": self.G.cfg.to_dict(), "D": d_kwargs, "discriminator": self.cfg.discriminator},
            "params": {"G": cpu_state_dict(self.G), "D": cpu_state_dict(self.D)},
            "params_ema": {"G": cpu_state_dict(self.G_ema)},
            "step": self.iteration,
        }
        state = {
            "iteration": self.iteration,
            "nimg": self.nimg,
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "ada": self.ada.state_dict(),
            "pl_mean": self.pl_mean.cpu(),
        }
        return model, state

    def load(self, model: dict[str, Any], state: dict[str, Any]) -> None:
        load_strict(self.G, model["params"]["G"], "checkpoint [G]")
        load_strict(self.D, model["params"]["D"], "checkpoint [D]")
        load_strict(self.G_ema, model["params_ema"]["G"], "checkpoint [G_ema]")
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.ada.load_state_dict(state["ada"])
        self.pl_mean.copy_(state["pl_mean"])
        self.iteration = state["iteration"]
        self.nimg = state["nimg"]


# ----- the shared loop, with snapshots -----------------------------------------------------------


@dataclass(frozen=True)
class Snapshots:
    """When to keep a G_ema snapshot (for the FID curve and curation): every N CPU minutes or N kimg."""

    cpu_minutes: float | None = None
    kimg: float | None = None

    def due(self, trainer: Trainer, clock: Clock) -> float | None:
        """The snapshot index the run has reached (None when snapshots are off)."""
        if self.cpu_minutes:
            return math.floor(clock.cpu_seconds / (self.cpu_minutes * 60))
        if self.kimg:
            return math.floor(trainer.nimg / (self.kimg * 1000))
        return None


def budget_of(cfg: TrainConfig, steps=None, kimg=None, cpu_minutes=None, wall_minutes=None) -> Budget:
    """The loop's budget for a StyleGAN run: ``kimg`` becomes steps (every step shows ``cfg.batch`` reals)."""
    limits = [n for n in (steps, math.ceil(kimg * 1000 / cfg.batch) if kimg is not None else None) if n is not None]
    return Budget(steps=min(limits) if limits else None, cpu_minutes=cpu_minutes, wall_minutes=wall_minutes)


def train(
    trainer: Trainer,
    run: RunDir | None,
    options: LoopOptions,
    snapshots: Snapshots = Snapshots(),
    progress: Progress | None = None,
    abort: AbortFlag | None = None,
    clock: Clock | None = None,
    on_step: Callable[[Trainer, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """:func:`training.loop.train_loop` with what StyleGAN adds: the reals grid, G_ema snapshots, ranks that
    stop together. ``run`` is None on non-zero ranks (they neither log nor write)."""
    clock = clock or Clock()
    if run is not None and trainer.iteration == 0:
        save_grid(run.root / "samples" / "reals.png", trainer.images[:16].cpu().numpy())
    last = snapshots.due(trainer, clock)

    def after_step(t: Trainer, stats: dict[str, float]) -> None:
        nonlocal last
        if on_step is not None:
            on_step(t, stats)
        due = snapshots.due(t, clock)
        if run is not None and due is not None and due > last:
            _write_snapshot(t, run, clock)
            last = due

    summary = train_loop([(trainer, run)], options, "stylegan", progress, abort, clock, trainer.world.any, after_step)
    if run is not None and last is not None:
        _write_snapshot(trainer, run, clock)
    return summary | trainer.gauges()


def _write_snapshot(trainer: Trainer, run: RunDir, clock: Clock) -> None:
    meta = {
        "iteration": trainer.iteration,
        "cpu_minutes": clock.cpu_seconds / 60,
        "wall_minutes": clock.wall_seconds / 60,
        **trainer.gauges(),
    }
    save_generator(trainer.G_ema, run.root / "snapshots" / f"G_ema-{trainer.iteration:07d}.pt", meta)


# ----- the ``stylegan`` stage ------------------------------------------------------------------


def add_arguments(parser) -> None:
    from training.stylegan.config import PRESETS

    parser.add_argument("--data", nargs="+", required=True, help="style image folder(s)")
    parser.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        help="run directory (created, or resumed with --resume); under torchrun spell it --run-dir, since "
        "torchrun's own parser takes --run for an abbreviation of --run-path",
    )
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="defaults of the options below")
    parser.add_argument("--base", help="base checkpoint: ours (run dir, model.json, generator file) or official")
    parser.add_argument(
        "--no-variety-tricks",
        action="store_true",
        help="with --base: plain fine-tuning (no frozen mapping, lr multipliers, Freeze-D)",
    )
    add_config_arguments(parser, TrainConfig)
    parser.add_argument("--lr", type=float, help="G and D learning rate")
    parser.add_argument("--kimg", type=float, help="stop after this many thousand real images shown")
    parser.add_argument("--steps", type=int, help="stop after this many iterations")
    parser.add_argument("--cpu-minutes", type=float, help="stop after this much process CPU time")
    parser.add_argument("--wall-minutes", type=float, help="stop after this much training wall time")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    add_loop_arguments(parser)
    parser.add_argument("--snapshot-cpu-minutes", type=float, help="save a G_ema snapshot every N CPU minutes")
    parser.add_argument("--snapshot-kimg", type=float, help="save a G_ema snapshot every N kimg")


def finetune_config(cfg: TrainConfig, base: LoadedNetworks, variety_tricks: bool = True) -> TrainConfig:
    """A preset fitted to a base generator: its architecture, and (by default) the variety tricks."""
    from training.stylegan.config import VARIETY_TRICKS

    cfg = cfg.with_generator(base.G_ema.cfg)
    return replace(cfg, **VARIETY_TRICKS) if variety_tricks else cfg


def config_from_args(args, base: LoadedNetworks | None) -> TrainConfig:
    """Preset ← explicit options; a base generator fixes the architecture and enables the variety tricks."""
    from training.stylegan.config import PRESETS

    cfg = PRESETS[args.preset]
    if base is not None:
        cfg = finetune_config(cfg, base, variety_tricks=not args.no_variety_tricks)
    preset_resolution = cfg.resolution
    if args.batch is not None and args.batch_gpu is None:
        args.batch_gpu = min(args.batch, cfg.batch_gpu)  # rounds no larger than the batch
    if args.lr is not None:
        args.g_lr = args.d_lr = args.lr
    cfg = apply_flags(cfg, args)
    if base is not None and cfg.resolution != preset_resolution:
        raise TrainingError(f"--resolution {cfg.resolution} differs from the base's {preset_resolution}²")
    return cfg


def stylegan_stage(
    data: list[Path],
    run: Path,
    cfg: TrainConfig,
    budget: Budget,
    progress: Progress | None,
    abort: AbortFlag,
    base: LoadedNetworks | None = None,
    resume_run: bool = False,
    device: str = "cpu",
    loop: LoopOptions | None = None,
    snapshots: Snapshots = Snapshots(),
) -> dict[str, Any]:
    """The ``stylegan`` stage: train or fine-tune (from ``base``) a generator on style image folders in
    ``run``; under torchrun each rank calls it. Returns the loop's summary."""
    from training.imagefolder import load_image_folder
    from training.stylegan.distributed import init_world, shutdown

    if budget == Budget():
        raise TrainingError("give a budget: --kimg, --steps, --cpu-minutes or --wall-minutes")
    world = init_world(device)
    images = load_image_folder(data, cfg.resolution)
    options = {
        **cfg.to_dict(),
        "data": [str(Path(d)) for d in data],
        "images": len(images),
        "base": base.source if base is not None else None,
    }
    run_dir = RunDir.open(run, "stylegan", options, resume=resume_run) if world.is_main else None
    try:
        if world.distributed:
            torch.distributed.barrier()
        trainer = Trainer(cfg, images.images, world, base)
        clock = resume(trainer, run_dir or RunDir(Path(run), "stylegan", options)) if resume_run else None
        if clock is not None:
            log.info("resumed at iteration %d (%.2f kimg)", trainer.iteration, trainer.nimg / 1000)
        options = replace(loop or LoopOptions(budget), budget=budget)
        return train(trainer, run_dir, options, snapshots, progress if world.is_main else None, abort, clock)
    finally:
        if run_dir is not None:
            run_dir.close()
        shutdown(world)


def run(args) -> int:
    from training.runs import abort_on_signals
    from training.stylegan.checkpoint import load_networks

    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_networks(args.base) if args.base else None
    cfg = config_from_args(args, base)
    budget = budget_of(cfg, args.steps, args.kimg, args.cpu_minutes, args.wall_minutes)
    abort = AbortFlag()
    with abort_on_signals(abort):
        summary = stylegan_stage(
            args.data,
            args.run,
            cfg,
            budget,
            Progress(args.progress),
            abort,
            base,
            args.resume,
            args.device,
            loop_options(args, budget),
            Snapshots(args.snapshot_cpu_minutes, args.snapshot_kimg),
        )
    return exit_code(summary)
