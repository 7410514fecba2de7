"""Virtual staining domains from one bundled image: immunohistochemistry (IHC, haematoxylin + DAB) as
domain A, and the same tissue re-stained to an H&E-like appearance by colour deconvolution as domain
B, so that held-out A patches have a known B ground truth."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from deepfast.data._common import ValueRange, check_value_range, to_range
from deepfast.data.folders import Unpaired

# Re-staining: haematoxylin scaled by HEMATOXYLIN_GAIN, eosin = EOSIN_FROM_DAB * DAB + EOSIN_FROM_H * H.
HEMATOXYLIN_GAIN = 1.5
EOSIN_FROM_DAB = 0.35
EOSIN_FROM_H = 0.5

# The 512x512 image is cut into 4x4 blocks of BLOCK px; block (i, j) (row, column) belongs to the
# region REGIONS[(i + 2 j) % 3]: each region gets blocks spread over the whole image (6, 5, 5).
BLOCK = 128
REGIONS = ("train_a", "train_b", "test")

# Tissue: pixels of the IHC image whose mean over R, G, B (in [0, 1]) is below TISSUE_LEVEL (stained
# glands and nuclei; the pale stroma and the empty background are above it).
TISSUE_LEVEL = 0.6


def ihc_to_he(rgb: Tensor) -> Tensor:
    """Re-stains IHC images to an H&E-like look, pixel by pixel: rgb (..., 3, H, W) in [0, 1] ->
    float32 of that shape in [0, 1].

    Colour deconvolution (``skimage.color.rgb2hed``, Ruifrok & Johnston's stain matrix) gives
    haematoxylin H, eosin and DAB D concentrations; recombined with ``hed2rgb`` as
    (1.5 H, 0.35 D + 0.5 H, 0): haematoxylin stays (darker) nuclear blue-purple, the brown DAB
    becomes eosin pink, and an eosin counterstain follows the tissue; unstained white stays white."""
    from skimage.color import hed2rgb, rgb2hed

    if not isinstance(rgb, Tensor) or not rgb.dtype.is_floating_point:
        raise TypeError(f"rgb must be a floating-point tensor, got {type(rgb).__name__}")
    if rgb.dim() < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must be (..., 3, H, W), got shape {tuple(rgb.shape)}")
    pixels = rgb.detach().cpu().double().clamp(0.0, 1.0).movedim(-3, -1).numpy()
    hed = rgb2hed(pixels)
    he = hed.copy()
    he[..., 0] = HEMATOXYLIN_GAIN * hed[..., 0]
    he[..., 1] = EOSIN_FROM_DAB * hed[..., 2] + EOSIN_FROM_H * hed[..., 0]
    he[..., 2] = 0.0
    out = torch.from_numpy(hed2rgb(he)).movedim(-1, -3).float().clamp_(0.0, 1.0)
    return out.to(rgb.device)


def region_positions(region: str, patch_size: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of every patch_size patch of ``region`` ("train_a", "train_b", "test"): within each
    of the region's blocks, on a grid of ``stride``; no patch crosses a block's border."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(map(repr, REGIONS))}, got {region!r}")
    if not (isinstance(patch_size, int) and 0 < patch_size <= BLOCK):
        raise ValueError(f"patch_size must be an int in 1..{BLOCK}, got {patch_size!r}")
    if not (isinstance(stride, int) and stride > 0):
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    offsets = range(0, BLOCK - patch_size + 1, stride)
    return [
        (i * BLOCK + dy, j * BLOCK + dx)
        for i in range(4)
        for j in range(4)
        if REGIONS[(i + 2 * j) % 3] == region
        for dy in offsets
        for dx in offsets
    ]


def tissue_fraction(rgb: Tensor) -> Tensor:
    """Share of tissue pixels (mean over channels < TISSUE_LEVEL) of images rgb (..., 3, H, W) in [0, 1]:
    a tensor of shape (...)."""
    return (rgb.mean(-3) < TISSUE_LEVEL).float().mean((-2, -1))


def select_tissue(
    image: Tensor, positions: list[tuple[int, int]], patch_size: int, tissue: tuple[float, float] | None
) -> list[tuple[int, int]]:
    """The positions whose patch of ``image`` (3, H, W) in [0, 1] has a tissue fraction in
    [lo, hi] = ``tissue`` (all of them for None); ValueError when none is left."""
    if tissue is None:
        return positions
    if not (isinstance(tissue, (tuple, list)) and len(tissue) == 2 and 0.0 <= tissue[0] <= tissue[1] <= 1.0):
        raise ValueError(f"a tissue range must be a pair (lo, hi) with 0 <= lo <= hi <= 1, got {tissue!r}")
    p = patch_size
    kept = [
        (top, left)
        for top, left in positions
        if tissue[0] <= float(tissue_fraction(image[:, top : top + p, left : left + p])) <= tissue[1]
    ]
    if not kept:
        raise ValueError(f"no {p}x{p} patch has a tissue fraction in {tuple(tissue)}")
    return kept


class Crops(Dataset):
    """Patches of one image (C, H, W) in [0, 1] at the given (top, left) positions; each item is
    float32 (C, patch_size, patch_size) in ``value_range``."""

    def __init__(
        self, image: Tensor, positions: list[tuple[int, int]], patch_size: int, value_range: ValueRange
    ) -> None:
        self.image = image
        self.positions = positions
        self.patch_size = patch_size
        self.value_range = check_value_range(value_range)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> Tensor:
        top, left = self.positions[index]
        p = self.patch_size
        return to_range(self.image[:, top : top + p, left : left + p].clone(), self.value_range)


class Paired(Dataset):
    """Two datasets of one length, item i = (a[i], b[i])."""

    def __init__(self, a: Dataset, b: Dataset) -> None:
        if len(a) != len(b):
            raise ValueError(f"a and b must have one length, got {len(a)} and {len(b)}")
        self.a = a
        self.b = b

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.a[index], self.b[index]


def stain_domains(
    split: str = "train",
    patch_size: int = 64,
    stride: int | None = None,
    value_range: ValueRange = (0.0, 1.0),
    tissue_a: tuple[float, float] | None = None,
    tissue_b: tuple[float, float] | None = None,
) -> Unpaired | Paired:
    """IHC -> H&E virtual staining data from scikit-image's immunohistochemistry image (512x512).

    Domain A: patches of the IHC image. Domain B: patches of ``ihc_to_he`` of it (H&E-like). The image
    is split into three disjoint sets of 128x128 blocks (see ``region_positions``):

    - ``split="train"``: an unpaired dataset (``Unpaired``): items (a, b), a from the A-train blocks,
      b drawn at random (torch's global generator) from the re-stained B-train blocks, so no a has
      its own b in training;
    - ``split="test"``: a paired dataset (``Paired``): items (a, b_truth) from the held-out test
      blocks, b_truth = ihc_to_he(a) exactly.

    Items are float32 (3, patch_size, patch_size) in ``value_range`` (use (-1, 1) for CycleGAN).
    ``patch_size`` <= 128; ``stride`` defaults to patch_size // 4 for "train" (overlapping patches: a
    discriminator that sees only a few dozen distinct patches learns them by heart, and its generator
    then paints noise) and to patch_size for "test": 150 / 125 training A / B patches and 20 test
    patches at 64.

    ``tissue_a`` / ``tissue_b`` = (lo, hi) keep only the A (and test) / B patches whose tissue fraction
    (``tissue_fraction`` of the IHC patch) is in [lo, hi]: domains whose tissue / background
    proportions differ, where an unconstrained translation is pushed to add or remove tissue (the
    setting of UTOM's saliency constraint, Li et al. 2021). ``stain_domains_skewed`` is one.
    """
    from skimage.data import immunohistochemistry

    if split not in ("train", "test"):
        raise ValueError(f'split must be "train" or "test", got {split!r}')
    if stride is None:
        stride = max(1, patch_size // 4) if split == "train" and isinstance(patch_size, int) else patch_size
    value_range = check_value_range(value_range)
    ihc = torch.as_tensor(immunohistochemistry()).permute(2, 0, 1).float().div_(255.0).contiguous()
    he = ihc_to_he(ihc)
    if split == "train":
        a_at = select_tissue(ihc, region_positions("train_a", patch_size, stride), patch_size, tissue_a)
        b_at = select_tissue(ihc, region_positions("train_b", patch_size, stride), patch_size, tissue_b)
        return Unpaired(Crops(ihc, a_at, patch_size, value_range), Crops(he, b_at, patch_size, value_range))
    positions = select_tissue(ihc, region_positions("test", patch_size, stride), patch_size, tissue_a)
    return Paired(Crops(ihc, positions, patch_size, value_range), Crops(he, positions, patch_size, value_range))


# The skewed domains: A (and test) patches mostly tissue, B patches mostly background.
SKEWED_TISSUE_A = (0.5, 1.0)
SKEWED_TISSUE_B = (0.0, 0.25)


def stain_domains_skewed(
    split: str = "train",
    patch_size: int = 64,
    stride: int | None = None,
    value_range: ValueRange = (0.0, 1.0),
) -> Unpaired | Paired:
    """``stain_domains`` whose domains differ in tissue proportion: A and the test patches with a tissue
    fraction >= 0.5, B patches with <= 0.25 (SKEWED_TISSUE_A / _B). An unconstrained CycleGAN learns
    to turn tissue into background here; the saliency constraint keeps it (UTOM's point)."""
    return stain_domains(split, patch_size, stride, value_range, SKEWED_TISSUE_A, SKEWED_TISSUE_B)
