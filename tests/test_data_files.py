"""Folder datasets on awkward files: each loads correctly or is refused with a ValueError naming the file.

Loaded: 1x1 images, unicode and spaces in folder and file names (also through --data folder:PATH).
Refused naming the file: a truncated PNG (at construction when its header is cut, else when read), a
non-image named .png, a folder mixing grayscale, RGB and RGBA (channels differ), an image past PIL's
decompression-bomb limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfast.data import image_folder
from deepfast.train.data import load_split

Image = pytest.importorskip("PIL.Image")  # (Pillow: optional for importing deepfast)


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode).save(path)
    return path


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3))


def test_one_pixel_images_load(tmp_path):
    save(tmp_path / "a.png", [[[10, 20, 30]]])
    save(tmp_path / "b.png", [[[255, 0, 128]]])
    data = image_folder(tmp_path)
    assert data[0].shape == (3, 1, 1) and torch.equal(data[1].flatten(), torch.tensor([255, 0, 128]) / 255.0)
    resized = image_folder(tmp_path, size=8)
    assert resized[0].shape == (3, 8, 8) and torch.allclose(resized[0], resized[0][:, :1, :1].expand(3, 8, 8))


def test_unicode_and_spaces_in_paths_load(tmp_path):
    folder = tmp_path / "données d'été" / "图像 集"
    for i, name in enumerate(["chat 1.png", "Ünïcødé ✓.png", "  spaces  .png"]):
        save(folder / "classe A" / name, rgb(4, 5, i))
    save(folder / "класс B" / "x y.png", rgb(4, 5, 9))
    data = image_folder(folder)
    assert data.classes == ["classe A", "класс B"] and len(data) == 4
    x, y = data[3]
    assert x.shape == (3, 4, 5) and int(y) == 1
    split = load_split(f"folder:{folder}", True, (0.0, 1.0), 8)
    assert len(split) >= 1 and split[0][0].shape == (3, 8, 8)


def test_truncated_png_is_refused_naming_it(tmp_path):
    good = save(tmp_path / "body" / "a.png", rgb(64, 64))
    cut = tmp_path / "body" / "b.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # header whole, pixels cut
    data = image_folder(tmp_path / "body")
    assert data[0].shape == (3, 64, 64)
    with pytest.raises(ValueError, match=r"cannot read image .*body/b.png"):
        data[1]
    head = tmp_path / "head"
    save(head / "a.png", rgb(8, 8))
    (head / "b.png").write_bytes(good.read_bytes()[:20])  # the header itself cut
    with pytest.raises(ValueError, match=r"cannot read image .*head/b.png"):
        image_folder(head)


def test_non_image_named_png_is_refused_naming_it(tmp_path):
    save(tmp_path / "a.png", rgb(4, 4))
    (tmp_path / "notes.png").write_text("not an image\n")
    with pytest.raises(ValueError, match=r"cannot read image .*notes.png"):
        image_folder(tmp_path)


def test_mixed_gray_rgb_rgba_is_refused_naming_the_file(tmp_path):
    save(tmp_path / "a_rgb.png", rgb(4, 4))
    save(tmp_path / "b_gray.png", rgb(4, 4)[..., 0])
    save(tmp_path / "c_rgba.png", np.concatenate([rgb(4, 4), np.full((4, 4, 1), 255)], axis=2), "RGBA")
    with pytest.raises(ValueError, match=r"image .*b_gray.png has 1 channel\(s\), expected 3"):
        image_folder(tmp_path)
    (tmp_path / "b_gray.png").unlink()
    with pytest.raises(ValueError, match=r"image .*c_rgba.png has 4 channel\(s\), expected 3"):
        image_folder(tmp_path)
    with pytest.raises(ValueError, match=r"image .*a_rgb.png has 3 channel\(s\), expected 4"):
        image_folder(tmp_path, channels=4)


def test_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch):
    save(tmp_path / "big.png", rgb(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 * 100: PIL's DecompressionBombError
    with pytest.raises(ValueError, match=r"cannot read image .*big.png: Image size \(1600 pixels\) exceeds limit"):
        image_folder(tmp_path)
