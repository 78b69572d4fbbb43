"""Derive the FFHQ alignment template from FFHQ/CelebA-HQ aligned crops (prints JSON).

Runs face mesh on every aligned crop in ../shared/data/faces/aligned_{ffhq,celebahq} and reports the
median unit-crop position of each alignment landmark; engine/align.py's FFHQ_TEMPLATE holds the result.
"""

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from engine.align import ALIGN_LANDMARKS
from engine.tracking import landmarks_from_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def main() -> int:
    files = sorted(p for d in ("aligned_ffhq", "aligned_celebahq") for p in (DATA / d).glob("*.*"))
    # the degraded restoration inputs are aligned too, but blurry: skip them
    files = [p for p in files if not p.name.startswith(("codeformer_", "gfpgan_"))]
    points = []
    for path in files:
        image = cv2.imread(str(path))
        if image is None:
            continue
        landmarks = landmarks_from_image(image)
        if landmarks is None:
            continue
        h, w = image.shape[:2]
        points.append(landmarks[list(ALIGN_LANDMARKS)] / np.array([w, h]))
    stack = np.stack(points)
    report = {
        "images": len(files),
        "faces": len(points),
        "median": np.round(np.median(stack, axis=0), 4).tolist(),
        "iqr": np.round(np.subtract(*np.percentile(stack, [75, 25], axis=0)), 4).tolist(),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
