"""torch.distributed for the trainers: the process group set up from torchrun's environment, each
process's device, DDP around the models, and the collectives the training loop needs (no-ops in a
single process)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class World:
    """This process's place: rank, world size, local rank (its GPU under torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process group was created by init_world (and is closed by close_world)

    @property
    def main(self) -> bool:
        """Rank 0 logs, draws progress bars and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """Joins the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT in the
    environment): gloo for CPU, nccl for CUDA; a group the caller already set up is used as it is.
    Without WORLD_SIZE > 1 and without a group, a single process."""
    owns = False
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return World()
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        owns = True
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def init_process(device: str | None) -> tuple[World, torch.device]:
    """This process's world (``init_world``) and device: ``device`` ("cpu", "cuda", "cuda:1"), else CUDA
    when available. A bare "cuda" is the process's own GPU (its local rank under torchrun), made the
    current device."""
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    world = init_world(chosen.type)
    try:
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(chosen)
    except BaseException:
        close_world(world)
        raise
    return world, chosen


def data_parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train it (it has trainable parameters),
    else ``model`` itself."""
    if not world.distributed or not any(p.requires_grad for p in model.parameters()):
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def close_world(world: World) -> None:
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum of ``t`` over the processes (``t`` itself in one process); in place."""
    if world.distributed:
        dist.all_reduce(t)
    return t


def gather_objects(obj: object, world: World) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process ([obj] in one process)."""
    if not world.distributed:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
