"""Dispatch for ``python main.py bench <what>``: each benchmark prints one JSON document."""

from __future__ import annotations

import importlib

BENCHES = {
    "engine": "bench.engine",
    "temporal": "bench.temporal",
    "students": "bench.students",
    "tracking": "bench.tracking",
}
# Benchmarks that need research data or trained runs, run by name only (not by `bench all`).
ON_REQUEST = {"styles": "bench.styles"}


def run_bench(what: str, rest: list[str]) -> int:
    names = list(BENCHES) if what == "all" else [what]
    status = 0
    for name in names:
        status |= importlib.import_module({**BENCHES, **ON_REQUEST}[name]).main(rest)
    return status
