"""The one training loop every stage runs (StyleGAN, U-GAT-IT, students).

A stage provides a :class:`Trainer` (one optimisation step, its checkpoint records, its sample grid); the
loop owns everything around the steps, so it is written once:

* the budget (steps, process CPU minutes, wall minutes) and the run's accumulated CPU and wall time,
  which travel in the checkpoint (``state["clock"]``) so a resumed run keeps counting;
* stats: each step's scalars go to a :class:`StatsCollector`, which gives their means over the logging
  window, like stylegan3's ``training_stats``; ``stats.jsonl`` and the progress output only read it;
* samples every ``sample_every`` steps, checkpoints every ``ckpt_every``;
* abort (Ctrl-C, SIGTERM, the GUI) → checkpoint → return; the stage then exits with :data:`ABORTED_EXIT`.

Several trainers can step in lockstep (the student tiers, trained side by side on shared batches): each
keeps its own run directory, stats, samples and checkpoints. Resume is bit-exact when the trainer's steps
depend only on its state and the RNG, because the checkpoint stores both (``RunDir.save_checkpoint``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from training.errors import TrainingError
from training.images import save_rgb
from training.runs import AbortFlag, Progress, RunDir

ABORTED_EXIT = 130  # exit status of a stage stopped by a signal or the GUI: 128 + SIGINT, as a shell reports it


class Trainer(Protocol):
    """What the loop needs from a stage's trainer."""

    iteration: int  # optimisation steps done
    images_per_step: int  # real images one step learns from (for the throughput in the stats)
    progress_keys: tuple[str, ...]  # the scalars and gauges worth showing on a progress bar

    def step(self) -> dict[str, float]:
        """One optimisation step; returns its scalars (losses), averaged over the logging window."""

    def gauges(self) -> dict[str, float]:
        """Current values that are logged as they are, not averaged (learning rate, augment p, kimg)."""

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model record, training state) for a checkpoint (``RunDir.save_checkpoint``)."""

    def load(self, model: dict[str, Any], state: dict[str, Any]) -> None:
        """Continue from a checkpoint's records."""

    def samples(self) -> np.ndarray:
        """A sample grid of the current networks, RGB uint8; must not change the RNG state."""


@dataclass(frozen=True)
class Budget:
    """When to stop: whichever limit comes first (None = no limit)."""

    steps: int | None = None
    cpu_minutes: float | None = None
    wall_minutes: float | None = None

    def reached(self, step: int, clock: Clock) -> bool:
        return (
            (self.steps is not None and step >= self.steps)
            or (self.cpu_minutes is not None and clock.cpu_seconds >= self.cpu_minutes * 60)
            or (self.wall_minutes is not None and clock.wall_seconds >= self.wall_minutes * 60)
        )


@dataclass(frozen=True)
class LoopOptions:
    budget: Budget
    log_every: int = 10
    sample_every: int = 200
    ckpt_every: int = 200


LOOP_INTERVALS = ("log_every", "sample_every", "ckpt_every")


@dataclass
class Clock:
    """Process CPU and wall seconds a run has trained, summed over its resumed sessions."""

    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __post_init__(self) -> None:
        self._marks = (time.process_time(), time.perf_counter())

    def tick(self) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        self.cpu_seconds += cpu - self._marks[0]
        self.wall_seconds += wall - self._marks[1]
        self._marks = (cpu, wall)

    def record(self) -> dict[str, float]:
        return {"cpu_seconds": self.cpu_seconds, "wall_seconds": self.wall_seconds}

    @classmethod
    def of(cls, state: dict[str, Any]) -> Clock:
        """The clock a checkpoint's training state carries (earlier versions kept it at the top level)."""
        saved = state.get("clock", state)
        return cls(float(saved.get("cpu_seconds", 0.0)), float(saved.get("wall_seconds", 0.0)))


class StatsCollector:
    """Means of the scalars reported over a window of steps, and the window's throughput."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self.steps = 0
        self._t0 = time.perf_counter()

    def add(self, stats: dict[str, float]) -> None:
        for key, value in stats.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1
        self.steps += 1

    def flush(self, images_per_step: int) -> dict[str, float]:
        """The window's means plus steps and images per second; starts a new window."""
        seconds = max(time.perf_counter() - self._t0, 1e-9)
        record = {k: self._sums[k] / self._counts[k] for k in self._sums}
        record |= {"steps_per_s": self.steps / seconds, "img_per_s": self.steps * images_per_step / seconds}
        self._start()
        return record


