"""Data generation: an image set plus a manifest from random truncated latents or from inverted faces.

Random mode draws z from per-image seeds (image i uses seed ``seed + i``, so any image can be
re-made alone), maps it with truncation ψ and renders with constant noise. Inversion mode renders
the W+ latents written by the ``invert`` stage through another generator — typically the fused or
stylized one — which gives stylized versions of real faces with their poses and identities (pairs
for the next stage).

Output folder: ``images/NNNNNN.png``, ``latents.npy`` (``[N, num_ws, w_dim]`` float32),
``manifest.json`` (generator, mode, ψ, and per image: file, seed or source face, latent row),
``grid.png`` and, on request, an interpolation video.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.errors import TrainingError
from training.images import save_grid, save_rgb, to_uint8, write_video
from training.runs import Progress
from training.stylegan.networks import Generator

log = logging.getLogger(__name__)


def latents_for_seeds(G: Generator, seeds: list[int], psi: float, cutoff: int | None = None) -> torch.Tensor:
    """ws ``[N, num_ws, w_dim]`` for per-image seeds, truncated towards ``w_avg``."""
    z = torch.stack([torch.randn([G.z_dim], generator=torch.Generator().manual_seed(s)) for s in seeds])
    with torch.no_grad():
        return G.mapping(z, truncation_psi=psi, truncation_cutoff=cutoff)


@torch.no_grad()
def render(G: Generator, ws: torch.Tensor, batch: int = 16) -> np.ndarray:
    """ws → ``[N, R, R, 3]`` uint8 RGB, constant noise (deterministic)."""
    out = [to_uint8(G.synthesis(ws[i : i + batch], noise_mode="const"), "rgb") for i in range(0, len(ws), batch)]
    return np.concatenate(out)


def write_image_set(
    out: Path, images: np.ndarray, ws: torch.Tensor, records: list[dict[str, Any]], info: dict[str, Any]
) -> Path:
    """Write images, latents, manifest and a grid; returns the manifest path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    for i, (img, rec) in enumerate(zip(images, records)):
        rec["file"] = f"images/{i:06d}.png"
        rec["latent_row"] = i
        save_rgb(out / rec["file"], img)
    np.save(out / "latents.npy", ws.cpu().numpy().astype(np.float32))
    save_grid(out / "grid.png", images[:64])
    manifest = {**info, "count": len(records), "latents": "latents.npy", "images": records}
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


@torch.no_grad()
def interpolation_frames(
    G: Generator, seeds: list[int], psi: float, frames_per_key: int = 24, loop: bool = True
) -> list[np.ndarray]:
    """Smooth (cosine-eased) linear interpolation in W between the keyframe seeds' latents."""
    ws = latents_for_seeds(G, seeds + ([seeds[0]] if loop else []), psi)
    frames = []
    for i in range(len(ws) - 1):
        for f in range(frames_per_key):
            t = 0.5 - 0.5 * np.cos(np.pi * f / frames_per_key)
            w = torch.lerp(ws[i : i + 1], ws[i + 1 : i + 2], float(t))
            frames.append(to_uint8(G.synthesis(w, noise_mode="const"), "rgb")[0])
    return frames


def load_inversion(folder: Path) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise TrainingError(f"{folder}: no manifest.json (expected the output of the invert stage)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("mode") != "inversion":
        raise TrainingError(f"{manifest_path}: not an inversion manifest")
    ws = torch.from_numpy(np.load(folder / manifest["latents"]))
    return ws, manifest["images"]


# ----- the ``generate`` stage -------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--generator", required=True, help="generator checkpoint (ours, fused, or official)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--count", type=int, default=64, help="random mode: number of images")
    parser.add_argument("--seed", type=int, default=0, help="random mode: image i uses seed + i")
    parser.add_argument("--truncation", type=float, default=0.7, help="ψ: 1 = none, 0 = the average image")
    parser.add_argument("--truncation-cutoff", type=int, help="truncate only the first N ws entries")
    parser.add_argument("--from-inversion", help="render the W+ latents of an invert-stage folder instead")
    parser.add_argument("--video", help="also write an interpolation video (.mp4 H.264 via PyAV, or .avi)")
    parser.add_argument("--video-keys", type=int, default=6, help="keyframes in the video loop")
    parser.add_argument("--video-frames", type=int, default=24, help="frames between keyframes")
    parser.add_argument("--threads", type=int)


def generate_set(
    generator: Path | str,
    out: Path,
    progress: Progress,
    count: int = 64,
    seed: int = 0,
    truncation: float = 0.7,
    truncation_cutoff: int | None = None,
    inversion: Path | None = None,
) -> Path:
    """The ``generate`` stage: an image set with its manifest from a generator, of random latents (image i
    uses seed + i) or of an invert-stage folder's W+ latents; returns the manifest's path."""
    from training.stylegan.checkpoint import load_generator

    G = load_generator(generator)
    info: dict[str, Any] = {"generator": str(generator), "resolution": G.img_resolution}
    if inversion:
        ws, sources = load_inversion(Path(inversion))
        if ws.shape[1:] != (G.num_ws, G.w_dim):
            raise TrainingError(
                f"{inversion}: latents {tuple(ws.shape[1:])} do not fit this generator "
                f"({G.num_ws}, {G.w_dim}); invert with a generator of the same architecture"
            )
        records = [{"source": rec.get("source"), "inversion_file": rec.get("file")} for rec in sources]
        info.update(mode="inversion-synthesis", inversion=str(inversion))
    else:
        seeds = [seed + i for i in range(count)]
        ws = latents_for_seeds(G, seeds, truncation, truncation_cutoff)
        records = [{"seed": s} for s in seeds]
        info.update(mode="random", truncation=truncation, truncation_cutoff=truncation_cutoff)
    progress.start("generate", len(ws))
    chunks = []
    for i in range(0, len(ws), 16):
        chunks.append(render(G, ws[i : i + 16]))
        progress.update(min(i + 16, len(ws)), len(ws))
    manifest = write_image_set(Path(out), np.concatenate(chunks), ws, records, info)
    progress.finish(images=len(ws), manifest=str(manifest))
    log.info("wrote %d images and %s", len(ws), manifest)
    return manifest


def run(args) -> int:
    from training.stylegan.checkpoint import load_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    progress = Progress(args.progress)
    args_set = (args.count, args.seed, args.truncation, args.truncation_cutoff, args.from_inversion)
    generate_set(args.generator, Path(args.out), progress, *args_set)
    if args.video:
        keys = [args.seed + 10_000 + k for k in range(args.video_keys)]
        G = load_generator(args.generator)
        write_video(args.video, interpolation_frames(G, keys, args.truncation, args.video_frames))
    return 0
