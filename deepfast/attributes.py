"""Measurable attributes of digit images (gray strokes on a dark background), to form attribute groups
for latent arithmetic and to measure its effect: stroke thickness and slant."""

from __future__ import annotations

import torch
from torch import Tensor

from deepfast._validation import ValueRange, check_finite_float, check_float, check_value_range

TINY = torch.finfo(torch.float64).tiny


def _ink(images: Tensor, value_range: ValueRange) -> Tensor:
    """(N, 1, H, W) or (N, H, W) images in value_range -> ink (N, H, W) float64 in [0, 1]."""
    check_float(images, "images")
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"images must be gray digits (N, 1, H, W) or (N, H, W), got shape {tuple(images.shape)}")
    lo, hi = check_value_range(value_range)
    return ((images.detach().double() - lo) / (hi - lo)).clamp(0.0, 1.0)


def stroke_thickness(images: Tensor, value_range: ValueRange = (0.0, 1.0), threshold: float = 0.5) -> Tensor:
    """Mean stroke width in pixels of each image: ink mass / skeleton length, float64 (N,).

    ink mass = sum of the ink values (images mapped from ``value_range`` to [0, 1]); skeleton length
    = pixel count of ``skimage.morphology.skeletonize(ink > threshold)``. A stroke of width w and
    length L has mass ~ w L and skeleton ~ L. Images without ink above the threshold give 0.
    """
    from skimage.morphology import skeletonize

    check_finite_float(threshold, "threshold")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    ink = _ink(images, value_range)
    masks = (ink > threshold).cpu().numpy()
    lengths = torch.tensor([float(skeletonize(m).sum()) if m.any() else 0.0 for m in masks], dtype=torch.float64)
    mass = ink.sum((1, 2)).cpu()
    return torch.where(lengths > 0, mass / lengths.clamp(min=1.0), torch.zeros_like(mass))


def slant(images: Tensor, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """Slant of each image from the second moments of its ink, float64 (N,): the shear

        slant = -cov(x, y) / var(y)      ink-weighted, x the column and y the row index (downwards)

    i.e. how many columns the strokes move to the right per row upwards: > 0 leaning right, < 0
    leaning left, 0 upright (the shear that deskewing undoes). Blank images give 0.
    """
    ink = _ink(images, value_range)
    n, h, w = ink.shape
    mass = ink.sum((1, 2))
    y = torch.arange(h, dtype=torch.float64, device=ink.device).view(1, h, 1)
    x = torch.arange(w, dtype=torch.float64, device=ink.device).view(1, 1, w)
    safe = mass.clamp(min=TINY)
    my = (ink * y).sum((1, 2)) / safe
    mx = (ink * x).sum((1, 2)) / safe
    dy, dx = y - my.view(n, 1, 1), x - mx.view(n, 1, 1)
    var_y = (ink * dy * dy).sum((1, 2)) / safe
    cov = (ink * dx * dy).sum((1, 2)) / safe
    return torch.where(var_y > 0, -cov / var_y.clamp(min=TINY), torch.zeros_like(cov)).cpu()
