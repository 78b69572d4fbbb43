"""Import official StyleGAN2-ADA PyTorch checkpoints (NVlabs ``stylegan2-ada-pytorch`` / ``stylegan3``'s
StyleGAN2 configs) into our networks.

Supported inputs:

* a **state dict** of the official ``Generator`` (``G.state_dict()`` / ``G_ema.state_dict()``), optionally
  nested (``{"G_ema": {...}}``) or prefixed (``"G_ema.mapping.fc0.weight"``), saved with ``torch.save``;
  likewise the ``Discriminator``'s.
* an official **network pickle** (``network-snapshot-*.pkl``). Those pickles embed the source code of
  their classes and rebuild them with ``exec`` — running it would execute whatever a downloaded file
  contains. We unpickle with a restricted unpickler instead: only tensor/storage rebuilders, plain
  containers and numpy scalars are allowed, and the persistent-class hook is replaced by a stub that
  keeps the object's state, from which the parameters and buffers are collected by module path.
  Anything else in the pickle (other callables, unknown classes) is refused by name.

Our modules mirror the official ops' arithmetic (padding, filter gains, equalised-lr gains, weight
flip of the upsampling convolutions, clamps). Checked once against a local transcription of the
official ``networks.py`` with its reference (non-CUDA) ``upfirdn2d`` / ``conv2d_resample`` paths: on the
same weights, G (fused and unfused modulation, constant and no noise, truncation) and D outputs were
identical (max |diff| 0) at 64² and 256². That code is NVIDIA-licensed and not in this repository.

The configuration (resolution, latent sizes, mapping depth, per-resolution channels) is inferred from the
parameter shapes, our networks are built with it, and the tensors are loaded strictly by name: a
missing, extra or mis-shaped entry is reported with its name. Conditional (class-label) networks and the
'orig'/'resnet' generator architectures are not supported (their extra parameters are named in the
error).
"""

from __future__ import annotations

import io
import logging
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from training.errors import TrainingError
from training.modules import load_strict
from training.stylegan.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

log = logging.getLogger(__name__)


# ----- configuration inference -----------------------------------------------------------------


def _infer_channels(channels: dict[int, int], source: str) -> tuple[int, int]:
    """(channel_base, channel_max) with min(base // res, max) == channels[res] for every resolution."""
    channel_max = max(channels.values())
    top = max(channels)
    candidates = [channels[top] * top] if channels[top] < channel_max else [channel_max * top]
    for res, ch in channels.items():
        if ch < channel_max:
            candidates.append(ch * res)
    for base in sorted(set(candidates)):
        if all(min(base // r, channel_max) == c for r, c in channels.items()):
            return base, channel_max
    raise TrainingError(f"{source}: per-resolution channels {channels} do not follow min(base/res, max)")


def generator_config_from_state(state: dict[str, torch.Tensor], source: str) -> GeneratorConfig:
    try:
        fcs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
        blocks = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
        if not fcs or not blocks:
            raise KeyError("mapping.fc0.weight / synthesis.b4.conv1.weight")
        channels = {res: int(state[f"synthesis.b{res}.conv1.weight"].shape[0]) for res in blocks}
        base, cmax = _infer_channels(channels, source)
        return GeneratorConfig(
            resolution=blocks[-1],
            z_dim=int(state["mapping.fc0.weight"].shape[1]),
            w_dim=int(state[f"mapping.fc{fcs[-1]}.weight"].shape[0]),
            mapping_layers=len(fcs),
            channel_base=base,
            channel_max=cmax,
            img_channels=int(state[f"synthesis.b{blocks[-1]}.torgb.weight"].shape[0]),
        )
    except KeyError as exc:
        raise TrainingError(f"{source}: not a StyleGAN2 generator state dict (no {exc.args[0]})") from None


def discriminator_config_from_state(
    state: dict[str, torch.Tensor], source: str, mbstd_group_size: int = 4
) -> DiscriminatorConfig:
    try:
        blocks = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"b(\d+)\.conv0\.weight", k)))
        if not blocks:
            raise KeyError("b*.conv0.weight")
        channels = {res: int(state[f"b{res}.conv0.weight"].shape[0]) for res in blocks}
        channels[4] = int(state["b4.conv.weight"].shape[0])
        base, cmax = _infer_channels(channels, source)
        return DiscriminatorConfig(
            resolution=blocks[-1],
            channel_base=base,
            channel_max=cmax,
            img_channels=int(state[f"b{blocks[-1]}.fromrgb.weight"].shape[1]),
            mbstd_group_size=mbstd_group_size,
            mbstd_channels=int(state["b4.conv.weight"].shape[1]) - channels[4],
        )
    except KeyError as exc:
        raise TrainingError(f"{source}: not a StyleGAN2 discriminator state dict (no {exc.args[0]})") from None


