"""Training loop: bit-exact resume (CI acceptance), interruption, budgets, transfer-learning options."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training.errors import TrainingError
from training.loop import Budget, LoopOptions
from training.loop import resume as resume_run
from training.runs import AbortFlag, RunDir
from training.stylegan.checkpoint import load_networks
from training.stylegan.config import PRESETS
from training.stylegan.train import Trainer, train

REPO = Path(__file__).resolve().parents[3]
# Every phase and the ADA update happen within a few iterations.
CFG = replace(PRESETS["tiny"], r1_interval=4, pl_interval=2, ada_interval=2, batch=4, batch_gpu=2)
LOSSES = ("loss_G", "loss_D", "pl_penalty", "r1_penalty", "augment_p")


def _images(n=12, res=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, res, res, 3), dtype=np.uint8)


def _train(run_root, iterations, abort_at=None, resume=False, cfg=CFG):
    run = RunDir.open(run_root, "stylegan", cfg.to_dict(), resume=resume)
    trainer = Trainer(cfg, _images())
    clock = resume_run(trainer, run) if resume else None
    records = []
    abort = AbortFlag()

    def on_iteration(t, stats):
        seen = stats | t.gauges()
        records.append({k: seen[k] for k in LOSSES if k in seen} | {"iteration": t.iteration})
        if abort_at is not None and t.iteration == abort_at:
            abort.request()

    options = LoopOptions(Budget(steps=iterations), log_every=1, sample_every=100, ckpt_every=100)
    summary = train(trainer, run, options, abort=abort, clock=clock, on_step=on_iteration)
    run.close()
    return trainer, records, summary


def test_resume_after_interruption_is_bit_exact(tmp_path):
    full, full_records, _ = _train(tmp_path / "full", 10)
    # Interrupted at iteration 5 (an abort request, as Ctrl-C or the GUI sends): checkpoint written.
    _, first, summary = _train(tmp_path / "split", 10, abort_at=5)
    assert summary["aborted"] and summary["steps"] == 5
    assert first == full_records[:5]
    resumed, rest, summary = _train(tmp_path / "split", 10, resume=True)
    assert not summary["aborted"] and summary["steps"] == 10
    # The next k losses after the resume equal the uninterrupted run's, bit for bit.
    assert rest == full_records[5:]
    assert any("r1_penalty" in r for r in rest) and any("pl_penalty" in r for r in rest)
    for name in ("G", "D", "G_ema"):
        a, b = getattr(full, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert full.ada.p == resumed.ada.p > 0


def test_stats_samples_and_checkpoint_files(tmp_path):
    _train(tmp_path / "run", 3)
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [1, 2, 3]
    assert all(np.isfinite(s["loss_G"]) and np.isfinite(s["loss_D"]) for s in stats)
    assert (tmp_path / "run" / "samples" / "latest.png").stat().st_size > 0
    nets = load_networks(tmp_path / "run")
    assert nets.kind == "run" and nets.G_ema.img_resolution == 16 and nets.D is not None


def test_changing_the_architecture_on_resume_is_refused(tmp_path):
    _train(tmp_path / "run", 2)
    with pytest.raises(TrainingError, match="changed options"):
        RunDir.open(tmp_path / "run", "stylegan", replace(CFG, channel_max=16).to_dict(), resume=True)


def test_freezing_and_lr_multipliers(tmp_path):
    cfg = replace(CFG, freeze_g=("mapping",), freeze_d=1, g_lr_mult=(("synthesis.b4", 0.1),))
    torch.manual_seed(0)
    trainer = Trainer(cfg, _images())
    before_g = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    before_d = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    for _ in range(3):
        trainer.step()
    after_g, after_d = trainer.G.state_dict(), trainer.D.state_dict()
    assert all(torch.equal(before_g[k], after_g[k]) for k in before_g if k.startswith("mapping.fc"))
    assert all(torch.equal(before_d[k], after_d[k]) for k in before_d if k.startswith("b16."))
    assert not torch.equal(before_g["synthesis.b16.conv1.weight"], after_g["synthesis.b16.conv1.weight"])
    assert not torch.equal(before_d["b8.conv0.weight"], after_d["b8.conv0.weight"])
    lrs = sorted(g["lr"] for g in trainer.opt_G.param_groups)
    assert lrs[0] == pytest.approx(lrs[-1] * 0.1)


def test_transfer_from_a_base_checkpoint_starts_from_its_weights(tmp_path):
    base, _, _ = _train(tmp_path / "base", 2)
    nets = load_networks(tmp_path / "base")
    child = Trainer(CFG, _images(seed=1), base=nets)
    for name in ("G", "G_ema", "D"):
        a, b = getattr(base, name).state_dict(), getattr(child, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def _cli_command(tmp_path, run, progress):
    """``main.py train stylegan`` on a folder of 10 random 24² images, tiny preset."""
    import cv2

    data = tmp_path / "style"
    data.mkdir()
    for i, img in enumerate(_images(10, 24)):
        cv2.imwrite(str(data / f"{i}.png"), img)
    options = f"--preset tiny --threads 1 --progress {progress}".split()
    return [sys.executable, "main.py", "train", "stylegan", "--data", str(data), "--run", str(run), *options]


def test_cli_refuses_to_overwrite_and_resumes(tmp_path):
    cmd = _cli_command(tmp_path, tmp_path / "run", "json")

    def call(*extra):
        return subprocess.run(cmd + list(extra), cwd=REPO, capture_output=True, text=True, timeout=300)

    first = call("--steps", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    events = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done" and events[-1]["steps"] == 3
    again = call("--steps", "5")
    assert again.returncode != 0 and "--resume" in again.stderr
    resumed = call("--steps", "5", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["step"] == 5


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    cmd = _cli_command(tmp_path, run, "none") + ["--log-every", "1"]
    proc = subprocess.Popen(cmd + ["--steps", "100000"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    stats = run / "stats.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not stats.exists() or len(stats.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    state = RunDir(run, "stylegan").load_checkpoint()[1]
    stopped = state["iteration"]
    assert stopped >= 3
    resumed = subprocess.run(
        cmd + ["--steps", str(stopped + 2), "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(stats.read_text().splitlines()[-1])["step"] == stopped + 2
