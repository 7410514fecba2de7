"""Running a model for evaluation: eval mode with each submodule's own training flag restored afterwards
(the one such context manager of the package: attacks, metrics, latent tools and trainers use it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(*models: nn.Module, freeze: bool = False) -> Iterator[None]:
    """Puts ``models`` in eval mode (BatchNorm with running statistics, no dropout) and restores the
    training flag of each of their submodules afterwards, even when the block raises. With ``freeze``,
    their parameters also stop requiring grad meanwhile (their flags are restored too), so that a
    backward to the input computes no parameter gradient and the forward keeps nothing for one."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    flags = [(p, p.requires_grad) for model in models for p in model.parameters()] if freeze else []
    for model in models:
        model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)


@contextlib.contextmanager
def evaluating(*models: nn.Module) -> Iterator[None]:
    """``eval_mode(*models)`` and ``torch.no_grad()`` for the block: forwards for evaluation."""
    with eval_mode(*models), torch.no_grad():
        yield
