"""The shared training loop: window-mean stats, samples, checkpoints, budgets, the carried clock, abort."""

import json

import numpy as np
import pytest
import torch

from training.errors import TrainingError
from training.loop import ABORTED_EXIT, Budget, Clock, LoopOptions, exit_code, resume, train_loop
from training.runs import AbortFlag, RunDir


class Counter:
    """A trainer whose step n reports loss n: every window mean is known exactly."""

    progress_keys = ("loss",)
    images_per_step = 2

    def __init__(self) -> None:
        self.iteration = 0
        self.w = torch.zeros(3)

    def step(self) -> dict[str, float]:
        self.iteration += 1
        self.w += 1
        return {"loss": float(self.iteration)}

    def gauges(self) -> dict[str, float]:
        return {"lr": 0.5 * self.iteration}

    def state(self):
        model = {"arch": "counter", "init_kwargs": {}, "params": {"w": self.w.clone()}, "step": self.iteration}
        return model, {"iteration": self.iteration}

    def load(self, model, state) -> None:
        self.w = model["params"]["w"].clone()
        self.iteration = state["iteration"]

    def samples(self) -> np.ndarray:
        return np.full((4, 6, 3), self.iteration, np.uint8)


def _run(root):
    return RunDir.open(root, "counter", {}, resume=True), Counter()


def test_stats_are_window_means_with_gauges_and_throughput(tmp_path):
    run, trainer = _run(tmp_path / "run")
    summary = train_loop([(trainer, run)], LoopOptions(Budget(steps=7), 3, 100, 100), "counter")
    stats = run.read_stats()
    assert [s["step"] for s in stats] == [3, 6, 7]  # the last, partial window is written too
    assert [s["loss"] for s in stats] == [2.0, 5.0, 7.0]  # means of 1..3, 4..6 and 7
    assert [s["lr"] for s in stats] == [1.5, 3.0, 3.5]  # gauges as they are at the record
    assert all(s["img_per_s"] == pytest.approx(2 * s["steps_per_s"]) and s["cpu_minutes"] >= 0 for s in stats)
    assert summary["steps"] == 7 and not summary["aborted"] and exit_code(summary) == 0


def test_samples_and_checkpoints_at_their_intervals_and_at_the_end(tmp_path, monkeypatch):
    run, trainer = _run(tmp_path / "run")
    saved = []
    real_save = run.save_checkpoint
    monkeypatch.setattr(run, "save_checkpoint", lambda m, s: (saved.append(s["iteration"]), real_save(m, s)))
    train_loop([(trainer, run)], LoopOptions(Budget(steps=5), 10, 2, 2), "counter")
    names = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert names == ["latest.png", *(f"step_{n:07d}.png" for n in (0, 2, 4, 5))]
    assert saved == [2, 4, 5]
    model, state = run.load_checkpoint()
    assert state["iteration"] == 5 and torch.equal(model["params"]["w"], torch.full((3,), 5.0))


def test_an_abort_checkpoints_and_the_run_resumes_with_its_clock(tmp_path):
    run, trainer = _run(tmp_path / "run")
    abort = AbortFlag()

    def stop_at_3(t, _stats):
        if t.iteration == 3:
            abort.request()

    summary = train_loop([(trainer, run)], LoopOptions(Budget(steps=6)), "counter", abort=abort, on_step=stop_at_3)
    assert summary["aborted"] and summary["steps"] == 3 and exit_code(summary) == ABORTED_EXIT == 130
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert "clock" in json.dumps(state)
    again = Counter()
    clock = resume(again, run)
    assert again.iteration == 3 and clock.wall_seconds == pytest.approx(summary["wall_minutes"] * 60)
    summary = train_loop([(again, run)], LoopOptions(Budget(steps=6)), "counter", clock=clock)
    assert summary["steps"] == 6 and not summary["aborted"]
    assert summary["wall_minutes"] >= clock.wall_seconds / 60 > 0  # the time keeps counting across sessions
    assert resume(Counter(), RunDir(tmp_path / "empty", "counter")) is None


def test_time_budgets_count_the_time_of_earlier_sessions(tmp_path):
    run, trainer = _run(tmp_path / "run")
    spent = Clock(cpu_seconds=120.0, wall_seconds=300.0)
    summary = train_loop([(trainer, run)], LoopOptions(Budget(wall_minutes=5)), "counter", clock=spent)
    assert summary["steps"] == 0  # five minutes were already spent
    summary = train_loop([(trainer, run)], LoopOptions(Budget(steps=50, cpu_minutes=2)), "counter", clock=spent)
    assert summary["steps"] == 0
    assert Clock.of({"cpu_seconds": 7.0, "wall_seconds": 9.0}).record() == {"cpu_seconds": 7.0, "wall_seconds": 9.0}


def test_trainers_step_in_lockstep_and_all_ranks_stop_together(tmp_path):
    (run_a, a), (run_b, b) = _run(tmp_path / "a"), _run(tmp_path / "b")
    train_loop([(a, run_a), (b, run_b)], LoopOptions(Budget(steps=4), 2), "pair")
    assert a.iteration == b.iteration == 4
    assert [s["step"] for s in run_b.read_stats()] == [2, 4]
    b.iteration = 5
    with pytest.raises(TrainingError, match=r"different steps \[4, 5\]"):
        train_loop([(a, run_a), (b, run_b)], LoopOptions(Budget(steps=8)), "pair")
    # another rank wants to stop: this one stops too, and a rank without a run directory writes nothing
    lone = Counter()
    summary = train_loop([(lone, None)], LoopOptions(Budget(steps=9)), "rank1", agree=lambda _stop: lone.iteration >= 2)
    assert summary["steps"] == 2 and summary["aborted"]
