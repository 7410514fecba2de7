"""Differentiable augmentation for GAN training on little data (DiffAugment, Zhao et al. 2020): the same
kind of random transformation is applied to the real and to the generated images that the
discriminator sees, in its step and in the generator's, so that it cannot learn the few real images by
heart and the generator's gradient passes through the transformation. And ``colour_jitter``, random
colours for a classifier's training images (a classifier that is to ignore colour).

Draws from torch's global generator (a checkpoint's RNG state makes a resumed run draw the same).
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepfast._validation import check_float

POLICIES = ("translation", "cutout")


def check_policy(policy: str) -> tuple[str, ...]:
    """The parts of a policy "translation,cutout" (any subset; "" is none); ValueError for an unknown one."""
    parts = tuple(p for p in policy.split(",") if p) if isinstance(policy, str) else None
    if parts is None or any(p not in POLICIES for p in parts):
        raise ValueError(f"augment policy must be a comma-separated subset of {', '.join(POLICIES)}, got {policy!r}")
    return parts


def translate(x: Tensor, fraction: float = 0.125) -> Tensor:
    """Each image (N, C, H, W) shifted by a random whole number of pixels in [-r, r] along each axis,
    r = round(fraction * size), the border pixels repeated into the space left."""
    n, c, h, w = x.shape
    ry, rx = round(fraction * h), round(fraction * w)
    dy = torch.randint(-ry, ry + 1, (n, 1, 1)).to(x.device)
    dx = torch.randint(-rx, rx + 1, (n, 1, 1)).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).clamp(0, w - 1)
    index = (rows * w + cols).view(n, 1, h * w).expand(n, c, h * w)
    return x.flatten(2).gather(2, index).view(n, c, h, w)


def cutout(x: Tensor, fraction: float = 0.5) -> Tensor:
    """Each image (N, C, H, W) with a random square of side fraction * size (clipped at the border)
    set to 0 (mid-gray for images in [-1, 1])."""
    n, _, h, w = x.shape
    sh, sw = int(fraction * h + 0.5), int(fraction * w + 0.5)
    top = torch.randint(0, h + 1 - sh % 2, (n, 1, 1)).to(x.device) - sh // 2
    left = torch.randint(0, w + 1 - sw % 2, (n, 1, 1)).to(x.device) - sw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    keep = ~((rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw))
    return x * keep.unsqueeze(1).to(x.dtype)


def diff_augment(x: Tensor, policy: str = "translation,cutout") -> Tensor:
    """The transformations of ``policy`` (see ``check_policy``) applied in order, each image drawn anew:
    (N, C, H, W) -> (N, C, H, W), differentiable in x."""
    parts = check_policy(policy)
    check_float(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    for part in parts:
        x = translate(x) if part == "translation" else cutout(x)
    return x


def colour_jitter(x: Tensor, strength: float = 0.6, value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Each image (N, C, H, W) with its channels in a random order, then each channel c scaled and shifted:
    y_c = clamp(lo + (x_c - lo) * g_c + (hi - lo) * b_c, lo, hi), g_c ~ U(1 - s, 1 + s), b_c ~ U(-s/2, s/2)
    drawn per image and channel, s = ``strength`` in [0, 1], (lo, hi) = ``value_range``."""
    check_float(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
    lo, hi = value_range
    n, c = x.shape[:2]
    order = torch.rand(n, c).argsort(1).to(x.device)
    x = x.gather(1, order.view(n, c, 1, 1).expand_as(x))
    gain = 1 + strength * (2 * torch.rand(n, c, 1, 1) - 1)
    shift = (hi - lo) * strength / 2 * (2 * torch.rand(n, c, 1, 1) - 1)
    return (lo + (x - lo) * gain.to(x) + shift.to(x)).clamp(lo, hi)
