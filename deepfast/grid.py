"""Image grids as PNG files (Pillow): samples, translations, adversarial examples side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deepfast.files import atomic_file


def make_grid(
    images: Tensor,
    nrow: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    padding: int = 2,
    scale: int = 1,
) -> np.ndarray:
    """(N, C, H, W) images with C = 1 or 3, values in ``value_range`` (clipped) -> uint8 array
    (rows * (H + padding) + padding, ..., 3) or (..., ...) for gray: ``nrow`` images per row (default
    ceil(sqrt(N))), white padding, each pixel repeated ``scale`` x ``scale`` (small digits stay visible)."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, C, H, W) tensor with C = 1 or 3, got {shape}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("images is empty")
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    if scale > 1:
        x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        h, w = h * scale, w * scale
    grid = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for k in range(n):
        top, left = padding + (k // nrow) * (h + padding), padding + (k % nrow) * (w + padding)
        grid[:, top : top + h, left : left + w] = x[k]
    return grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy()


def save_grid(
    images: Tensor,
    path: str | Path,
    nrow: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    padding: int = 2,
    scale: int = 1,
    labels: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
) -> Path:
    """Writes ``make_grid(images, nrow, value_range, padding, scale)`` as a PNG to ``path`` (folders
    created; written atomically, ``deepfast.files.atomic_file``, so a reader never sees half an image). Returns the
    path. ``labels``: one text per image ("" for none), drawn in its top-left corner (Pillow's default
    font, on a black box) in ``colors`` (one Pillow color name per image; default white); the PNG is RGB then."""
    path = Path(path)
    n = images.shape[0] if isinstance(images, Tensor) else 0
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels must hold one text per image ({n}), got {len(labels)}")
    if colors is not None and (labels is None or len(colors) != n):
        raise ValueError(f"colors must hold one color per image ({n}) and come with labels")
    from PIL import Image, ImageDraw  # (Pillow: imported when an image is written)

    image = Image.fromarray(make_grid(images, nrow, value_range, padding, scale))
    if labels is not None:
        image = image.convert("RGB")
        draw = ImageDraw.Draw(image)
        h, w = images.shape[-2] * scale, images.shape[-1] * scale
        nrow = nrow or math.ceil(math.sqrt(n))
        for k, text in enumerate(labels):
            if text:
                xy = (padding + (k % nrow) * (w + padding) + 1, padding + (k // nrow) * (h + padding) + 1)
                draw.rectangle(draw.textbbox(xy, text), fill="black")
                draw.text(xy, text, fill=colors[k] if colors is not None else "white")
    with atomic_file(path) as f:
        image.save(f, format="PNG")
    return path
