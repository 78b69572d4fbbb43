"""The student benchmark end to end (one timed run per setting): it imports across stages and rots quietly."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_students_prints_every_model_on_both_runtimes(tmp_path):
    out = tmp_path / "students.json"
    cmd = [sys.executable, "main.py", "bench", "students", "--runs", "1", "--warmup", "0", "--teacher-runs", "1"]
    subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    for name in (
        "student_light",
        "student_standard",
        "student_high",
        "whitebox_unet32",
        "animeganv2",
        "pix2pix_unet256",
    ):
        timings = report["models"][name]
        assert all(timings[f"{rt}_{n}t_ms"] > 0 for rt in ("onnx", "mnn") for n in (1, 2)), name
    assert report["models"]["ink_teacher"]["torch_cv_1t_ms"] > 0
    assert set(report["targets_2t_ms"]) == {"light", "standard", "high"}