def generator_from_state(state: dict[str, torch.Tensor], source: str) -> Generator:
    G = Generator(generator_config_from_state(state, source))
    load_strict(G, state, source)
    return G.eval().requires_grad_(False)


def discriminator_from_state(state: dict[str, torch.Tensor], source: str) -> Discriminator:
    D = Discriminator(discriminator_config_from_state(state, source))
    load_strict(D, state, source)
    return D


# ----- restricted unpickling of official network pickles ----------------------------------------


class _PersistentStub:
    """Stands in for an official persistent class: keeps the pickled state, runs no embedded code."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.class_name = meta.get("class_name")
        self.state = meta.get("state") or {}


class _AttrDict(dict):
    """Replacement for ``dnnlib.EasyDict`` (a dict with attribute access) in unpickled metadata."""


def _allowed() -> dict[tuple[str, str], Any]:
    import numpy as np

    allowed: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _PersistentStub,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("collections", "OrderedDict"): OrderedDict,
        ("dnnlib.util", "EasyDict"): _AttrDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch", "Size"): torch.Size,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
    }
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(core, "scalar")] = _numpy_scalar
        allowed[(core, "_reconstruct")] = _numpy_reconstruct
    return allowed


def _load_storage(data: bytes):
    """Storages in plain pickles are nested ``torch.save`` blobs: read them with ``weights_only``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype, data=None):
    import numpy as np

    return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


def _numpy_reconstruct(_cls, shape, dtype):
    """Empty ndarray; ``__setstate__`` (pickle BUILD) then fills it — no class other than ndarray."""
    import numpy as np

    return np.ndarray.__new__(np.ndarray, shape, dtype)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.table = _allowed()

    def find_class(self, module: str, name: str):
        try:
            return self.table[(module, name)]
        except KeyError:
            raise TrainingError(
                f"{self.source}: the pickle references {module}.{name}, which the restricted loader does not "
                "allow (only official StyleGAN2-ADA network pickles are supported; or pass a state dict)"
            ) from None


def _flatten_stub(stub: _PersistentStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """Collect ``_parameters`` and ``_buffers`` of a stubbed module tree under their dotted paths."""
    out: dict[str, torch.Tensor] = {}
    state = stub.state
    for key in ("_parameters", "_buffers"):
        for name, value in (state.get(key) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach().clone()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, _PersistentStub):
            out.update(_flatten_stub(child, f"{prefix}{name}."))
        elif child is not None:
            raise TrainingError(f"unsupported module {prefix}{name} of type {type(child).__name__} in the pickle")
    return out


def read_official_pickle(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{"G": ..., "D": ..., "G_ema": ...}`` state dicts from an official network pickle (whichever exist)."""
    try:
        with open(path, "rb") as fh:
            data = _RestrictedUnpickler(fh, str(path)).load()
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(f"{path}: not a readable network pickle: {exc}") from exc
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: expected a dict of networks, found {type(data).__name__}")
    nets = {k: _flatten_stub(v) for k, v in data.items() if isinstance(v, _PersistentStub) and k in ("G", "D", "G_ema")}
    if "G_ema" not in nets and "G" not in nets:
        raise TrainingError(f"{path}: the pickle holds no generator (keys: {sorted(data)})")
    return nets


def split_official_state(obj: Any, source: str) -> dict[str, dict[str, torch.Tensor]]:
    """A loaded ``torch.save`` object → ``{"G_ema"|"G"|"D": state dict}``.

    Accepts a bare generator or discriminator state dict, one nested under those keys, or one whose
    keys carry ``G_ema.`` / ``G.`` / ``D.`` prefixes.
    """
    if not isinstance(obj, dict) or not obj:
        raise TrainingError(f"{source}: not a state dict")
    if all(isinstance(v, dict) for v in obj.values()):
        return {k: dict(v) for k, v in obj.items() if k in ("G", "D", "G_ema")}
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TrainingError(f"{source}: not a state dict of tensors")
    prefixed: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in obj.items():
        head, _, rest = key.partition(".")
        if head in ("G", "D", "G_ema") and rest:
            prefixed.setdefault(head, {})[rest] = value
    if prefixed and sum(len(v) for v in prefixed.values()) == len(obj):
        return prefixed
    if any(k.startswith(("mapping.", "synthesis.")) for k in obj):
        return {"G_ema": dict(obj)}
    if any(re.match(r"b\d+\.", k) for k in obj):
        return {"D": dict(obj)}
    raise TrainingError(f"{source}: neither a StyleGAN2 generator nor discriminator state dict")
