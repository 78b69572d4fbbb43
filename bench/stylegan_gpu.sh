#!/bin/bash
# Device check of the StyleGAN `gpu` preset (256², channels ≤ 512, batch 32, bf16 autocast): torchrun
# with NCCL on the machine's GPU(s), a synthetic style set (drawn faces; no research data travels),
# a wall-clock budget. Writes stats, a sample grid and a JSON summary under $OUT (default out/gpu).
# Usage: bench/stylegan_gpu.sh [wall-minutes] [extra stylegan options...]
set -euo pipefail
OUT=${OUT:-out/gpu}
MINUTES=${1:-3}
shift || true
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 - <<'PY'
import cv2, numpy as np, os
rng = np.random.default_rng(0)
os.makedirs("/tmp/synth_faces", exist_ok=True)
for i in range(256):
    img = np.full((256, 256, 3), rng.integers(0, 255, 3), np.uint8)
    c = tuple(int(v) for v in rng.integers(120, 255, 3))
    cx, cy = 128 + int(rng.integers(-12, 12)), 128 + int(rng.integers(-12, 12))
    cv2.ellipse(img, (cx, cy), (int(rng.integers(60, 80)), int(rng.integers(80, 100))), 0, 0, 360, c, -1)
    for dx in (-30, 30):
        cv2.circle(img, (cx + dx, cy - 20), int(rng.integers(6, 14)), (30, 30, 30), -1)
    cv2.ellipse(img, (cx, cy + 40), (int(rng.integers(15, 35)), 8), 0, 0, 180, (40, 40, 160), -1)
    cv2.imwrite(f"/tmp/synth_faces/{i:03d}.png", img)
PY
NGPU=$(nvidia-smi -L | wc -l)
torchrun --nproc_per_node "$NGPU" -m training.stylegan stylegan --data /tmp/synth_faces --run-dir /tmp/gpu_run \
  --preset gpu --device cuda --wall-minutes "$MINUTES" --log-every 20 --sample-every 1000000 --ckpt-every 1000000 \
  --progress log "$@" 2>&1 | tail -25
cp /tmp/gpu_run/stats.jsonl "$OUT/stats.jsonl"
cp /tmp/gpu_run/samples/latest.png "$OUT/gpu_samples.png"
python3 - "$OUT" <<'PY'
import json, sys
stats = [json.loads(l) for l in open(sys.argv[1] + "/stats.jsonl")]
steady = [s["kimg_per_hour"] for s in stats[2:]] or [stats[-1]["kimg_per_hour"]]
steady.sort()
summary = {"iterations": stats[-1]["iteration"], "kimg": stats[-1]["kimg"], "wall_minutes": stats[-1]["wall_minutes"],
           "median_kimg_per_hour": steady[len(steady) // 2], "loss_G": stats[-1]["loss_G"], "loss_D": stats[-1]["loss_D"],
           "augment_p": stats[-1]["augment_p"]}
print(json.dumps(summary))
json.dump(summary, open(sys.argv[1] + "/summary.json", "w"))
PY
