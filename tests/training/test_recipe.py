"""``train all``: the whole recipe, tiny preset, from each starting point to an installed bundle."""

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.bundle import load_bundle
from engine.pipeline import load_style
from tests.training.conftest import _variants

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut_crop) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i, view in enumerate(_variants(astronaut_crop, 20)):
        cv2.imwrite(str(folder / f"astro_{i:02d}.png"), view)
    return folder


def _train_all(args, tmp_path):
    cmd = [sys.executable, "main.py", "train", "all", *args, "--preset", "tiny", "--threads", "1", "--progress", "json"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events


def _started(events) -> list[str]:
    """Stage names that started, without their detail suffix ('student:light' -> 'student')."""
    return [e["stage"].split(":")[0] for e in events if e.get("event") == "start"]


def test_ink_recipe_installs_a_bundle_the_engine_runs(photos, tmp_path):
    models = tmp_path / "models"
    args = ["--source", "ink", "--data", str(photos), "--style-id", "inky", "--run", str(tmp_path / "run")]
    _, events = _train_all([*args, "--install-to", str(models)], tmp_path)
    assert events[-1] == {"event": "installed", "style_id": "inky", "path": str(models / "inky")}
    assert set(_started(events)) >= {"prepare", "pairs", "student"}
    style = load_style(load_bundle(models / "inky"), "light", "mnn")
    out = style.active.stylize(np.full((256, 256, 3), 120, np.uint8))
    assert out.shape == (256, 256, 4)  # every student also predicts its blend alpha
    style.close()
    # the same command again resumes: finished steps are skipped, the bundle is rebuilt and reinstalled
    proc, events = _train_all([*args, "--install-to", str(models)], tmp_path)
    assert not {"prepare", "pairs", "student"} & set(_started(events))
    assert events[-1]["event"] == "installed"


def test_styles_recipe_runs_stylegan_ugatit_and_students(photos, tmp_path, astronaut_crop):
    styles = tmp_path / "styles"
    styles.mkdir()
    for i, view in enumerate(_variants(astronaut_crop, 12)):  # a "style": posterised negatives
        cv2.imwrite(str(styles / f"s{i}.png"), (255 - view) // 64 * 64)
    run = tmp_path / "run"
    args = ["--source", "styles", "--data", str(styles), "--faces", str(photos), "--style-id", "negative"]
    _, events = _train_all([*args, "--run", str(run), "--install-to", str(tmp_path / "models")], tmp_path)
    stages = _started(events)
    assert stages[:1] == ["prepare"] and {"stylegan", "generate", "ugatit", "student"} <= set(stages)
    assert load_bundle(tmp_path / "models" / "negative").manifest.tiers[0].id == "light"


def test_styles_recipe_needs_faces(tmp_path):
    cmd = [
        sys.executable,
        "main.py",
        "train",
        "all",
        "--source",
        "styles",
        "--data",
        str(tmp_path),
        "--style-id",
        "x",
        "--run",
        str(tmp_path / "run"),
        "--preset",
        "tiny",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "needs --faces" in proc.stderr


def test_teacher_recipe_installs_a_bundle_with_alpha_and_the_teachers_licence(photos, tmp_path):
    from tests.training.conftest import write_onnx_teacher

    teacher = write_onnx_teacher(tmp_path / "teachers" / "toy", size=128, multiple=16)
    models = tmp_path / "models"
    args = ["--source", "teacher", "--teacher", str(teacher), "--data", str(photos), "--style-id", "toy"]
    _, events = _train_all([*args, "--run", str(tmp_path / "run"), "--install-to", str(models)], tmp_path)
    assert set(_started(events)) >= {"prepare", "pairs", "student", "head-mask"}
    bundle = load_bundle(models / "toy")
    manifest = bundle.manifest
    assert manifest.io.alpha and manifest.name == "Toy teacher"
    assert manifest.description == "Distilled from the teacher 'Toy teacher'."  # the window's style card shows it
    assert manifest.metrics["head_mask"]["run"] == "head-mask"  # each tier's alpha is bounded by the head mask
    assert "test fixture, no restrictions" in manifest.license and "commercial_use: false" in manifest.model_card
    assert manifest.created["teacher"]["id"] == "toy"
    assert manifest.blend.skin_tone_limit == 0.0  # no skin model, no kept skin tone: nothing to guard
    assert re.search(r"\d+ training faces; \d+ more, split off by source, were held out", manifest.model_card)
    style = load_style(bundle, "light", "onnx")
    out = style.active.stylize(np.full((256, 256, 3), 120, np.uint8))
    assert out.shape == (256, 256, 4)
    style.close()
    # --skin-tone reaches the pairs stage: forcing the treatment without the skin model is refused there
    cmd = [sys.executable, "main.py", "train", "all", *args, "--preset", "tiny", "--skin-tone", "keep"]
    proc = subprocess.run([*cmd, "--run", str(tmp_path / "keep")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "needs the skin_clothes_hair mask model" in proc.stderr


def test_the_teacher_routes_schedule_learns_cheaply_first_and_shrinks_without_bf16():
    from training.recipe import teacher_student_config

    scratch = teacher_student_config("cpu", finetune=False, bf16=True)
    tuned = teacher_student_config("cpu", finetune=True, bf16=True)
    fp32 = teacher_student_config("cpu", finetune=False, bf16=False)
    for cfg in (scratch, tuned, fp32):
        assert 0 < cfg.perceptual_start < cfg.gan_start < cfg.steps  # pixel, then perceptual, then adversarial
    assert tuned.steps < scratch.steps and fp32.steps < scratch.steps
    assert scratch.bf16 and not fp32.bf16
    assert teacher_student_config("tiny", finetune=False, bf16=False).steps < fp32.steps


def test_a_teacher_that_cannot_run_stops_the_recipe_before_the_faces_step(photos, tmp_path):
    from tests.training.conftest import write_onnx_teacher

    teacher = write_onnx_teacher(tmp_path / "teachers" / "nan", size=128, fault="nan")
    args = ["--source", "teacher", "--teacher", str(teacher), "--data", str(photos), "--style-id", "nan"]
    cmd = [sys.executable, "main.py", "train", "all", *args, "--preset", "tiny", "--run", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "teacher 'toy': output holds NaN" in proc.stderr
    assert not (tmp_path / "run" / "faces").exists()  # no face was prepared for a teacher that cannot run


def test_too_few_faces_for_the_preset_stop_the_recipe_before_the_teacher_draws_them(tmp_path, astronaut_crop):
    from tests.training.conftest import write_onnx_teacher

    few = tmp_path / "few"
    few.mkdir()
    for i, view in enumerate(_variants(astronaut_crop, 3)):
        cv2.imwrite(str(few / f"astro_{i}.png"), view)
    teacher = write_onnx_teacher(tmp_path / "teachers" / "toy", size=128, multiple=16)
    args = ["--source", "teacher", "--teacher", str(teacher), "--data", str(few), "--style-id", "few"]
    cmd = [sys.executable, "main.py", "train", "all", *args, "--preset", "tiny", "--run", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "the tiny preset needs at least 4: add photos or videos" in proc.stderr
    assert not (tmp_path / "run" / "pairs").exists()
