"""U-GAT-IT training: it learns a toy two-domain task, resumes bit-exactly, schedules lr, rejects bad inputs."""

import json

import cv2
import numpy as np
import pytest
import torch

from training.errors import DatasetError, TrainingError
from training.loop import Budget, LoopOptions, train_loop
from training.loop import resume as resume_run
from training.runs import AbortFlag, RunDir
from training.ugatit.config import PRESETS, TrainConfig
from training.ugatit.data import DomainSampler, load_domain
from training.ugatit.networks import LIN, AdaLIN
from training.ugatit.train import Trainer

CFG = PRESETS["tiny"]
LOSSES = ("loss_D", "loss_G", "adv_D", "adv_G", "cycle", "identity", "cam_G", "lr", "rho_mean")


@pytest.fixture(scope="module")
def toy(toy_domains):
    faces, styles = toy_domains
    return load_domain([faces], CFG.load_size, "face").images, load_domain([styles], CFG.load_size, "style").images


def _train(root, toy, steps, abort_at=None, resume=False, cfg=CFG):
    torch.set_num_threads(1)
    run = RunDir.open(root, "ugatit", cfg.to_dict(), resume=resume)
    trainer = Trainer(cfg, *toy, total_steps=steps)
    clock = resume_run(trainer, run) if resume else None
    records = []
    abort = AbortFlag()

    def on_iteration(t, stats):
        records.append({k: (stats | t.gauges())[k] for k in LOSSES} | {"iteration": t.iteration})
        if t.iteration == abort_at:
            abort.request()

    options = LoopOptions(Budget(steps=steps), log_every=2, sample_every=100, ckpt_every=100)
    summary = train_loop([(trainer, run)], options, "ugatit", abort=abort, clock=clock, on_step=on_iteration)
    run.close()
    return trainer, records, summary


def _mean_colour(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(0, 2, 3))


def test_tiny_run_learns_the_toy_translation(tmp_path, toy):
    trainer, records, summary = _train(tmp_path / "run", toy, 30)
    assert summary["steps"] == 30 and not summary["aborted"]
    first, last = records[:5], records[-5:]
    for key in ("loss_G", "cycle", "identity", "adv_G"):
        assert np.mean([r[key] for r in last]) < 0.95 * np.mean([r[key] for r in first]), key
    # The translations take on the other domain's colours (B = red/blue swapped and posterised).
    with torch.no_grad():
        a, b = trainer.data_a.fixed(12), trainer.data_b.fixed(12)
        a2b, b2a = trainer.ema["genA2B"](a)[0], trainer.ema["genB2A"](b)[0]
    gap = torch.dist(_mean_colour(a), _mean_colour(b))
    assert gap > 0.3
    assert torch.dist(_mean_colour(a2b), _mean_colour(b)) < 0.6 * gap
    assert torch.dist(_mean_colour(b2a), _mean_colour(a)) < 0.6 * gap


def test_resume_after_interruption_is_bit_exact(tmp_path, toy):
    full, full_records, _ = _train(tmp_path / "full", toy, 6)
    _, first, summary = _train(tmp_path / "split", toy, 6, abort_at=3)
    assert summary["aborted"] and summary["steps"] == 3
    assert first == full_records[:3]
    resumed, rest, summary = _train(tmp_path / "split", toy, 6, resume=True)
    assert summary["steps"] == 6 and not summary["aborted"]
    assert rest == full_records[3:]  # the next k losses equal the uninterrupted run's, bit for bit
    a, b = full.state()[0], resumed.state()[0]
    assert a["step"] == b["step"] == 6
    for group in ("params", "params_ema"):
        for net, state in a[group].items():
            assert all(torch.equal(state[k], b[group][net][k]) for k in state), (group, net)


def test_run_directory_holds_stats_samples_and_a_complete_checkpoint(tmp_path, toy):
    _train(tmp_path / "run", toy, 4)
    stats = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4]
    assert all(np.isfinite(s["loss_G"]) and s["steps_per_s"] > 0 and s["cpu_minutes"] > 0 for s in stats)
    grid = cv2.imread(str(tmp_path / "run" / "samples" / "latest.png"))
    assert grid.shape == (8 * 34 + 2, 4 * 34 + 2, 3)  # 8 rows (A, CAM, A→B, A→B→A, B, ...) × 4 samples
    model, state = RunDir(tmp_path / "run", "ugatit").load_checkpoint()
    assert model["arch"] == "ugatit" and model["step"] == 4
    assert set(model["params"]) == {"genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB"}
    assert set(model["params_ema"]) == {"genA2B", "genB2A"}
    assert model["init_kwargs"]["generator"] == CFG.generator().to_dict()
    assert {"opt_G", "opt_D", "iteration", "rng", "clock"} <= set(state)


