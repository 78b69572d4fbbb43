"""Shared fixtures: a fixture bundle (random-weight student graphs), the shared data folder, demo frames."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def fixture_bundle_root(tmp_path_factory) -> Path:
    """A folder holding one valid bundle 'fixture' with light and standard tiers, ONNX and MNN each."""
    from bench.fixture_net import write_bundle

    root = tmp_path_factory.mktemp("models")
    write_bundle(root, "fixture")
    return root


@pytest.fixture(scope="session")
def fixture_bundle(fixture_bundle_root):
    from engine.bundle import load_bundle

    return load_bundle(fixture_bundle_root / "fixture")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _private_warmup_cache(tmp_path_factory):
    """Tests never read or write the user's warm-up cache (a stale entry would skip a benchmark)."""
    import os

    os.environ["STYLECAST_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO)
