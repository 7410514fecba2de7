"""Activation memory of a training step: what autograd saves for backward, and the conv stacks the
fused layers' savings are measured on (shared by benchmarks/bench_norm_leaky_relu.py,
bench_train_step.py and tests/test_nn_norm_leaky_relu.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from deepfast.nn import BatchNormLeakyReLU2d

# What follows each conv of conv_stack.
STACKS = {
    "eager": lambda c: [nn.BatchNorm2d(c), nn.LeakyReLU(0.2)],
    "fused": lambda c: [BatchNormLeakyReLU2d(c)],
    "fused inplace": lambda c: [BatchNormLeakyReLU2d(c, inplace=True)],
    "convs alone": lambda c: [],
}


def conv_stack(kind: str, channels: int = 32, blocks: int = 6) -> nn.Sequential:
    """``blocks`` x (Conv2d 3x3 without bias, then STACKS[kind])."""
    torch.manual_seed(0)
    layers = []
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), *STACKS[kind](channels)]
    return nn.Sequential(*layers)


def step_saved_bytes(step: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``step()`` runs (every forward
    of the step, summed), leaving out the storages of ``exclude`` (e.g. the parameters, which exist
    anyway). The saved tensors are kept alive until the step ends, so that a storage freed by one
    backward and reallocated at the same address is not mistaken for one already counted."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    storages = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in excluded:
            storages[ptr] = t.untyped_storage()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(s.nbytes() for s in storages.values())


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training step of ``model``."""
    return step_saved_bytes(lambda: model(x).sum().backward())
