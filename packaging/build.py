"""Build the one-folder installer with PyInstaller, then run the smoke test on the result.

``python packaging/build.py`` (or ``make package``) → ``dist/stylecast/stylecast``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    cmd = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--clean",
        "--distpath",
        str(ROOT / "dist"),
        "--workpath",
        str(ROOT / "build"),
        str(ROOT / "packaging" / "stylecast.spec"),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return subprocess.run([sys.executable, str(ROOT / "packaging" / "smoke.py")], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
