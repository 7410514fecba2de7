"""What every dataset shares: the value range and a dataset over a stacked image tensor."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepfast._validation import ValueRange, check_value_range

__all__ = ["ImageTensors", "ValueRange", "check_size", "check_value_range", "resize", "to_range"]


def to_range(x: Tensor, value_range: ValueRange) -> Tensor:
    """Maps ``x`` with values in [0, 1] linearly onto ``value_range`` (no copy for (0, 1))."""
    lo, hi = value_range
    if (lo, hi) == (0.0, 1.0):
        return x
    return x * (hi - lo) + lo


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (antialiased when shrinking) of (C, H, W) or (N, C, H, W) values in [0, 1]."""
    if tuple(x.shape[-2:]) == size:
        return x
    batch = x if x.dim() == 4 else x.unsqueeze(0)
    out = torch.nn.functional.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=True)
    out = out.clamp_(0.0, 1.0)
    return out if x.dim() == 4 else out.squeeze(0)


def check_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Returns ``size`` as (H, W), or None; an int n means (n, n)."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise ValueError(f"size must be a positive int or a pair (H, W) of them, got {size!r}")
    return pair


class ImageTensors(Dataset):
    """Images stacked in one tensor (N, C, H, W), with optional int64 labels (N,).

    Items are float32 (C, H, W) in ``value_range``: ``image`` alone, or ``(image, label)`` with
    ``label`` a 0-dim int64 tensor when there are labels. ``images`` may be uint8 (scaled by 1/255
    on access, which keeps large sets such as CIFAR-10 at a quarter of the memory) or float32
    already in [0, 1].
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | None,
        value_range: ValueRange,
        classes: list[str] | None = None,
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels is not None and labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be (N,) = ({images.shape[0]},), got shape {tuple(labels.shape)}")
        self.images = images
        self.labels = None if labels is None else labels.to(torch.int64)
        self.value_range = check_value_range(value_range)
        self.classes = classes

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        x = self.images[index]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)
        x = to_range(x, self.value_range)
        return x if self.labels is None else (x, self.labels[index])
