import json

import cv2
import numpy as np
import pytest

from tests.training.conftest import make_student_run
from training import evaluate
from training.errors import DatasetError
from training.evaluate import PUBLISHED_ABLATION
from training.pairs import split_pairs


def test_a_teacher_copy_scores_perfectly_and_blurred_or_blocky_copies_are_exposed(ink_pairs):
    held = split_pairs(ink_pairs)
    lookup = {p.photo.tobytes(): p.stylized for p in held}
    stylizers = {
        "perfect": lambda photo: lookup[photo.tobytes()],
        "blurry": lambda photo: cv2.GaussianBlur(lookup[photo.tobytes()], (0, 0), 3),
        "blocky": lambda photo: cv2.resize(
            cv2.resize(lookup[photo.tobytes()], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
            None,
            fx=2,
            fy=2,
            interpolation=cv2.INTER_NEAREST,
        ),
    }
    result, outputs = evaluate.evaluate(stylizers, held)
    perfect, blurry = result["tiers"]["perfect"], result["tiers"]["blurry"]
    assert result["n"] == 2 and perfect["l1_to_teacher"] == 0
    assert perfect["fid_el0_to_teacher"] < 1e-6 and perfect["sharpness_vs_teacher"] == pytest.approx(1.0)
    assert perfect["identity"] == pytest.approx(result["teacher"]["identity"])
    assert blurry["fid_el0_to_teacher"] > 1 and blurry["sharpness_vs_teacher"] < 0.6
    # 2×2 blocks keep Laplacian "sharpness" (block borders count as edges); the block ratio exposes them.
    blocky = result["tiers"]["blocky"]
    assert perfect["block_ratio"] == pytest.approx(result["teacher"]["block_ratio"])
    assert 0.8 < result["teacher"]["block_ratio"] < 1.25 and blocky["block_ratio"] < 0.05
    assert blocky["sharpness_vs_teacher"] > blurry["sharpness_vs_teacher"]
    assert len(outputs["blurry"]) == 2


def test_eval_cli_writes_json_markdown_html_grid_and_plot(tmp_path, ink_pairs):
    run, _ = make_student_run(tmp_path / "light_run")
    out = tmp_path / "report"
    assert evaluate.main(["--", "--runs", str(run), "--pairs", str(ink_pairs), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["tiers"]) == {"light_run"} and report["n"] == 2
    assert "| light_run |" in (out / "report.md").read_text()
    assert "<img src='grid.png'>" in (out / "report.html").read_text()
    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape[0] == 3 * 128  # photos, teacher, one stylizer
    assert (out / "metrics.png").stat().st_size > 1000


def test_ablation_report_has_the_four_published_rows(tmp_path, ink_pairs):
    runs = [make_student_run(tmp_path / f"r{i}", "light", seed=i)[0] for i in range(4)]
    report = evaluate.ablation(runs, split_pairs(ink_pairs))
    assert [r["row"] for r in report["rows"]] == [row[1] for row in PUBLISHED_ABLATION]
    for r in report["rows"]:
        assert r["fid_el0_bootstrap_std"] >= 0 and np.isfinite(r["fid_el0_degraded_inputs"])
    assert report["rows"][0]["published_fid"] == 32.53
    assert "+ edge-promoting" in evaluate.ablation_markdown(report)
    with pytest.raises(DatasetError, match="needs 4 runs"):
        evaluate.ablation(runs[:3], split_pairs(ink_pairs))


def test_a_pairs_folder_without_held_out_pairs_cannot_be_evaluated(tmp_path):
    for sub in ("photos", "stylized"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="no .heldout. pairs"):
        split_pairs(tmp_path)


def test_a_limit_spreads_the_pairs_over_the_split(ink_pairs):
    train = split_pairs(ink_pairs, split="train")
    spread = split_pairs(ink_pairs, 3, split="train")
    assert len(train) == 6 and [p.key for p in spread] == [train[i].key for i in (0, 2, 4)]
    assert all(p.split == "train" for p in spread)
