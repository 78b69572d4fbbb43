"""Projected discriminator (frozen EfficientNet-Lite0 + random mixing, trained heads) and FID snapshots."""

import json
from dataclasses import replace

import cv2
import numpy as np
import torch

from training.loop import Budget, LoopOptions
from training.runs import RunDir
from training.stylegan.config import PRESETS
from training.stylegan.evaluate import evaluate_run
from training.stylegan.projected import ProjectedDiscriminator
from training.stylegan.train import Snapshots, Trainer, train


def test_projected_discriminator_trains_only_its_heads_and_passes_gradients_to_the_image():
    D = ProjectedDiscriminator(16, channels=8, feature_size=64).train()
    trainable = dict(D.trainable_named_parameters())
    assert trainable and all(name.startswith("heads.") for name in trainable)
    assert not any(p.requires_grad for n, p in D.named_parameters() if not n.startswith("heads."))
    assert not D.features.training  # frozen BatchNorm statistics even in train mode
    img = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    logits = D(img)
    assert logits.shape[0] == 2 and logits.shape[1] >= 4  # patch logits from four scales
    logits.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    # The random mixing is fixed by the seed: same seed, same buffers.
    other = ProjectedDiscriminator(16, channels=8, feature_size=64)
    assert torch.equal(D.ccm0, other.ccm0) and torch.equal(D.csm_conv2, other.csm_conv2)


def test_training_with_the_projected_discriminator_and_fid_over_snapshots(tmp_path):
    style = tmp_path / "style"
    style.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        cv2.imwrite(str(style / f"{i}.png"), img)
    cfg = replace(PRESETS["tiny"], discriminator="projected")
    run = RunDir.open(tmp_path / "run", "stylegan", cfg.to_dict())
    trainer = Trainer(cfg, images[..., ::-1].copy())
    head = next(trainer.D.heads.parameters()).clone()
    summary = train(trainer, run, LoopOptions(Budget(steps=4)), Snapshots(kimg=0.008))
    run.close()
    assert summary["steps"] == 4
    assert not torch.equal(head, next(trainer.D.heads.parameters()))
    records = evaluate_run(tmp_path / "run", [style], n_fake=8)
    assert [r["iteration"] for r in records] == [2, 4]
    assert all(r["fid_el0"] > 0 and r["fid_vgg"] > 0 and r["n_real"] == 10 for r in records)
    assert all(0 <= r[f"{m}_{s}"] <= 1 for r in records for m in ("precision", "recall") for s in ("el0", "vgg"))
    cached = [json.loads(line) for line in (tmp_path / "run" / "fid.jsonl").read_text().splitlines()]
    assert len(cached) == 2 and evaluate_run(tmp_path / "run", [style], n_fake=8) == records


def test_snapshot_written_just_before_the_final_one_is_skipped(tmp_path):
    from training.stylegan.evaluate import spaced

    paths = [tmp_path / f"G_ema-{i:07d}.pt" for i in (200, 400, 600, 790, 800)]
    assert [p.name for p in spaced(paths)] == [p.name for p in paths[:3] + paths[4:]]
    assert spaced(paths[:1]) == paths[:1]
