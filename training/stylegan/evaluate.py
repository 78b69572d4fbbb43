"""FID, precision and recall (EL0 and VGG features) of a run's G_ema snapshots against its style set.

Snapshots (``snapshots/G_ema-*.pt``, written every N CPU-minutes or kimg) are evaluated after the
fact, so training spends no time on metrics and runs compared on a CPU-time budget stay fair. Each
snapshot renders ``n_fake`` images from fixed seeds (ψ = 1, constant noise). Results are cached in
``RUN/fid.jsonl``. FID-EL0 is not comparable to published Inception FIDs, and with a few hundred
images FID is biased upwards: compare only figures computed here on sets of the same sizes.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import metrics
from training.imagefolder import load_image_folder
from training.stylegan.checkpoint import load_networks
from training.stylegan.generate import latents_for_seeds

log = logging.getLogger(__name__)

SPACES = ("el0", "vgg")


@torch.no_grad()
def generated_images(G, n: int, seed: int = 0, batch: int = 32) -> torch.Tensor:
    """``[n, 3, R, R]`` RGB in [-1, 1] from seeds seed..seed+n-1 (no truncation)."""
    ws = latents_for_seeds(G, list(range(seed, seed + n)), psi=1.0)
    return torch.cat([G.synthesis(ws[i : i + batch], noise_mode="const") for i in range(0, n, batch)])


@functools.lru_cache(maxsize=4)
def real_features(folders: tuple[str, ...], resolution: int) -> dict[str, np.ndarray]:
    """Features of the style set (cached: several runs on one set are evaluated in one process)."""
    data = load_image_folder([Path(f) for f in folders], resolution)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return {space: metrics.features(images, space) for space in SPACES}


def spaced(snapshots: list[Path]) -> list[Path]:
    """Drop a snapshot written shortly before the next one (the end-of-run snapshot often lands just after a
    periodic one): keep those at least a quarter of the median spacing apart, always the last."""
    iters = [int(p.stem.split("-")[1]) for p in snapshots]
    gaps = sorted(b - a for a, b in zip(iters, iters[1:]))
    if not gaps:
        return snapshots
    median = gaps[len(gaps) // 2]
    return [p for i, p in enumerate(snapshots) if i == len(snapshots) - 1 or iters[i + 1] - iters[i] >= median / 4]


def cached_records(run: Path) -> dict[str, dict[str, Any]]:
    """The records in ``RUN/fid.jsonl`` by snapshot name; a recomputed record (a later line) wins."""
    cache_path = run / "fid.jsonl"
    if not cache_path.exists():
        return {}
    return {r["snapshot"]: r for r in map(json.loads, cache_path.read_text().splitlines())}


def evaluate_run(run: Path, folders: list[Path], n_fake: int | None = None) -> list[dict[str, Any]]:
    """One record per snapshot: iteration, kimg, CPU minutes, then per feature space FID, precision and
    recall (cached in fid.jsonl; records from before precision/recall existed are recomputed)."""
    cache_path = run / "fid.jsonl"
    cache = cached_records(run)
    snapshots = spaced(sorted((run / "snapshots").glob("G_ema-*.pt")))
    if not snapshots:
        return []
    reals = None
    out = []
    for snap in snapshots:
        cached = cache.get(snap.name)
        if cached and "recall_el0" in cached and (n_fake is None or cached["n_fake"] == n_fake):
            out.append(cached)
            continue
        blob = torch.load(snap, map_location="cpu", weights_only=True)
        G = load_networks(snap).G_ema
        if reals is None:
            reals = real_features(tuple(str(f) for f in folders), G.img_resolution)
        n = n_fake or len(reals["el0"])
        fakes = generated_images(G, n)
        record = {"snapshot": snap.name, **blob["meta"], "n_fake": n, "n_real": len(reals["el0"])}
        for space in SPACES:
            feats = metrics.features(fakes, space)
            record[f"fid_{space}"] = metrics.fid(feats, reals[space])
            record[f"precision_{space}"], record[f"recall_{space}"] = metrics.precision_recall(reals[space], feats)
        log.info(
            "%s %s: FID-EL0 %.1f FID-VGG %.1f precision/recall-EL0 %.2f/%.2f",
            *(run.name, snap.name, record["fid_el0"], record["fid_vgg"]),
            *(record["precision_el0"], record["recall_el0"]),
        )
        out.append(record)
        with open(cache_path, "a") as fh:  # a recomputed record is appended; the last line of a snapshot wins
            fh.write(json.dumps(record) + "\n")
    return out
