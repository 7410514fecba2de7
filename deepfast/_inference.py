"""Running a model for evaluation: eval mode and no_grad, with the model's modes restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm with running statistics, no dropout) and no_grad for the block; every
    submodule's training flag is restored afterwards, even when the block raises."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
