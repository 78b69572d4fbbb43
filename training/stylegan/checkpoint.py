"""Reading and writing generators: our run checkpoints, our generator files, official checkpoints.

* run checkpoint ``checkpoints/model.json`` (+ ``.safetensors``): ``{arch: "stylegan2", init_kwargs: {G, D,
  discriminator}, params: {G, D}, params_ema: {G}, step}``.
* generator file (fusion output, snapshots): ``{arch: "stylegan2-generator", init_kwargs: <G config>,
  params: <G state>, params_ema: <G state>, meta}``.
* official: a ``.pkl`` network pickle or a ``torch.save``'d state dict (see official.py).

``load_generator`` accepts any of them (a run directory too) and returns the EMA generator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.errors import TrainingError
from training.modules import load_strict
from training.runs import MODEL_FILE, _atomic_torch_save, find_model_file, load_model_file
from training.stylegan import official
from training.stylegan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

log = logging.getLogger(__name__)

RUN_ARCH = "stylegan2"
GENERATOR_ARCH = "stylegan2-generator"


@dataclass
class LoadedNetworks:
    """What a base checkpoint provides: the (EMA) generator, optionally the training G and D."""

    G_ema: Generator
    G: Generator | None
    D: Discriminator | None
    source: str
    kind: str  # "run" | "generator" | "official-pickle" | "official-state-dict"


def generator_from_dict(cfg: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> Generator:
    try:
        gcfg = GeneratorConfig(**cfg)
    except TypeError as exc:
        raise TrainingError(f"{source}: generator configuration not understood: {exc}") from exc
    G = Generator(gcfg)
    load_strict(G, state, source)
    return G.eval().requires_grad_(False)


def save_generator(G: Generator, path: Path | str, meta: dict[str, Any] | None = None) -> Path:
    """Write a self-contained generator file (atomic, disk-space checked)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
    blob = {
        "arch": GENERATOR_ARCH,
        "init_kwargs": G.cfg.to_dict(),
        "params": state,
        "params_ema": state,
        "meta": meta or {},
    }
    _atomic_torch_save(blob, path)
    return path


def load_networks(path: Path | str) -> LoadedNetworks:
    """Load any supported checkpoint; raises TrainingError naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        candidate = find_model_file(path)
        if candidate == path:
            raise TrainingError(f"{path}: a folder without checkpoints/{MODEL_FILE}")
        path = candidate
    if not path.exists():
        raise TrainingError(f"{path}: no such checkpoint")
    source = str(path)
    if path.suffix == ".json":  # a run's checkpoint: safetensors + JSON
        obj = load_model_file(path)
    else:
        with open(path, "rb") as fh:
            head = fh.read(2)
        # torch.save files are zip archives ("PK"); official network pickles are raw pickles.
        if head != b"PK":
            nets = official.read_official_pickle(path)
            return _from_official(nets, source, "official-pickle")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TrainingError(f"{source}: not a readable checkpoint: {exc}") from exc
    if isinstance(obj, dict) and obj.get("arch") == RUN_ARCH:
        kw, params = obj["init_kwargs"], obj["params"]
        G_ema = generator_from_dict(kw["G"], obj["params_ema"]["G"], source)
        G = generator_from_dict(kw["G"], params["G"], source)
        D = None
        if kw.get("discriminator", "stylegan") == "stylegan" and "D" in params:
            D = Discriminator(DiscriminatorConfig(**kw["D"]))
            load_strict(D, params["D"], source)
        return LoadedNetworks(G_ema, G, D, source, "run")
    if isinstance(obj, dict) and obj.get("arch") == GENERATOR_ARCH:
        G_ema = generator_from_dict(obj["init_kwargs"], obj["params_ema"], source)
        return LoadedNetworks(G_ema, None, None, source, "generator")
    if isinstance(obj, dict) and "arch" in obj:
        raise TrainingError(f"{source}: a '{obj['arch']}' checkpoint, not a StyleGAN2 one")
    return _from_official(official.split_official_state(obj, source), source, "official-state-dict")


def _from_official(nets: dict[str, dict[str, torch.Tensor]], source: str, kind: str) -> LoadedNetworks:
    g_state = nets.get("G_ema") or nets.get("G")
    if g_state is None:
        raise TrainingError(f"{source}: holds no generator")
    G_ema = official.generator_from_state(g_state, source + " [G_ema]" if "G_ema" in nets else source + " [G]")
    G = official.generator_from_state(nets["G"], source + " [G]") if "G" in nets else None
    D = official.discriminator_from_state(nets["D"], source + " [D]") if "D" in nets else None
    log.info("loaded official %s from %s (%d² generator)", kind, source, G_ema.img_resolution)
    return LoadedNetworks(G_ema, G, D, source, kind)


def load_generator(path: Path | str) -> Generator:
    """The EMA generator of any supported checkpoint, in eval mode without gradients."""
    return load_networks(path).G_ema
