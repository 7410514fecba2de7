"""Expectation over transformation (Athalye et al. 2018): PGD whose gradient is averaged over random,
differentiable transformations of the input, so that the adversarial example survives them (or a
randomized defense that applies them).

    g = 1/K * sum_k grad_x loss(f(T_k(x)))        T_k ~ RandomTransform, K = eot_samples

The K transformed copies of the batch run through the model as one batch of K * N images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._validation import check_finite_float
from deepfast.attacks.base import check_positive_int
from deepfast.attacks.pgd import PGD


def _uniform(n: int, lo: float, hi: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, dtype=like.dtype, device=like.device, generator=generator)


class RandomTransform:
    """A random differentiable transformation of images (N, C, H, W) in [0, 1], drawn per image:

    - affine (``F.affine_grid`` + bilinear ``F.grid_sample``, zeros outside): zoom by a factor in
      ``scale`` = (lo, hi), rotation by an angle in [-rotation, rotation] degrees, shift by a fraction
      in [-translate, translate] of the width and height;
    - brightness: + a value in [-brightness, brightness];
    - noise: + N(0, noise^2) per pixel;

    then clipped to [0, 1]. Parts left at their defaults are skipped: ``RandomTransform()`` is the
    identity and returns its input.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (1.0, 1.0),
        rotation: float = 0.0,
        translate: float = 0.0,
        brightness: float = 0.0,
        noise: float = 0.0,
    ) -> None:
        if not (isinstance(scale, (tuple, list)) and len(scale) == 2 and 0 < scale[0] <= scale[1] < math.inf):
            raise ValueError(f"scale must be a pair (lo, hi) with 0 < lo <= hi, got {scale!r}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.rotation = check_finite_float(rotation, "rotation", minimum=0)
        self.translate = check_finite_float(translate, "translate", minimum=0)
        self.brightness = check_finite_float(brightness, "brightness", minimum=0)
        self.noise = check_finite_float(noise, "noise", minimum=0)

    @property
    def affine(self) -> bool:
        return self.scale != (1.0, 1.0) or self.rotation > 0 or self.translate > 0

    def __repr__(self) -> str:
        return (
            f"RandomTransform(scale={self.scale}, rotation={self.rotation}, translate={self.translate}, "
            f"brightness={self.brightness}, noise={self.noise})"
        )

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n = x.shape[0]
        if self.affine:
            if x.dim() != 4:
                raise ValueError(f"images must have shape (N, C, H, W) for affine transforms, got {tuple(x.shape)}")
            zoom = _uniform(n, *self.scale, x, generator)
            angle = _uniform(n, -self.rotation, self.rotation, x, generator) * (math.pi / 180)
            shift = _uniform(2 * n, -2 * self.translate, 2 * self.translate, x, generator).view(n, 2, 1)
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input coordinates
            theta = torch.cat([torch.stack([cos, -sin, sin, cos], dim=1).view(n, 2, 2), shift], dim=2)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        shape = (n, *(1,) * (x.dim() - 1))
        if self.brightness > 0:
            x = x + _uniform(n, -self.brightness, self.brightness, x, generator).view(shape)
        if self.noise > 0:
            x = x + self.noise * torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        return x.clamp(0, 1) if self.affine or self.brightness > 0 or self.noise > 0 else x


class EOTPGD(PGD):
    """PGD with the gradient averaged over ``eot_samples`` random transformations of the input.

    The other arguments are ``PGD``'s. Early stop (on by default) stops a sample once the mean of the
    model's probabilities over its K transformed copies puts it in another class (or the target).

    Args:
        transform: a ``RandomTransform``, or any function (x (M, ...), generator) -> (M, ...) that is
            differentiable in x. Default: scale (0.9, 1.1), rotation 10 degrees, translate 0.05,
            brightness 0.05, noise 0.02.
        eot_samples: K, the transformations per step (the model sees K * N images per step).
    """

    supports_cuda_graph = False  # the transforms are drawn anew every step

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        norm: str = "inf",
        *,
        transform: RandomTransform | Callable[[Tensor, torch.Generator | None], Tensor] | None = None,
        eot_samples: int = 8,
        **kwargs,
    ) -> None:
        super().__init__(model, eps, alpha, steps, random_start, norm, **kwargs)
        if transform is None:
            transform = RandomTransform(scale=(0.9, 1.1), rotation=10.0, translate=0.05, brightness=0.05, noise=0.02)
        if not callable(transform):
            raise TypeError(
                f"transform must be a RandomTransform or a function (x, generator) -> x, got {type(transform).__name__}"
            )
        self.transform = transform
        self.eot_samples = check_positive_int(eot_samples, "eot_samples")

    def objective(
        self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """(log of the mean probabilities over the K transformed copies of x, the mean loss over them)."""
        k, n = self.eot_samples, x.shape[0]
        copies = x.unsqueeze(0).expand(k, *x.shape).reshape(k * n, *x.shape[1:])
        logits = self.logits(self.transform(copies, generator))
        loss = self.loss(logits, goal.repeat(k), targeted) / k
        return logits.detach().softmax(dim=1).view(k, n, -1).mean(dim=0).log(), loss
