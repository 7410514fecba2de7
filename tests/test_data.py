"""deepfast.data: the offline datasets, folders of images, and the errors for bad input."""

import sys

import numpy as np
import pytest
import torch

from deepfast import data

Image = pytest.importorskip("PIL.Image")  # (Pillow: optional for importing deepfast)


def _check_images(x, channels, hw, value_range=(0.0, 1.0)):
    assert x.dtype == torch.float32
    assert tuple(x.shape) == (channels, *hw)
    assert value_range[0] <= x.min() and x.max() <= value_range[1]


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _gray(value, hw=(6, 5)):
    return np.full(hw, value, dtype=np.uint8)


def _rgb(value, hw=(6, 5)):
    return np.full((*hw, 3), value, dtype=np.uint8)


# --- digits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32])
def test_digits_shapes_dtypes_labels(size):
    train = data.digits("train", size=size)
    x, y = train[0]
    _check_images(x, 1, (size, size))
    assert y.dtype == torch.int64 and y.dim() == 0
    assert sorted(train.labels.unique().tolist()) == list(range(10))
    assert train.images.min() >= 0 and train.images.max() <= 1 and train.images.max() > 0.9


def test_digits_split_sizes_disjoint_and_deterministic():
    train, val, everything = data.digits("train", size=8), data.digits("val", size=8), data.digits("all", size=8)
    assert (len(train), len(val), len(everything)) == (1438, 359, 1797)
    assert torch.equal(data.digits("val", size=8).images, val.images)  # same seed, same split
    assert not torch.equal(data.digits("val", size=8, seed=1).images, val.images)
    # the two parts together are the whole set, each digit once
    keys = lambda ds: sorted(map(tuple, ds.images.flatten(1).tolist()))  # noqa: E731
    assert sorted(keys(train) + keys(val)) == keys(everything)


def test_digits_value_range_minus_one_one():
    x, _ = data.digits("val", size=16, value_range=(-1, 1))[3]
    x01, _ = data.digits("val", size=16)[3]
    assert torch.allclose(x, x01 * 2 - 1)
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.99


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        data.digits("test")
    with pytest.raises(ValueError, match="value_range"):
        data.digits(value_range=(1, 0))
    with pytest.raises(ValueError, match="size"):
        data.digits(size=0)


# --- ihc ------------------------------------------------------------------------------------


