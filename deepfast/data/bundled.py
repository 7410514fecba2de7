"""Datasets bundled with scikit-learn and scikit-image: they work offline, with nothing to download."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepfast.data._common import ImageTensors, ValueRange, check_size, check_value_range, resize, to_range

DIGITS_COUNT = 1797


def digits(
    split: str = "train",
    size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    value_range: ValueRange = (0.0, 1.0),
) -> ImageTensors:
    """scikit-learn's 1797 handwritten digits (8x8, 17 gray levels), resized to ``size`` x ``size``.

    Items are ``(image, label)``: image float32 (1, size, size) in ``value_range`` (bilinear resize,
    antialiased; ``size=8`` keeps the originals), label a 0-dim int64 tensor in 0..9. ``split`` is
    "train", "val" or "all"; the split is a fixed permutation drawn from ``seed``, with
    round(1797 * val_fraction) images in "val" (359 by default) and the rest in "train" (1438).
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "val", "all"):
        raise ValueError(f'split must be "train", "val" or "all", got {split!r}')
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    hw = check_size(size)
    value_range = check_value_range(value_range)
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if split != "all":
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        n_val = round(len(labels) * val_fraction)
        keep = order[:n_val] if split == "val" else order[n_val:]
        images, labels = images[keep], labels[keep]
    return ImageTensors(resize(images, hw), labels, value_range, classes=[str(d) for d in range(10)])


class Patches(Dataset):
    """Patches of one image (C, H, W), cut on a grid; each item is float32 (C, patch, patch).

    ``image`` holds values in [0, 1]; items are in ``value_range``. Patches are cut on access, so a
    small stride costs no memory. Patch k is at row (k // cols) * stride, column (k % cols) * stride.
    """

    def __init__(self, image: Tensor, patch_size: int, stride: int, value_range: ValueRange) -> None:
        _, h, w = image.shape
        if not (isinstance(patch_size, int) and 0 < patch_size <= min(h, w)):
            raise ValueError(f"patch_size must be an int in 1..{min(h, w)} for an image of {h}x{w}, got {patch_size!r}")
        if not (isinstance(stride, int) and stride > 0):
            raise ValueError(f"stride must be a positive int, got {stride!r}")
        self.image = image
        self.patch_size = patch_size
        self.stride = stride
        self.value_range = check_value_range(value_range)
        self.rows = (h - patch_size) // stride + 1
        self.cols = (w - patch_size) // stride + 1

    def __len__(self) -> int:
        return self.rows * self.cols

    def __getitem__(self, index: int) -> Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"patch index {index} out of range for {len(self)} patches")
        row, col = divmod(index % len(self), self.cols)
        top, left, p = row * self.stride, col * self.stride, self.patch_size
        return to_range(self.image[:, top : top + p, left : left + p].clone(), self.value_range)


def ihc(
    patch_size: int = 32,
    stride: int | None = None,
    value_range: ValueRange = (0.0, 1.0),
) -> Patches:
    """Patches of scikit-image's immunohistochemistry image (512x512 RGB), without labels.

    Items are float32 (3, patch_size, patch_size) in ``value_range``. ``stride`` defaults to
    ``patch_size`` (non-overlapping); there are ((512 - patch_size) // stride + 1) ** 2 patches,
    256 with the defaults.
    """
    from skimage.data import immunohistochemistry

    array = immunohistochemistry()  # (512, 512, 3) uint8
    image = torch.as_tensor(array).permute(2, 0, 1).float().div_(255.0).contiguous()
    return Patches(image, patch_size, patch_size if stride is None else stride, value_range)
