"""Temporal stability on the demo held still with σ=2 sensor noise: flicker amplification and jitter.

``python main.py bench temporal [--style ID]`` prints JSON with smoothing on and off.
"""

from __future__ import annotations

import argparse
import json

from engine.stability import measure_temporal


def main(argv: list[str]) -> int:
    from engine.session import resolve_style

    parser = argparse.ArgumentParser(prog="bench temporal")
    parser.add_argument("--style", default="auto")
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args(argv)
    bundle = resolve_style(args.style)
    out = {
        "style": bundle.id if bundle else None,
        "on": measure_temporal(bundle, True, args.frames),
        "off": measure_temporal(bundle, False, args.frames),
    }
    print(json.dumps(out, indent=1))
    return 0
