"""Activation memory of a training step: what autograd saves for backward (used by bench_norm_act.py
and tests/test_nn_norm_act.py)."""

from __future__ import annotations

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


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training step of ``model``."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(storages.values())
