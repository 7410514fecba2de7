"""Running statistics of a model's BatchNorm layers recomputed from batches of inputs."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, inputs: Iterable[tuple[Tensor, ...]]) -> nn.Module:
    """Replaces the running mean and variance of every BatchNorm layer of ``model`` by their average
    over forward passes ``model(*args)`` in train mode, one per tuple of ``inputs`` (momentum None: the
    cumulative average; the variance of each batch unbiased, as BatchNorm keeps it). The "standing
    statistics" of Brock et al. 2019: the statistics of the weights as they are now, e.g. of an
    averaged (EMA) generator, whose copied statistics belong to other weights. The layers' momentum and
    the model's train / eval mode are restored; returns ``model``. ValueError when ``inputs`` is empty."""
    batches = iter(inputs)
    first = next(batches, None)
    if first is None:
        raise ValueError("inputs gave no batch to recompute the BatchNorm statistics from")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta, mode = [m.momentum for m in norms], model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for args in itertools.chain([first], batches):
            model(*args)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(mode)
    return model
