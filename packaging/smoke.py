"""Smoke test of a built installer: the frozen app stylizes the demo headless and opens its window offscreen.

Checks what a user would hit first: start-up without the source tree, the bundled models, mediapipe's
model files, both inference backends, H.264 recording, and that torch was left out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dist" / "stylecast" / ("stylecast.exe" if sys.platform == "win32" else "stylecast")


def window_survives(env: dict, cwd: str, seconds: float = 15.0) -> bool:
    """The window (offscreen) starts on the demo and is still streaming after ``seconds``."""
    proc = subprocess.Popen([str(APP), "app", "--source", "demo"], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=10)
        return True
    print(proc.stderr.read()[-3000:], file=sys.stderr)
    return False


def main() -> int:
    if not APP.is_file():
        print(f"no build at {APP}; run `make package`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": tmp, "STYLECAST_MODELS": str(Path(tmp) / "m")}
        out, report = Path(tmp) / "demo.mp4", Path(tmp) / "demo.json"
        run = subprocess.run(
            [str(APP), "stylize", "--source", "demo", "--frames", "45", "--out", str(out), "--report", str(report)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
            return 1
        data = json.loads(report.read_text())
        checks = {
            "frames": data["runtime"]["frames_processed"] == 45,
            "faces": data["faces"]["face_fraction"] > 0.8,
            "h264": data["output"]["codec"] == "h264" and out.stat().st_size > 10_000,
            "no_torch": not any((APP.parent / "_internal").glob("torch*")),
        }
        styles = subprocess.run([str(APP), "styles"], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
        checks["styles_listed"] = styles.returncode == 0
        checks["window_runs"] = window_survives(env, tmp)
        print(json.dumps({"app": str(APP), "style": data["style_label"], "backend": data["backend"], "checks": checks}))
        return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