def test_ihc_patch_count_and_shape():
    ds = data.ihc()
    assert len(ds) == 256
    _check_images(ds[0], 3, (32, 32))
    _check_images(ds[-1], 3, (32, 32))
    overlapping = data.ihc(patch_size=64, stride=32, value_range=(-1, 1))
    assert len(overlapping) == ((512 - 64) // 32 + 1) ** 2
    _check_images(overlapping[5], 3, (64, 64), (-1, 1))
    # patch 1 of the overlapping grid starts at column 32: its left half is patch 1 of the 32 grid
    assert torch.allclose((overlapping[1][:, :32, :32] + 1) / 2, ds[1])
    with pytest.raises(IndexError):
        ds[256]
    with pytest.raises(ValueError, match="patch_size"):
        data.ihc(patch_size=513)
    with pytest.raises(ValueError, match="stride"):
        data.ihc(stride=0)


# --- image_folder ---------------------------------------------------------------------------


def test_image_folder_flat_grayscale(tmp_path):
    for i in range(3):
        _write(tmp_path / f"{i}.png", _gray(i * 100))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = data.image_folder(tmp_path)
    assert len(ds) == 3 and ds.channels == 1 and ds.classes is None
    x = ds[2]
    _check_images(x, 1, (6, 5))
    assert torch.allclose(x, torch.full_like(x, 200 / 255))


def test_image_folder_class_subfolders_rgb(tmp_path):
    for cls, value in [("cat", 10), ("dog", 250)]:
        for i in range(2):
            _write(tmp_path / cls / f"{i}.png", _rgb(value))
    ds = data.image_folder(tmp_path, channels=3, value_range=(-1, 1))
    assert ds.classes == ["cat", "dog"] and len(ds) == 4
    x, y = ds[3]
    _check_images(x, 3, (6, 5), (-1, 1))
    assert y.dtype == torch.int64 and y.item() == 1
    assert [ds[i][1].item() for i in range(4)] == [0, 0, 1, 1]
    assert torch.allclose(x, torch.full_like(x, 250 / 255 * 2 - 1))


def test_image_folder_resizes_to_size(tmp_path):
    _write(tmp_path / "a.png", _rgb(50, (6, 5)))
    _write(tmp_path / "b.png", _rgb(90, (9, 12)))
    with pytest.raises(ValueError, match="b.png.*size="):
        data.image_folder(tmp_path)
    ds = data.image_folder(tmp_path, size=8)
    _check_images(ds[0], 3, (8, 8))
    _check_images(ds[1], 3, (8, 8))


def test_image_folder_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="missing"):
        data.image_folder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files in .*empty"):
        data.image_folder(empty)
    broken = tmp_path / "broken"
    _write(broken / "good.png", _gray(1))
    (broken / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot read image .*bad.png"):
        data.image_folder(broken)
    mixed = tmp_path / "mixed"
    _write(mixed / "a.png", _gray(1))
    _write(mixed / "b.png", _rgb(1))
    with pytest.raises(ValueError, match="b.png has 3 channel"):
        data.image_folder(mixed)
    with pytest.raises(ValueError, match="a.png has 1 channel.*expected 3"):
        data.image_folder(mixed, channels=3)
    both = tmp_path / "both"
    _write(both / "loose.png", _gray(1))
    _write(both / "cls" / "a.png", _gray(1))
    with pytest.raises(ValueError, match="both images"):
        data.image_folder(both)


def test_image_read_error_on_access_names_the_path(tmp_path):
    path = _write(tmp_path / "a.png", _rgb(7, (16, 16)))
    ds = data.image_folder(tmp_path)
    path.write_bytes(path.read_bytes()[:60])  # truncated after the header was checked
    with pytest.raises(ValueError, match="a.png"):
        ds[0]


def test_read_image_modes(tmp_path):
    sixteen = _write(tmp_path / "16bit.png", np.array([[0, 65535]], dtype=np.uint16))
    assert torch.equal(data.read_image(sixteen), torch.tensor([[[0.0, 1.0]]]))
    palette = tmp_path / "palette.png"
    Image.fromarray(_rgb(51)).convert("P").save(palette)
    x = data.read_image(palette)
    assert x.shape == (3, 6, 5) and torch.allclose(x, torch.full_like(x, 0.2))
    rgba = _write(tmp_path / "rgba.png", np.full((2, 3, 4), 255, dtype=np.uint8))
    assert torch.equal(data.read_image(rgba), torch.ones(4, 2, 3))
    with pytest.raises(ValueError, match="channels must be"):
        data.image_folder(tmp_path, channels=5)


# --- unpaired -------------------------------------------------------------------------------


def _cyclegan_folder(root):
    for i in range(3):
        _write(root / "trainA" / f"a{i}.png", _rgb(10 * i))
    for i in range(5):
        _write(root / "trainB" / f"b{i}.png", _gray(200 + i))
    _write(root / "testA" / "a.png", _rgb(1))
    _write(root / "testB" / "b.png", _gray(1))
    return root


def test_unpaired_pairs(tmp_path):
    ds = data.unpaired(_cyclegan_folder(tmp_path), value_range=(-1, 1))
    assert len(ds) == 5 and len(ds.a) == 3 and len(ds.b) == 5
    torch.manual_seed(0)
    pairs = [ds[i] for i in range(len(ds))]
    for a, b in pairs:
        _check_images(a, 3, (6, 5), (-1, 1))
        _check_images(b, 1, (6, 5), (-1, 1))
    assert torch.equal(pairs[3][0], pairs[0][0])  # A cycles
    torch.manual_seed(0)
    assert all(torch.equal(b, ds[i][1]) for i, (_, b) in enumerate(pairs))  # B from torch's generator
    test = data.unpaired(tmp_path, split="test")
    assert len(test) == 1
    _check_images(test[0][0], 3, (6, 5))


def test_unpaired_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.unpaired(tmp_path / "nowhere")
    _write(tmp_path / "trainA" / "a.png", _rgb(1))
    with pytest.raises(FileNotFoundError, match="trainB"):
        data.unpaired(tmp_path)
    (tmp_path / "trainB").mkdir()
    with pytest.raises(ValueError, match="no image files in .*trainB"):
        data.unpaired(tmp_path)
    _write(tmp_path / "trainB" / "b.png", _rgb(1))
    with pytest.raises(ValueError, match="a.png has 3 channel.*expected 1"):
        data.unpaired(tmp_path, channels=1)
    with pytest.raises(ValueError, match="split"):
        data.unpaired(tmp_path, split="val")


# --- torchvision and the registry -----------------------------------------------------------


@pytest.mark.parametrize("make", [data.mnist, data.cifar10])
def test_torchvision_missing_is_a_clear_error(make, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision now fails
    with pytest.raises(ImportError, match="torchvision"):
        make(tmp_path)


def test_get_dataset(tmp_path):
    assert len(data.get_dataset("digits", split="val", size=16)) == 359
    assert len(data.get_dataset("ihc", patch_size=128)) == 16
    _write(tmp_path / "imgs" / "x.png", _gray(3))
    assert len(data.get_dataset(f"folder:{tmp_path / 'imgs'}")) == 1
    assert len(data.get_dataset(f"unpaired:{_cyclegan_folder(tmp_path / 'cg')}")) == 5
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*digits"):
        data.get_dataset("nope")
    with pytest.raises(ValueError, match="names no path"):
        data.get_dataset("folder:")