def test_rho_stays_in_unit_interval_under_a_huge_learning_rate(toy):
    from dataclasses import replace

    trainer = Trainer(replace(CFG, lr=0.5, decay=False), *toy, total_steps=3)
    for _ in range(3):
        trainer.step()
    rhos = torch.cat([m.rho.flatten() for m in trainer.genA2B.modules() if isinstance(m, AdaLIN | LIN)])
    assert rhos.min() >= 0 and rhos.max() <= 1
    assert (rhos == 0).any() or (rhos == 1).any()  # the steps pushed ρ out and clipping brought it back


def test_learning_rate_is_constant_then_decays_linearly_to_zero(toy):
    trainer = Trainer(CFG, *toy, total_steps=10)
    lrs = [trainer.lr_at(i) for i in range(11)]
    assert lrs[:5] == [CFG.lr] * 5
    assert np.allclose(lrs[5:], [CFG.lr * k / 5 for k in (5, 4, 3, 2, 1, 0)])


def test_batches_are_reproducible_augmented_crops(toy):
    images = toy[0]
    a, b = DomainSampler(images, 32, 4, seed=0, stream=0), DomainSampler(images, 32, 4, seed=0, stream=0)
    assert torch.equal(a.batch_at(7), b.batch_at(7))  # a pure function of the iteration: resume needs no state
    batch = a.batch_at(0)
    assert batch.shape == (4, 3, 32, 32) and batch.min() >= -1 and batch.max() <= 1
    assert not torch.equal(batch, a.batch_at(1))
    # Each image appears once per epoch (12 images, batch 4: iterations 0-2 cover them all).
    assert sorted(sum((a.indices(i) for i in range(3)), [])) == list(range(12))
    # Crops move and flip: over many draws of one image, several distinct crops appear.
    one = DomainSampler(images[:1], 32, 1, seed=0, stream=0)
    assert len({one.batch_at(i).numpy().tobytes() for i in range(20)}) > 5
    assert torch.equal(one.fixed(1), one.fixed(1))


def test_prepared_folder_contributes_its_train_split_only(tmp_path, toy_domains):
    faces, _ = toy_domains
    root = tmp_path / "prepared"
    (root / "crops").mkdir(parents=True)
    items = []
    for i, path in enumerate(sorted(faces.iterdir())):
        (root / "crops" / path.name).write_bytes(path.read_bytes())
        items.append({"file": f"crops/{path.name}", "source": path.name, "frame": None, "face_side": 200.0,
                      "split": "heldout" if i < 3 else "train"})  # fmt: skip
    manifest = {"size": 48, "template": "ffhq", "items": items, "skipped": [], "sources_done": []}
    (root / "manifest.json").write_text(json.dumps(manifest))
    domain = load_domain([root], 36, "face")
    assert len(domain) == 9 and all(p.name not in {"000.png", "001.png", "002.png"} for p in domain.paths)


def test_empty_broken_and_missing_folders_give_clear_errors(tmp_path, toy_domains):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: only 0 usable face image.*at least 8 are needed"):
        load_domain([tmp_path / "empty"], 36, "face")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(10):
        (broken / f"{i}.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"broken: only 0 usable style image.*10 skipped"):
        load_domain([broken], 36, "style")
    with pytest.raises(DatasetError, match="not a folder of style images"):
        load_domain([tmp_path / "missing"], 36, "style")
    # A few broken files among good ones are skipped, not fatal.
    faces, _ = toy_domains
    (broken / "good.png").write_bytes((faces / "000.png").read_bytes())
    domain = load_domain([faces, broken], 36, "face")
    assert len(domain) == 13 and len(domain.skipped) == 10


def test_incompatible_checkpoints_and_options_are_refused(tmp_path, toy):
    from dataclasses import replace

    _train(tmp_path / "run", toy, 2)
    with pytest.raises(TrainingError, match=r"changed options \['ngf'\]"):
        RunDir.open(tmp_path / "run", "ugatit", replace(CFG, ngf=16).to_dict(), resume=True)
    with pytest.raises(TrainingError, match="holds a 'ugatit' run, not 'stylegan'"):
        RunDir.open(tmp_path / "run", "stylegan", CFG.to_dict(), resume=True)
    model, state = RunDir(tmp_path / "run", "ugatit").load_checkpoint()
    wider = Trainer(replace(CFG, ngf=16), *toy, total_steps=2)
    with pytest.raises(TrainingError, match=r"checkpoint \[genA2B\]: incompatible parameters: mis-shaped"):
        wider.load(model, state)
    with pytest.raises(TrainingError, match="from a 'stylegan2' checkpoint"):
        wider.load({**model, "arch": "stylegan2"}, state)


def test_configuration_errors_are_typed():
    with pytest.raises(TrainingError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(TrainingError, match="7-layer discriminator .* got 64"):
        TrainConfig(img_size=64)  # the 7-layer global discriminator needs ≥ 128²
