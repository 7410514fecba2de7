"""Data for the trainers: a dataset's train and held-out splits by name, and the per-process shard of
each epoch's shuffled order (the same global batches in one process or in W)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from deepfast.train.distributed import World


def load_split(name: str, train: bool, value_range: tuple[float, float], size: int | None) -> Dataset | None:
    """Dataset ``name`` (see deepfast.data.get_dataset) with values in ``value_range``, images resized to
    ``size`` where the dataset can. train=False gives the held-out split ("val", else "test", or
    torchvision's train=False), or None when the dataset has none."""
    from deepfast.data import dataset_function

    fn, args = dataset_function(name)
    params = inspect.signature(fn).parameters
    kw: dict = {"value_range": value_range}
    if size is not None:
        for key in ("size", "patch_size"):
            if key in params:
                kw[key] = size
                break
    if "train" in params:
        return fn(*args, train=train, **kw)
    if "split" not in params:
        return fn(*args, **kw) if train else None
    if train:
        return fn(*args, split="train", **kw)
    for split in ("val", "test"):
        try:
            return fn(*args, split=split, **kw)
        except (ValueError, FileNotFoundError):
            continue
    return None


class ShardSampler(Sampler[int]):
    """Indices of this process's share of epoch e's order: a permutation of range(n) drawn from
    seed + e, cut to a multiple of the world size, every ``world.size``-th from ``world.rank`` on (as
    DistributedSampler with drop_last=True); ``start(e, k)`` skips the first k per-process batches
    (a run resumed mid-epoch). Batches k of all processes together are batch k of one process with
    the global batch size."""

    def __init__(self, n: int, world: World, seed: int, per_process_batch: int) -> None:
        self.n, self.world, self.seed, self.batch = n, world, seed, per_process_batch
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        share = order[: self.n - self.n % self.world.size][self.world.rank :: self.world.size]
        return iter(share[self.skip * self.batch :].tolist())

    def __len__(self) -> int:
        return max(self.n // self.world.size - self.skip * self.batch, 0)

    def batches(self) -> int:
        """Full per-process batches in an epoch."""
        return (self.n // self.world.size) // self.batch


def make_loader(dataset: Dataset, sampler: ShardSampler) -> DataLoader:
    """Batches of ``sampler.batch`` items, the last incomplete one dropped; a generator of its own so
    that iterating takes nothing from the global RNG (a resumed run draws the same numbers)."""
    return DataLoader(dataset, batch_size=sampler.batch, sampler=sampler, drop_last=True, generator=torch.Generator())


def to_device(batch: object, device: torch.device, channels_last: bool) -> object:
    """Tensors of a (nested) batch moved to ``device``; 4-d float ones in channels_last if asked."""
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device, channels_last) for b in batch)
    return batch
