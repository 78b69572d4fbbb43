import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(args, env_models, tmp_path):
    env = {"STYLECAST_MODELS": str(env_models), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "main.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_stylize_writes_video_and_report(tmp_path, fixture_bundle_root):
    out, report = tmp_path / "o.mp4", tmp_path / "r.json"
    proc = _run(
        [
            "stylize",
            "--source",
            "demo",
            "--style",
            "fixture",
            "--tier",
            "light",
            "--frames",
            "20",
            "--out",
            str(out),
            "--report",
            str(report),
        ],
        fixture_bundle_root,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["style"] == "fixture" and data["runtime"]["frames_processed"] == 20
    assert data["output"]["frames"] == 20 and out.stat().st_size > 1000
    assert data["faces"]["frames_with_face"] >= 15
    startup = data["startup_s"]  # what a user waits for: the style, then the first stylized face
    assert 0 < startup["style_loaded"] < startup["first_stylized_frame"]


def test_unknown_style_and_bad_source_fail_cleanly(tmp_path, fixture_bundle_root):
    proc = _run(["stylize", "--style", "nope", "--frames", "2"], fixture_bundle_root, tmp_path)
    assert proc.returncode == 2 and "no style 'nope'" in proc.stderr
    proc = _run(["stylize", "--source", "missing.mp4", "--style", "none"], fixture_bundle_root, tmp_path)
    assert proc.returncode == 2 and "unknown source" in proc.stderr


def test_an_unwritable_report_or_a_setting_out_of_range_fails_before_the_stream(tmp_path, fixture_bundle_root):
    (tmp_path / "a_file").write_text("not a folder")
    report = tmp_path / "a_file" / "report.json"
    proc = _run(["stylize", "--style", "none", "--frames", "2", "--report", str(report)], fixture_bundle_root, tmp_path)
    assert proc.returncode == 2 and "cannot write the report there" in proc.stderr
    assert "style" not in proc.stdout  # no stream ran: nothing was computed only to be lost
    for flag, value in (("--intensity", "nan"), ("--temporal", "1.5"), ("--skin-tone-limit", "inf")):
        proc = _run(["stylize", "--style", "none", flag, value], fixture_bundle_root, tmp_path)
        assert proc.returncode == 2 and f"argument {flag}: must be a number from" in proc.stderr


def test_passthrough_is_labelled(tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    env = {"STYLECAST_MODELS": str(empty), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    # no bundled models either: point the app at an empty repo-independent folder set
    proc = subprocess.run(
        [sys.executable, "main.py", "stylize", "--style", "none", "--frames", "3"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout[proc.stdout.index("{") :])["style"] == "pass-through (no style installed)"


def test_style_per_face_on_the_command_line(tmp_path, fixture_bundle_root):
    report = tmp_path / "r.json"
    args = ["stylize", "--source", "demo", "--style", "none", "--style-per-face", "fixture", "--frames", "12"]
    proc = _run([*args, "--report", str(report)], fixture_bundle_root, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["style_per_face"] == ["fixture"] and data["runtime"]["last_error"] is None
    proc = _run([*args[:6], "nope", *args[7:]], fixture_bundle_root, tmp_path)
    assert proc.returncode != 0 and "no style 'nope'" in proc.stderr


def test_redraw_every_face_switches_the_budget_off(tmp_path, fixture_bundle_root):
    from engine.session import SessionOptions, pipeline_config

    report = tmp_path / "r.json"
    args = ["stylize", "--source", "demo", "--style", "fixture", "--tier", "light", "--frames", "8"]
    proc = _run([*args, "--redraw-every-face", "--report", str(report)], fixture_bundle_root, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    options = json.loads(report.read_text())["options"]
    assert options["redraw_every_face"] is True
    assert pipeline_config(SessionOptions(**{**options, "style_per_face": ()})).redraw_budget_ms is None
    assert pipeline_config(SessionOptions()).redraw_budget_ms == 20.0  # the default: a budget per frame


def test_photos_in_give_stylized_photos_out_and_never_overwrite_them(tmp_path, fixture_bundle_root):
    import cv2
    import numpy as np

    from engine.sources import astronaut

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), astronaut())
    cv2.imwrite(str(photos / "b.jpg"), astronaut()[:, ::-1])
    (photos / "c.jpg").write_bytes(b"broken")
    styled, report = tmp_path / "styled", tmp_path / "r.json"
    args = ["stylize", "--source", str(photos), "--style", "fixture", "--tier", "light"]
    proc = _run([*args, "--out", str(styled), "--report", str(report)], fixture_bundle_root, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(report.read_text())["output"]["photos"] == [str(styled / "a.png"), str(styled / "b.jpg")]
    for name, face in (("a.png", slice(160, 300)), ("b.jpg", slice(212, 352))):  # the face's columns (b: mirrored)
        before, after = cv2.imread(str(photos / name)).astype(int), cv2.imread(str(styled / name)).astype(int)
        assert after.shape == before.shape
        assert np.abs(after[80:200, face] - before[80:200, face]).mean() > 2.5  # stylized (a random-weight net)
        assert np.abs(after[400:] - before[400:]).mean() < 1.5  # the rest is the photo (b: encoded again)
    one = tmp_path / "one.png"
    proc = _run(
        ["stylize", "--source", str(photos / "a.png"), "--style", "fixture", "--out", str(one)],
        fixture_bundle_root,
        tmp_path,
    )
    assert proc.returncode == 0 and cv2.imread(str(one)).shape == (512, 512, 3)

    refusals = {
        str(photos): "would overwrite the photos",  # the same folder
        str(tmp_path / "x.png"): "holds 3 photos; give a folder",
    }
    for out, message in refusals.items():
        proc = _run([*args, "--out", out], fixture_bundle_root, tmp_path)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-1000:]
    proc = _run(
        ["stylize", "--source", "demo", "--style", "fixture", "--frames", "3", "--out", str(one)],
        fixture_bundle_root,
        tmp_path,
    )
    assert proc.returncode != 0 and "is a stream" in proc.stderr
