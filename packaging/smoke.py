"""Smoke test of a built installer: the frozen app stylizes the demo headless and opens its window offscreen.

Checks what a user would hit first: start-up without the source tree, the bundled models, mediapipe's
model files, both inference backends, H.264 recording and reading it back (on the stand-ins for
never-called libraries: packaging/stub_libs.py), and that torch and the other training-only
libraries were left out. Reports the folder's size and what each library adds to it.
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
# Libraries the spec leaves out (training-only, or imported but never used: packaging/hooks)
LEFT_OUT = ("torch", "scipy", "matplotlib", "PIL", "libcairo", "libpango", "libssl.so")
# Entries of the build folder that belong to a library under another name (by name prefix)
OWNERS = {
    "opencv_python_headless.libs": "cv2",
    "_mnncengine": "MNN",
    "mnn.libs": "MNN",
    "libpython3": "python",
    "lib-dynload": "python",
    "base_library.zip": "python",
}


def library_sizes(folder: Path) -> dict[str, float]:
    """MB per library in the one-folder build: a package with its wheel's ``.libs`` folder; the other
    loose files are the system libraries PyInstaller collected."""
    sizes: dict[str, int] = {}
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        top = path.relative_to(folder).parts[0]
        owner = next((name for prefix, name in OWNERS.items() if top.startswith(prefix)), None)
        if owner is None:
            owner = "system libraries" if path.parent == folder else top.removesuffix(".libs")
        sizes[owner] = sizes.get(owner, 0) + path.stat().st_size
    return {name: round(size / 2**20, 1) for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])}


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
            "left_out": not any(any((APP.parent / "_internal").glob(f"{name}*")) for name in LEFT_OUT),
        }
        replay = Path(tmp) / "replay.json"  # the recording read back: PyAV decodes files
        run = subprocess.run(
            [str(APP), "stylize", "--source", str(out), "--frames", "20", "--report", str(replay)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        checks["reads_video"] = (
            run.returncode == 0 and json.loads(replay.read_text())["runtime"]["frames_processed"] == 20
        )
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
        styles = subprocess.run([str(APP), "styles"], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
        checks["styles_listed"] = styles.returncode == 0
        checks["window_runs"] = window_survives(env, tmp)
        total = sum(p.stat().st_size for p in APP.parent.rglob("*") if p.is_file() and not p.is_symlink())
        summary = {"app": str(APP), "style": data["style_label"], "backend": data["backend"], "checks": checks}
        sizes = library_sizes(APP.parent / "_internal")
        print(json.dumps({**summary, "size_mb": round(total / 2**20, 1), "libraries_mb": sizes}))
        return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
