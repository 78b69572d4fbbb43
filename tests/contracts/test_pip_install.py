"""A fresh ``pip install '.[train]'`` in a new virtual environment gives a working ``stylecast`` command
(slow: it installs every dependency, minutes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_fresh_pip_install_with_the_train_extra_runs_the_demo(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{REPO}[train]"], capture_output=True, text=True, timeout=2400
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # every subpackage arrived (setuptools found them), run from outside the source tree
    imports = "import engine.bundle, gui.controller, training.student.export, training.teachers.network, bench.engine"
    check = subprocess.run([str(python), "-c", imports], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]
    env = {**os.environ, "STYLECAST_MODELS": str(REPO / "models"), "QT_QPA_PLATFORM": "offscreen"}
    out = tmp_path / "demo.mp4"
    stylize = ["stylize", "--source", "demo", "--style", "ink", "--frames", "30", "--out", str(out)]
    demo = subprocess.run(
        [str(venv / "bin" / "stylecast"), *stylize], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    summary = json.loads(demo.stdout[demo.stdout.index("{") :])
    assert summary["frames"] == 30 and summary["face_fraction"] > 0.5 and out.stat().st_size > 10_000
