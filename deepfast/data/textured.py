"""Digits-M: the scikit-learn digits blended onto coloured texture patches, a target domain for
domain adaptation from ``digits`` in the spirit of MNIST-M (Ganin & Lempitsky 2015)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from deepfast.data._common import ImageTensors, ValueRange, check_size, check_value_range, resize
from deepfast.data.bundled import digits

# scikit-image's bundled images cut into backgrounds: colour photographs, and gray textures that get
# a random tint per patch.
COLOUR_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
GRAY_SOURCES = ("brick", "grass", "gravel", "camera")
SOURCE_SCALE = 4  # sources are resized so that their shorter side is SOURCE_SCALE * size


@functools.lru_cache(maxsize=4)
def _sources(size: tuple[int, int]) -> list[tuple[Tensor, bool]]:
    """(image (C, H, W) in [0, 1] with shorter side SOURCE_SCALE * max(size), is_gray) per source;
    cached per size (read only)."""
    import skimage.data

    out = []
    for name in COLOUR_SOURCES + GRAY_SOURCES:
        array = getattr(skimage.data, name)()
        image = torch.as_tensor(array).float().div_(255.0)
        image = image.unsqueeze(0) if image.dim() == 2 else image[..., :3].permute(2, 0, 1)
        h, w = image.shape[1:]
        scale = SOURCE_SCALE * max(size) / min(h, w)
        out.append((resize(image.contiguous(), (round(h * scale), round(w * scale))), name in GRAY_SOURCES))
    return out


def digits_m(
    split: str = "train",
    size: int = 32,
    seed: int = 0,
    value_range: ValueRange = (0.0, 1.0),
) -> ImageTensors:
    """The digits of ``digits(split, size, seed=seed)`` drawn on textured colour backgrounds.

    For each digit d (1, size, size) in [0, 1], a background patch t (3, size, size) is cut at a
    random position from a random bundled scikit-image picture (astronaut, coffee, chelsea, rocket,
    immunohistochemistry; or the gray brick, grass, gravel, camera multiplied by a random colour in
    [0.2, 1]^3; each resized to a shorter side of 4 * size), and the image is

        x = |t - d|        per channel (MNIST-M's blend: strokes invert the background)

    Items are ``(image, label)``: image float32 (3, size, size) in ``value_range``, label the digit's
    0-dim int64 label (for evaluation of adaptation; the target domain is unlabelled in training).
    Deterministic: the split and the backgrounds are drawn from ``seed``.
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f'split must be "train", "val" or "all", got {split!r}')
    hw = check_size(size)
    value_range = check_value_range(value_range)
    base = digits(split, size=size, seed=seed)
    sources = _sources(hw)
    g = torch.Generator().manual_seed(seed)
    n = len(base)
    which = torch.randint(len(sources), (n,), generator=g)
    corner = torch.rand(n, 2, generator=g, dtype=torch.float64)
    tint = 0.2 + 0.8 * torch.rand(n, 3, 1, 1, generator=g)
    backgrounds = torch.empty(n, 3, *hw)
    for i in range(n):
        image, gray = sources[int(which[i])]
        top = int(corner[i, 0] * (image.shape[1] - hw[0] + 1))
        left = int(corner[i, 1] * (image.shape[2] - hw[1] + 1))
        patch = image[:, top : top + hw[0], left : left + hw[1]]
        backgrounds[i] = patch * tint[i] if gray else patch
    images = (backgrounds - base.images).abs_()
    return ImageTensors(images, base.labels, value_range, classes=base.classes)
