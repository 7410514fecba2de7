"""Folders of image files: ``image_folder`` (optionally one subfolder per class) and ``unpaired``
(the trainA/trainB/testA/testB layout of the CycleGAN datasets). Files are read with Pillow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepfast.data._common import ValueRange, check_size, check_value_range, resize, to_range

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def _pillow():
    """Pillow's Image module (imported when an image is read) and what it raises for a file it cannot
    read: broken or truncated, not an image, too many pixels (DecompressionBombError, above twice
    Image.MAX_IMAGE_PIXELS), an unsupported mode."""
    from PIL import Image, UnidentifiedImageError

    return Image, (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


# Pillow mode -> (mode converted to, channels, divisor to [0, 1]); other modes convert to RGB.
_MODES = {
    "1": ("L", 1, 255.0),
    "L": ("L", 1, 255.0),
    "I;16": ("I;16", 1, 65535.0),
    "I": ("I", 1, 65535.0),  # 16-bit PNGs open as "I" in older Pillow
    "LA": ("LA", 2, 255.0),
    "RGB": ("RGB", 3, 255.0),
    "RGBA": ("RGBA", 4, 255.0),
}


def _target_mode(img: Image.Image) -> tuple[str, int, float]:
    if img.mode in _MODES:
        return _MODES[img.mode]
    if img.mode in ("P", "PA"):
        return _MODES["RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB"]
    if img.mode == "F":
        raise ValueError("floating-point (mode F) images are not supported")
    return _MODES["RGB"]


def _channels_of(path: Path) -> tuple[int, tuple[int, int]]:
    """Channel count and (H, W) of an image file, from its header."""
    image, errors = _pillow()
    try:
        with image.open(path) as img:
            return _target_mode(img)[1], (img.height, img.width)
    except errors as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def read_image(path: str | Path) -> Tensor:
    """Reads one image file as float32 (C, H, W) in [0, 1]; C is 1 (gray), 2 (gray+alpha), 3 (RGB)
    or 4 (RGBA). Palette images become RGB (RGBA with transparency), 16-bit gray is scaled by
    1/65535. Raises ValueError naming the path when Pillow cannot read it."""
    path = Path(path)
    image, errors = _pillow()
    try:
        with image.open(path) as img:
            mode, _, scale = _target_mode(img)
            array = np.asarray(img if img.mode == mode else img.convert(mode))
    except errors as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    x = torch.from_numpy(array.astype(np.float32) / np.float32(scale))
    return x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1).contiguous()


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_image(p))


def _existing_dir(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    return folder


class ImageFiles(Dataset):
    """Image files read on access, each as float32 (C, H, W) in ``value_range``.

    Items are the image alone, or ``(image, label)`` with a 0-dim int64 label when ``labels`` is
    given. Every file's header is read at construction: each must be readable, have ``channels``
    channels (if given, else the first file's count) and, when ``size`` is None, one common size;
    otherwise ValueError names the file. With ``size`` (int or (H, W)) images are resized bilinearly.
    """

    def __init__(
        self,
        files: list[Path],
        labels: list[int] | None = None,
        channels: int | None = None,
        size: int | tuple[int, int] | None = None,
        value_range: ValueRange = (0.0, 1.0),
        classes: list[str] | None = None,
    ) -> None:
        if channels is not None and channels not in (1, 2, 3, 4):
            raise ValueError(f"channels must be 1, 2, 3, 4 or None, got {channels!r}")
        self.files = list(files)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
        self.size = check_size(size)
        self.value_range = check_value_range(value_range)
        self.classes = classes
        first_hw = None
        for path in self.files:
            c, hw = _channels_of(path)
            if channels is None:
                channels = c
            if c != channels:
                raise ValueError(
                    f"image {path} has {c} channel(s), expected {channels}"
                    " (set channels= to the count you want, and convert the images that differ)"
                )
            first_hw = first_hw or hw
            if self.size is None and hw != first_hw:
                raise ValueError(
                    f"image {path} is {hw[0]}x{hw[1]}, the first image is {first_hw[0]}x{first_hw[1]};"
                    " pass size= to resize all images to one size"
                )
        self.channels = channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, Tensor]:
        x = read_image(self.files[index])
        if self.size is not None:
            x = resize(x, self.size)
        x = to_range(x, self.value_range)
        return x if self.labels is None else (x, self.labels[index])


def image_folder(
    path: str | Path,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    value_range: ValueRange = (0.0, 1.0),
) -> ImageFiles:
    """The images of a folder, read on access as float32 (C, H, W) in ``value_range``.

    With subfolders that hold images, each such subfolder is a class: items are
    ``(image, label)``, label a 0-dim int64 tensor indexing ``dataset.classes`` (subfolder names,
    sorted); images directly in ``path`` are then an error. Without, items are the image alone.
    Files are taken by extension (png, jpg, jpeg, bmp, gif, tif, tiff, webp, ppm, pgm), sorted by
    name, hidden files skipped. ``channels`` (1 gray, 3 RGB; 2 and 4 with alpha) must match every
    file; None takes the first file's count. See ``ImageFiles`` for ``size`` and the checks.
    Raises FileNotFoundError or ValueError naming the path.
    """
    folder = _existing_dir(path)
    loose = _images_in(folder)
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and _images_in(p))
    if not class_dirs:
        if not loose:
            raise ValueError(f"no image files in {folder} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return ImageFiles(loose, None, channels, size, value_range)
    if loose:
        raise ValueError(
            f"{folder} holds both images ({loose[0].name}, ...) and class subfolders ({class_dirs[0].name}, ...);"
            " put every image in a class subfolder, or use a folder without subfolders"
        )
    files, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        for file in _images_in(class_dir):
            files.append(file)
            labels.append(label)
    return ImageFiles(files, labels, channels, size, value_range, classes=[d.name for d in class_dirs])


class Unpaired(Dataset):
    """Two unpaired image domains A and B; item i is ``(a, b)``, float32 (C, H, W) each, with
    a = A[i % len(A)] and b drawn uniformly at random from B (torch's global generator), as
    CycleGAN's unaligned dataset does. Its length is max(len(A), len(B))."""

    def __init__(self, a: Dataset, b: Dataset) -> None:
        self.a = a
        self.b = b

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        j = int(torch.randint(len(self.b), ()))
        return self.a[index % len(self.a)], self.b[j]


def unpaired(
    path: str | Path,
    split: str = "train",
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
    value_range: ValueRange = (0.0, 1.0),
) -> Unpaired:
    """A CycleGAN dataset folder (``path``/trainA, trainB, testA, testB; each a flat folder of images).

    Items are ``(a, b)`` from ``split``A and ``split``B ("train" or "test"), drawn independently
    (see ``Unpaired``), each float32 (C, H, W) in ``value_range`` (CycleGAN's tanh generators
    expect (-1, 1)). ``channels`` and ``size`` apply to both domains (see ``ImageFiles``).
    Raises FileNotFoundError or ValueError naming the missing or bad folder or file.
    """
    if split not in ("train", "test"):
        raise ValueError(f'split must be "train" or "test", got {split!r}')
    root = _existing_dir(path)
    domains = []
    for side in "AB":
        folder = root / f"{split}{side}"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist (expected {split}A and {split}B in {root})")
        files = _images_in(folder)
        if not files:
            raise ValueError(f"no image files in {folder} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        domains.append(ImageFiles(files, None, channels, size, value_range))
    return Unpaired(*domains)
