"""Datasets: offline ones bundled with scikit-learn / scikit-image, folders of images, and
torchvision's MNIST and CIFAR-10 when torchvision is installed.

Every dataset yields float32 images (C, H, W), by default in [0, 1], or in [lo, hi] with
``value_range=(lo, hi)``; labels, where there are any, are 0-dim int64 tensors. Which range:

- [0, 1] (the default): autoencoders and VAEs with a sigmoid output and a BCE or MSE
  reconstruction loss, and classifiers under attack or defended (PGD clamps to the box [0, 1]).
- [-1, 1]: GANs whose generator ends in tanh (DCGAN, CycleGAN).

``get_dataset(name, **kw)`` builds one by name, for the command line.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset

from deepfast.data._common import ImageTensors, ValueRange, resize
from deepfast.data.bundled import Patches, digits, ihc
from deepfast.data.folders import ImageFiles, Unpaired, image_folder, read_image, unpaired
from deepfast.data.stain import Crops, Paired, ihc_to_he, stain_domains, stain_domains_skewed, tissue_fraction
from deepfast.data.textured import digits_m
from deepfast.data.torchvision_sets import cifar10, mnist

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "digits_m": digits_m,
    "ihc": ihc,
    "stain": stain_domains,
    "stain_skewed": stain_domains_skewed,
    "mnist": mnist,
    "cifar10": cifar10,
}
PATH_DATASETS: dict[str, Callable[..., Dataset]] = {"folder": image_folder, "unpaired": unpaired}


def dataset_function(name: str) -> tuple[Callable[..., Dataset], tuple[str, ...]]:
    """The function that builds dataset ``name`` and the positional arguments its name carries:
    "digits" -> (digits, ()), "folder:PATH" -> (image_folder, (PATH,)). ValueError for an unknown name."""
    prefix, sep, path = name.partition(":")
    if sep and prefix in PATH_DATASETS:
        if not path:
            raise ValueError(f"{name!r} names no path: write {prefix}:PATH")
        return PATH_DATASETS[prefix], (path,)
    if not sep and name in DATASETS:
        return DATASETS[name], ()
    known = ", ".join([*DATASETS, *(f"{p}:PATH" for p in PATH_DATASETS)])
    raise ValueError(f"unknown dataset {name!r}; known: {known}")


def get_dataset(name: str, **kw) -> Dataset:
    """Builds a dataset by name: "digits", "digits_m", "ihc", "stain" (``stain_domains``), "stain_skewed"
    (``stain_domains_skewed``), "mnist",
    "cifar10" (these two need ``root=``), "folder:PATH" (``image_folder(PATH)``) or "unpaired:PATH"
    (``unpaired(PATH)``); ``kw`` go to that function. Raises ValueError for an unknown name."""
    fn, args = dataset_function(name)
    return fn(*args, **kw)


__all__ = [
    "DATASETS",
    "Crops",
    "ImageFiles",
    "ImageTensors",
    "PATH_DATASETS",
    "Paired",
    "Patches",
    "Unpaired",
    "ValueRange",
    "cifar10",
    "dataset_function",
    "digits",
    "digits_m",
    "get_dataset",
    "ihc",
    "ihc_to_he",
    "image_folder",
    "mnist",
    "read_image",
    "resize",
    "stain_domains",
    "stain_domains_skewed",
    "tissue_fraction",
    "unpaired",
]
