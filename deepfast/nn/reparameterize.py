"""Reparameterize: the sampling head of a VAE, on the fused reparameterization + KL op."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast._validation import check_choice
from deepfast.ops.reparameterize_kl import REDUCTIONS, reparameterize_kl


class Reparameterize(nn.Module):
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, I); the KL term of the last call is in ``self.kl``.

    In eval mode z = mu (the posterior mean) unless ``sample_in_eval``; kl is computed in both modes.
    Shapes: mu, logvar (N, *) -> z (N, *); kl 0-dim, or (N, *) with reduction="none".
    """

    kl: Tensor | None

    def __init__(self, reduction: str = "batchmean", sample_in_eval: bool = False) -> None:
        super().__init__()
        check_choice(reduction, "reduction", REDUCTIONS)
        self.reduction = reduction
        self.sample_in_eval = sample_in_eval
        self.kl = None

    def forward(self, mu: Tensor, logvar: Tensor) -> Tensor:
        eps = None if self.training or self.sample_in_eval else torch.zeros_like(mu)
        z, self.kl = reparameterize_kl(mu, logvar, eps, reduction=self.reduction)
        return z

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, sample_in_eval={self.sample_in_eval}"
