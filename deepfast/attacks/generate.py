"""Inputs that a model assigns to a chosen class: from noise ("not an iguana, yet classified as an
iguana") or from any image ("a cat classified as an iguana"), by targeted PGD.

    x <- step towards lower cross-entropy to the class (sign of the gradient for Linf), kept within
         eps of the start and in [0, 1], for every one of ``steps`` steps (no early stop: the class's
         probability keeps rising after the prediction first flips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deepfast.attacks.base import Normalization, model_device
from deepfast.attacks.pgd import PGD


def generate_class(
    model: nn.Module,
    target: int | Tensor,
    *,
    start: Tensor | None = None,
    shape: Sequence[int] | None = None,
    eps: float | None = None,
    steps: int = 100,
    alpha: float | None = None,
    norm: str = "inf",
    normalization: Normalization | None = None,
    seed: int | None = None,
) -> Tensor:
    """Images (N, ...) in [0, 1] that ``model`` assigns to class ``target``.

    Args:
        target: the class, an int, or a tensor (N,) of one class per image.
        start: images (N, ...) in [0, 1] to start from; None: uniform noise of ``shape``.
        shape: (N, C, H, W) of the noise to start from, when ``start`` is None.
        eps: how far the result may move from the start (Linf or L2); None: anywhere in the box [0, 1]
            (eps = 1 for Linf, sqrt(C * H * W) for L2).
        steps, alpha, norm, normalization: as ``PGD``'s (alpha None: 2.5 * eps / steps).
        seed: seeds the noise and the attack.
    Returns the images on the device of ``start`` (of the model, when starting from noise), float32 for
    noise. The model's mode and parameters are left as they were.
    """
    if start is None:
        if shape is None or len(shape) < 2 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise ValueError(f"shape must be (N, C, H, W) of positive ints when start is None, got {shape!r}")
        device = model_device(model)
        generator = None if seed is None else torch.Generator(device).manual_seed(seed)
        start = torch.rand(tuple(shape), device=device, generator=generator)
    if eps is None:
        eps = 1.0 if norm == "inf" else math.sqrt(math.prod(start.shape[1:]))
    attack = PGD(
        model,
        eps=eps,
        alpha=alpha,
        steps=steps,
        random_start=False,
        norm=norm,
        early_stop=False,
        target=target,
        normalization=normalization,
        seed=seed,
    )
    return attack(start)
