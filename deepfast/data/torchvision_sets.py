"""MNIST and CIFAR-10 through torchvision, which is optional: without it these raise ImportError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepfast.data._common import ImageTensors, ValueRange


def _torchvision_datasets():
    try:
        from torchvision import datasets
    except Exception as err:  # noqa: BLE001 - a torchvision built for another torch fails with other errors
        raise ImportError(
            "this dataset needs the package torchvision (matching your torch; pip install torchvision),"
            f" which did not import: {err}"
        ) from err
    return datasets


def mnist(
    root: str | Path,
    train: bool = True,
    download: bool = False,
    value_range: ValueRange = (0.0, 1.0),
) -> ImageTensors:
    """torchvision's MNIST under ``root``: items ``(image, label)``, image float32 (1, 28, 28) in
    ``value_range``, label a 0-dim int64 tensor in 0..9; 60000 train or 10000 test images.
    Needs torchvision (ImportError naming it otherwise); ``download=True`` fetches the files."""
    ds = _torchvision_datasets().MNIST(str(root), train=train, download=download)
    return ImageTensors(ds.data.unsqueeze(1), ds.targets, value_range, classes=[str(d) for d in range(10)])


def cifar10(
    root: str | Path,
    train: bool = True,
    download: bool = False,
    value_range: ValueRange = (0.0, 1.0),
) -> ImageTensors:
    """torchvision's CIFAR-10 under ``root``: items ``(image, label)``, image float32 (3, 32, 32)
    in ``value_range``, label a 0-dim int64 tensor in 0..9 (``dataset.classes`` names them);
    50000 train or 10000 test images. Needs torchvision (ImportError naming it otherwise)."""
    ds = _torchvision_datasets().CIFAR10(str(root), train=train, download=download)
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # uint8 (N, 3, 32, 32)
    return ImageTensors(images, torch.as_tensor(ds.targets), value_range, classes=list(ds.classes))
