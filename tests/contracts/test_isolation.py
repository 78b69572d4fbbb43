"""The live app must never load torch or the training code, even through third-party imports, nor the
libraries the installer leaves out (scipy, scikit-image's code: packaging/README.md)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib, json, os, pkgutil, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
import engine, gui
for pkg in (engine, gui):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
from engine.session import SessionOptions, run_session
report = run_session(SessionOptions(source="demo", style=sys.argv[1], frames=8))
left_out = ("torch", "training", "torchvision", "scipy", "skimage")
leaked = sorted(m for m in sys.modules if m.split(".")[0] in left_out)
print("RESULT=" + json.dumps({"leaked": leaked, "frames": report["runtime"]["frames_processed"]}), flush=True)
"""


def test_engine_and_gui_never_import_torch_training_or_what_the_installer_leaves_out(tmp_path, fixture_bundle_root):
    env = {"STYLECAST_MODELS": str(fixture_bundle_root), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, "fixture"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT="))
    out = json.loads(line[len("RESULT=") :])
    assert out["frames"] == 8
    assert out["leaked"] == []
