"""The installer builds and its smoke test passes (slow: a PyInstaller build takes minutes)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_installer_builds_and_passes_its_smoke_test():
    pytest.importorskip("PyInstaller", reason="make test-slow and make package install PyInstaller")
    proc = subprocess.run(
        [sys.executable, "packaging/build.py"], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert '"no_torch": true' in proc.stdout and '"window_runs": true' in proc.stdout
    assert '"left_out": true' in proc.stdout
