"""The head mask: trained on a pairs folder's alpha targets, resumable, and grafted into an installed style
so that each tier blends through min(its alpha, head mask) with its colour unchanged."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.errors import DatasetError, TrainingError
from training.runs import AbortFlag, Progress, RunDir, StageContext


def pairs_with_head(tmp_path: Path, ink_pairs: Path) -> Path:
    """The ink pairs with alpha targets: an ellipse where the face is, feathered, through the crop-edge window."""
    from engine.blend import feather_mask

    pairs = tmp_path / "pairs"
    shutil.copytree(ink_pairs, pairs)
    (pairs / "alpha").mkdir()
    target = np.round(feather_mask(256, 0.02) * 255).astype(np.uint8)
    for photo in (pairs / "photos").iterdir():
        cv2.imwrite(str(pairs / "alpha" / f"{photo.stem}.png"), target)
    return pairs


class StopAfter(AbortFlag):
    """An abort request after ``checks`` loop steps, as Ctrl-C would make it."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def __bool__(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def train(pairs: Path, run: Path, steps: int, resume: bool = False, abort: AbortFlag | None = None) -> dict:
    from training.student.head_mask import HeadMaskConfig, train_head_mask

    cfg = HeadMaskConfig(steps=steps, batch=4, lr=3e-3, width=8)
    run_dir = RunDir.open(run, "head_mask", asdict(cfg), resume=resume)
    try:
        return train_head_mask(
            pairs, cfg, StageContext(run_dir, Progress("none"), abort if abort is not None else AbortFlag())
        )
    finally:
        run_dir.close()


def test_head_mask_learns_the_alpha_targets_and_resumes_exactly(tmp_path, ink_pairs):
    from training.student.head_mask import HELDOUT_FILE, load_head_mask

    pairs = pairs_with_head(tmp_path, ink_pairs)
    start = train(pairs, tmp_path / "start", 0)["heldout_l1"]
    trained = train(pairs, tmp_path / "run", 60)
    assert trained["finished"] and trained["heldout_l1"] < 0.5 * start
    assert json.loads((tmp_path / "run" / HELDOUT_FILE).read_text())["heldout_l1"] == pytest.approx(
        trained["heldout_l1"]
    )

    stopped = train(pairs, tmp_path / "split", 60, abort=StopAfter(30))  # interrupted, then resumed
    assert not stopped["finished"] and not (tmp_path / "split" / HELDOUT_FILE).exists()
    with pytest.raises(TrainingError, match="pass --resume"):
        train(pairs, tmp_path / "split", 60)
    resumed = train(pairs, tmp_path / "split", 60, resume=True)
    assert resumed["heldout_l1"] == pytest.approx(trained["heldout_l1"], abs=1e-6)
    whole, split = load_head_mask(tmp_path / "run")[0], load_head_mask(tmp_path / "split")[0]
    for a, b in zip(whole.state_dict().values(), split.state_dict().values()):
        assert torch.equal(a, b)


def test_head_mask_needs_alpha_targets(tmp_path, ink_pairs):
    with pytest.raises(DatasetError, match="no alpha targets"):
        train(ink_pairs, tmp_path / "run", 1)


def export_alpha_style(
    tmp_path: Path, ink_pairs: Path, alpha: bool = True, tiers=("light",), head_mask: Path | None = None
) -> Path:
    from training.student.export import export_bundle
    from training.student.networks import TIERS, build_student

    torch.manual_seed(3)
    for tier in tiers:
        net = build_student(tier, alpha=alpha)
        spec = asdict(TIERS[tier]) | {"alpha": alpha}
        run = RunDir.open(tmp_path / tier, "student", {"tier": tier})
        record = {"arch": "student", "init_kwargs": spec, "params": net.state_dict(), "params_ema": net.state_dict()}
        run.save_checkpoint(record | {"step": 1, "tier": tier}, {"step": 1})
        run.close()
    out = tmp_path / "style"
    runs = [tmp_path / t for t in tiers]
    export_bundle(
        runs, out, style_id="style", pairs=ink_pairs, size=64, sharpen=False, temporal=0.5, head_mask=head_mask
    )
    return out


