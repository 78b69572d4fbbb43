"""Data-parallel training through ``torch.distributed`` (started by ``torchrun``): gloo on CPU, NCCL on GPU.

Gradients are all-reduced by hand after each phase, as the official StyleGAN3 loop does, rather than
through ``DistributedDataParallel``: the lazy-regularisation phases use double backward
(``autograd.grad(create_graph=True)``), which DDP does not support, and each phase touches a
different subset of parameters.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """In a process group (torchrun), even of one process: collectives then really run."""
        return dist.is_available() and dist.is_initialized()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over ranks (each rank's loss is pre-scaled to its share)."""
        if not self.distributed:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any (abort requests, budget reached)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


def init_world(device: str) -> World:
    """Join the process group when launched by torchrun (RANK is set); otherwise a world of one."""
    if "RANK" not in os.environ:
        return World(device=device)
    size = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    log.info("rank %d of %d on %s (%s)", rank, size, device, dist.get_backend())
    return World(rank=rank, size=size, device=device)


def shutdown(world: World) -> None:
    if world.distributed:
        dist.barrier()
        dist.destroy_process_group()
