"""The fast gradient sign method (Goodfellow et al. 2015) and its L2 variant (fast gradient method).

    Linf:  x' = clip(x + eps * sign(g), 0, 1)          L2:  x' = clip(x + eps * g / ||g||_2, 0, 1)

with g the gradient of the loss at x: one PGD step of size eps from the image itself.
"""

from __future__ import annotations

from torch import nn

from deepfast.attacks.pgd import PGD


class FGSM(PGD):
    """FGSM: ``adv = FGSM(model, eps=8/255)(images, labels)``; one forward and one backward.

    With early_stop=True (the default) images the model already gets wrong (or, targeted, assigns to the
    target) are returned unchanged. Other arguments as ``PGD``'s (target, normalization, seed)."""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, norm: str = "inf", **kwargs) -> None:
        super().__init__(model, eps, alpha=eps, steps=1, random_start=False, norm=norm, **kwargs)

    def __repr__(self) -> str:
        return f"FGSM(eps={self.eps:.4g}, norm={self.norm!r}, early_stop={self.early_stop}, target={self.target!r})"