def test_grafting_bounds_each_tiers_alpha_by_the_head_mask_and_keeps_its_colour(tmp_path, ink_pairs):
    from engine.backends import load_tier
    from engine.bundle import load_bundle
    from training.student import graft
    from training.student.graft import graft_bundle
    from training.student.head_mask import HEAD_MASK_LINE, load_head_mask

    pairs = pairs_with_head(tmp_path, ink_pairs)
    train(pairs, tmp_path / "head", 60)  # long enough to learn a mask below the random tier's alpha outside the face
    style = export_alpha_style(tmp_path, ink_pairs)
    before = load_bundle(style)
    photo = cv2.resize(cv2.imread(str(next((pairs / "photos").iterdir()))), (64, 64), interpolation=cv2.INTER_AREA)
    old = load_tier(before, before.manifest.tiers[0], "onnx", threads=1).stylize(photo)

    graft_bundle(style, tmp_path / "head")
    after = load_bundle(style)
    assert after.manifest.metrics["head_mask"]["run"] == "head"
    assert HEAD_MASK_LINE in after.manifest.model_card
    light = after.manifest.tiers[0]
    assert f"light {light.gmacs:.2f} GMAC, {light.params} params" in after.manifest.model_card  # Tiers: line
    assert after.manifest.metrics["export_parity"]["light"]["mnn_fp16_max_abs"] > 0  # fp16 tried on the new graph
    assert after.manifest.tiers[0].files != before.manifest.tiers[0].files  # new files, new sha256
    head = load_head_mask(tmp_path / "head")[0]
    with torch.no_grad():
        x = torch.from_numpy(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 127.5 - 1
        mask = ((head(x)[0, 0].numpy() + 1) * 127.5).round()
    for runtime, tolerance in (("onnx", 1), ("mnn", 2)):
        new = load_tier(after, after.manifest.tiers[0], runtime, threads=1).stylize(photo)
        assert np.abs(new[..., :3].astype(int) - old[..., :3]).max() <= tolerance  # colour untouched
        bounded = np.minimum(old[..., 3].astype(float), mask)
        assert np.abs(new[..., 3] - bounded).max() <= tolerance + 1
    assert (mask < old[..., 3] - 2).any()  # the head mask did bound the alpha somewhere

    with pytest.raises(TrainingError, match="already blends through a head mask"):
        graft_bundle(style, tmp_path / "head")
    files = {p.name: p.read_bytes() for p in style.iterdir()}
    args = argparse.Namespace(bundle=[style], head_mask=tmp_path / "head", pairs=None)
    assert graft.run(args) == 0  # the CLI leaves a grafted style alone, so a failed batch can be rerun
    assert {p.name: p.read_bytes() for p in style.iterdir()} == files


def test_grafting_refuses_styles_without_alpha_and_models_that_are_no_head_mask(tmp_path, ink_pairs):
    from training.student.graft import graft_bundle

    style = export_alpha_style(tmp_path, ink_pairs, alpha=False)
    with pytest.raises(TrainingError, match="predicts no alpha"):
        graft_bundle(style, tmp_path / "light")
    with_alpha = export_alpha_style(tmp_path / "a", ink_pairs)
    with pytest.raises(TrainingError, match="not a head mask"):
        graft_bundle(with_alpha, tmp_path / "a" / "light")


@pytest.mark.parametrize("failing", ["second tier's MNN", "final check"])
def test_a_graft_that_fails_leaves_the_style_as_it_was(tmp_path, ink_pairs, monkeypatch, failing):
    """The first tier passes its checks and the second does not, or every tier passes and the new style's
    validation fails: no file of the style changes and nothing is left beside it."""
    import training.student.graft as graft
    import training.student.rewrite as rewrite
    from engine.bundle import load_bundle

    pairs = pairs_with_head(tmp_path, ink_pairs)
    train(pairs, tmp_path / "head", 2)
    style = export_alpha_style(tmp_path, ink_pairs, tiers=("light", "standard"))
    before = {p.name: p.read_bytes() for p in style.iterdir()}
    siblings = set(style.parent.iterdir())
    convert, validate = rewrite.convert_with_parity, rewrite.load_bundle
    calls = []

    def failing_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise TrainingError("MNN differs")
        return convert(*args, **kwargs)

    def failing_staged(folder):
        if Path(folder) != style:
            raise TrainingError("MNN differs")
        return validate(folder)

    if failing == "final check":
        monkeypatch.setattr(rewrite, "load_bundle", failing_staged)
    else:
        monkeypatch.setattr(rewrite, "convert_with_parity", failing_second)
    with pytest.raises(TrainingError, match="MNN differs"):
        graft.graft_bundle(style, tmp_path / "head")
    assert {p.name: p.read_bytes() for p in style.iterdir()} == before
    assert set(style.parent.iterdir()) == siblings
    load_bundle(style)  # still valid: every file matches its sha256
