"""The step of PGD that the eager loop (``PGD._run``, deepfast.attacks.pgd) and the CUDA-graph loop
(``StaticRun``, deepfast.attacks.graphed) share: MI-FGSM's momentum, then the fused in-place step.

Per sample, with g the gradient of the loss with respect to the iterate x (N, ...)::

    momentum mu > 0:  m <- mu * m + g / mean|g|,   g <- m
    x <- deepfast.ops.pgd_step_(x, g, x0, step_size=alpha, eps=eps, norm=norm)   (into the ball and [0, 1])

``pgd_reference`` (deepfast.attacks.pgd) is the textbook loop, kept apart as the spec both are tested
against.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from deepfast.ops import pgd_step_


class StepSettings(Protocol):
    """What a PGD loop reads of its attack (``deepfast.attacks.PGD`` and its subclasses)."""

    alpha: float
    eps: float
    norm: str
    momentum: float
    early_stop: bool

    def gradient(
        self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]: ...

    def succeeded(self, logits: Tensor, goal: Tensor, targeted: bool) -> Tensor: ...


def momentum_(grad: Tensor, m: Tensor | None, mu: float) -> Tensor:
    """MI-FGSM's accumulation m <- mu * m + g / mean|g| (mean per sample), in place in ``m``; with m
    None it returns g / mean|g| (in place in ``grad``)."""
    dims = tuple(range(1, grad.dim()))
    grad.div_(grad.abs().mean(dim=dims, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny))
    return grad if m is None else m.mul_(mu).add_(grad)


def step_(attack: StepSettings, x: Tensor, grad: Tensor, x0: Tensor, m: Tensor | None) -> Tensor | None:
    """One PGD step of the iterate x (N, ...) around the images x0, in place, along ``grad`` (which it
    may overwrite), with the attack's momentum when ``attack.momentum > 0``. ``m``: the momentum buffer,
    or None before the first step (``grad`` then becomes it). Returns the momentum buffer (None without
    momentum)."""
    if attack.momentum > 0:
        grad = m = momentum_(grad, m, attack.momentum)
    pgd_step_(x, grad, x0, step_size=attack.alpha, eps=attack.eps, norm=attack.norm)
    return m