@dataclass
class Member:
    """One trainer of a loop with the run directory it writes to (None on non-main distributed ranks)."""

    trainer: Trainer
    run: RunDir | None
    stats: StatsCollector = field(default_factory=StatsCollector)


def resume(trainer: Trainer, run: RunDir) -> Clock | None:
    """Load ``run``'s last checkpoint into ``trainer``; its clock, or None when the run has no checkpoint."""
    loaded = run.load_checkpoint()
    if loaded is None:
        return None
    trainer.load(*loaded)
    return Clock.of(loaded[1])


def exit_code(summary: dict[str, Any]) -> int:
    """A stage's exit status for its loop summary."""
    return ABORTED_EXIT if summary["aborted"] else 0


def train_loop(
    members: Sequence[tuple[Trainer, RunDir | None]],
    options: LoopOptions,
    stage: str,
    progress: Progress | None = None,
    abort: AbortFlag | None = None,
    clock: Clock | None = None,
    agree: Callable[[bool], bool] = bool,
    on_step: Callable[[Trainer, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Step ``members`` in lockstep until the budget is spent or an abort is requested; checkpoint and write
    samples at the end in either case. Returns a summary (steps, CPU and wall minutes, aborted).

    ``clock``: the run's time so far (from :func:`resume`); ``agree``: turns this process's "stop now" into
    the decision of all ranks of a distributed run; ``on_step``: sees every step's scalars (tests).
    """
    group = [Member(t, r) for t, r in members]
    lead = group[0].trainer
    if len({m.trainer.iteration for m in group}) != 1:
        raise TrainingError(f"trainers at different steps {[m.trainer.iteration for m in group]}; resume each alone")
    progress = progress or Progress("none")
    abort = abort if abort is not None else AbortFlag()
    clock = clock or Clock()
    budget = options.budget
    total = budget.steps or 0
    progress.start(stage, total, lead.iteration)
    if lead.iteration == 0:
        for m in group:
            _write_samples(m, progress)
    stats: dict[str, float] = {}
    while True:
        clock.tick()
        done = budget.reached(lead.iteration, clock)
        if agree(bool(abort) or done):
            aborted = not done
            break
        for m in group:
            stats = m.trainer.step()
            m.stats.add(stats)
            if on_step is not None:
                on_step(m.trainer, stats)
        clock.tick()
        step = lead.iteration
        for m in group:
            if step % options.log_every == 0:
                _write_stats(m, clock)
            if step % options.sample_every == 0:
                _write_samples(m, progress)
            if step % options.ckpt_every == 0:
                _save(m, clock)
        shown = stats | lead.gauges()
        progress.update(step, total, **{k: shown[k] for k in lead.progress_keys if k in shown})
    for m in group:
        if m.stats.steps:
            _write_stats(m, clock)
        _save(m, clock)
        if lead.iteration % options.sample_every:
            _write_samples(m, progress)
    summary = {
        "steps": lead.iteration,
        "cpu_minutes": clock.cpu_seconds / 60,
        "wall_minutes": clock.wall_seconds / 60,
        "aborted": aborted,
    }
    progress.finish(**summary)
    return summary


def _write_stats(member: Member, clock: Clock) -> None:
    trainer = member.trainer
    record = member.stats.flush(trainer.images_per_step)
    if member.run is not None:
        minutes = {"cpu_minutes": clock.cpu_seconds / 60, "wall_minutes": clock.wall_seconds / 60}
        member.run.write_stats({"step": trainer.iteration, **record, **trainer.gauges(), **minutes})


def _write_samples(member: Member, progress: Progress) -> None:
    if member.run is None:
        return
    image = member.trainer.samples()
    folder = member.run.root / "samples"
    path = save_rgb(folder / f"step_{member.trainer.iteration:07d}.png", image)
    save_rgb(folder / "latest.png", image)
    progress.sample(path)


def _save(member: Member, clock: Clock) -> None:
    if member.run is not None:
        model, state = member.trainer.state()
        member.run.save_checkpoint(model, {**state, "clock": clock.record()})


def add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-every``, ``--sample-every``, ``--ckpt-every`` (unset: the stage's defaults)."""
    for name in LOOP_INTERVALS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, help=f"steps between {name.split('_')[0]}s")


def loop_options(args: argparse.Namespace, budget: Budget, **defaults: int) -> LoopOptions:
    """The loop options a stage's command line asks for, over the stage's ``defaults``."""
    given = {n: getattr(args, n) for n in LOOP_INTERVALS if getattr(args, n, None) is not None}
    return LoopOptions(budget, **(defaults | given))
