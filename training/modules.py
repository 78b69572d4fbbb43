"""Small helpers on torch modules shared by every stage: parameter counts, CPU copies of weights for
checkpoints, strict loading that names every mismatch, and whether bf16 is native on this CPU."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.errors import TrainingError


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16 or AMX). Elsewhere bf16 autocast is
    emulated and ~120× slower than fp32 (../shared/DESIGN.md), so it must never be turned on blindly."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def ramped_decay(decay: float, step: int) -> float:
    """An EMA decay that follows the weights closely early on, then averages over ~1/(1-decay) steps."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``ema``'s parameters towards ``model``'s by ``1 - decay``; copy its buffers (norm statistics)."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the module's state (checkpoints must not alias live GPU tensors)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``module``; every name must exist on both sides with the same shape.

    Raises TrainingError naming the missing, unexpected and mis-shaped tensors (a plain
    ``load_state_dict`` error is hard to act on when a checkpoint comes from another configuration).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} (file {tuple(state[k].shape)}, network {tuple(own[k].shape)})"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = [
        f"{label} {_names(names)}"
        for label, names in (("missing", missing), ("unexpected", extra), ("mis-shaped", shapes))
        if names
    ]
    if problems:
        raise TrainingError(f"{source}: incompatible parameters: " + "; ".join(problems))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def _names(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
