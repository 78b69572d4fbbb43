"""torchrun with 2 CPU processes (gloo) trains like one process with the same global batch and batch_gpu.

Every round draws its random numbers from a seed of (iteration, phase, global round) and gradients
are summed over ranks, so the two runs agree; the stated tolerance is 1e-5 relative on every logged
loss for 12 iterations and on the final weights (observed: bit-identical).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.stylegan.checkpoint import load_networks

REPO = Path(__file__).resolve().parents[3]
TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    style = tmp_path / "style"
    style.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(style / f"{i}.png"), rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    common = [
        "train",
        "stylegan",
        "--data",
        str(style),
        "--preset",
        "tiny",
        "--batch",
        "8",
        "--batch-gpu",
        "4",
        "--steps",
        "12",
        "--log-every",
        "1",
        "--threads",
        "1",
        "--progress",
        "none",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "main.py",
            *common,
            "--run-dir",
            str(tmp_path / "two"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 1 of 2 on cpu (gloo)" in two.stderr
    one = subprocess.run(
        [sys.executable, "main.py", *common, "--run", str(tmp_path / "one")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    def stats(name):
        return [json.loads(line) for line in (tmp_path / name / "stats.jsonl").read_text().splitlines()]

    a, b = stats("one"), stats("two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 13))
    for ra, rb in zip(a, b):
        for key in ("loss_G", "loss_D", "pl_penalty", "r1_penalty", "augment_p"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=TOL, abs=1e-7), (ra["step"], key)
    ga, gb = load_networks(tmp_path / "one").G_ema.state_dict(), load_networks(tmp_path / "two").G_ema.state_dict()
    for k in ga:
        torch.testing.assert_close(gb[k], ga[k], rtol=TOL, atol=1e-7)
