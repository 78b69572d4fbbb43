"""Checkpoint files that never execute code on load: tensors in safetensors, everything else in JSON.

A record (a model's ``{arch, init_kwargs, params, params_ema, ...}`` or a training state with optimiser
states and RNG states) is split into a JSON document and a flat table of tensors. Where a tensor (or a
numpy array) stood, the JSON holds ``{"__tensor__": key}`` (``{"__ndarray__": key}``); tuples and dicts
whose keys are not strings (an optimiser's per-parameter state) are spelled out so that they come back
as they were. Pickled checkpoints of earlier versions are read once through torch's restricted
``weights_only`` loader, which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from training.errors import TrainingError


def _split(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[where] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": where}
    if isinstance(obj, np.ndarray):
        tensors[where] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": where}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split(v, tensors, f"{where}/{k}") for k, v in obj.items()}
        return {"__items__": [[k, _split(v, tensors, f"{where}/{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TrainingError(f"cannot store a {type(obj).__name__} in a checkpoint (at {where})")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: _join(v, tensors) for k, v in obj["__items__"]}
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def encode(record: dict[str, Any]) -> tuple[bytes, bytes]:
    """(JSON document, safetensors blob) of a record."""
    tensors: dict[str, torch.Tensor] = {}
    document = _split(record, tensors, "")
    return json.dumps(document).encode(), save_tensors(tensors)


def decode(document: bytes, blob: bytes, where: str) -> dict[str, Any]:
    try:
        return _join(json.loads(document), load_tensors(blob))
    except Exception as exc:  # safetensors raises its own error type for a damaged blob
        raise TrainingError(f"{where}: not a readable checkpoint: {exc}") from exc


def tensors_path(json_path: Path) -> Path:
    return json_path.with_suffix(".safetensors")


def read(json_path: Path) -> dict[str, Any]:
    """A record written as ``X.json`` + ``X.safetensors``."""
    try:
        document, blob = json_path.read_bytes(), tensors_path(json_path).read_bytes()
    except FileNotFoundError:
        raise TrainingError(f"{json_path}: no such checkpoint") from None
    return decode(document, blob, str(json_path))


def read_legacy(path: Path) -> dict[str, Any]:
    """A pickled checkpoint of an earlier version, through the restricted loader (tensors and containers,
    plus numpy's array reconstruction for the RNG state a training state holds)."""
    numpy_globals = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(numpy_globals):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # the restricted unpickler refuses anything else with its own errors
        raise TrainingError(f"{path}: not a readable checkpoint: {exc}") from exc
