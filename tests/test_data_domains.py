"""deepfast.data: the virtual staining domains (stain_domains, ihc_to_he) and digits_m."""

import pytest
import torch

from deepfast import data
from deepfast.data import stain


@pytest.fixture(scope="module")
def digits_m_train():
    return data.digits_m("train", size=32)


# --- stain_domains ------------------------------------------------------------------------------


def test_stain_train_is_unpaired_from_disjoint_regions():
    train = data.stain_domains("train", patch_size=64)
    assert isinstance(train, data.Unpaired)
    assert (len(train.a), len(train.b), len(train)) == (150, 125, 150)  # 5 x 5 patches (stride 16) a block
    a, b = train[0]
    for x in (a, b):
        assert x.dtype == torch.float32 and x.shape == (3, 64, 64) and 0 <= x.min() and x.max() <= 1
    test = data.stain_domains("test", patch_size=64)
    pixels = []  # the sets of image pixels each part covers
    for positions in (train.a.positions, train.b.positions, test.a.positions):
        covered = torch.zeros(512, 512, dtype=torch.bool)
        for top, left in positions:
            covered[top : top + 64, left : left + 64] = True
        pixels.append(covered)
    assert not (pixels[0] & pixels[1]).any() and not (pixels[0] & pixels[2]).any() and not (pixels[1] & pixels[2]).any()
    assert (pixels[0] | pixels[1] | pixels[2]).all()  # with stride = patch size, the whole image is used
    for region, covered in zip(stain.REGIONS, pixels):  # block (i, j) of 128 px is in region (i + 2 j) mod 3
        blocks = {(i, j) for i in range(4) for j in range(4) if covered[i * 128, j * 128]}
        assert blocks == {(i, j) for i in range(4) for j in range(4) if stain.REGIONS[(i + 2 * j) % 3] == region}


def test_stain_domains_look_different_and_a_is_the_ihc_image():
    train = data.stain_domains("train", patch_size=32, stride=32)
    ihc = data.ihc(patch_size=32)  # the same image on a 16x16 grid of patches
    top, left = train.a.positions[5]
    torch.testing.assert_close(train.a[5], ihc[(top // 32) * 16 + left // 32])
    a = torch.stack([train.a[i] for i in range(len(train.a))])
    b = torch.stack([train.b[i] for i in range(len(train.b))])
    # DAB brown (red > blue) in IHC; eosin pink/purple (blue >= red on average) after re-staining
    assert a[:, 0].mean() > a[:, 2].mean()
    assert b[:, 2].mean() > b[:, 0].mean() - 0.02 and b[:, 1].mean() < b[:, 0].mean()


def test_stain_test_pairs_are_ground_truth():
    test = data.stain_domains("test", patch_size=48, stride=40, value_range=(-1, 1))
    assert isinstance(test, data.Paired) and len(test) == 5 * 9  # 3x3 patches (offsets 0, 40, 80) in each of 5 blocks
    for i in (0, 7, len(test) - 1):
        a, b = test[i]
        assert a.shape == b.shape == (3, 48, 48) and a.min() >= -1 and b.max() <= 1
        truth = data.ihc_to_he((a + 1) / 2) * 2 - 1
        torch.testing.assert_close(b, truth, atol=1e-6, rtol=0)


def test_ihc_to_he_is_pixelwise_and_keeps_shape():
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    out = data.ihc_to_he(x)
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(data.ihc_to_he(x[1, :, 2:4, 3:]), out[1, :, 2:4, 3:])
    torch.testing.assert_close(data.ihc_to_he(torch.ones(3, 1, 1)), torch.ones(3, 1, 1))  # no stain stays white
    with pytest.raises(ValueError, match="rgb"):
        data.ihc_to_he(torch.rand(4, 5, 5))
    with pytest.raises(TypeError, match="rgb"):
        data.ihc_to_he(torch.zeros(3, 2, 2, dtype=torch.uint8))


def test_stain_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        data.stain_domains("val")
    with pytest.raises(ValueError, match="patch_size"):
        data.stain_domains(patch_size=129)
    with pytest.raises(ValueError, match="stride"):
        data.stain_domains(stride=0)
    with pytest.raises(ValueError, match="value_range"):
        data.stain_domains(value_range=(0, 0))
    with pytest.raises(ValueError, match="region"):
        stain.region_positions("val", 32, 32)


def test_tissue_fraction_and_skewed_domains():
    x = torch.ones(2, 3, 4, 4)
    x[0, :, :2] = 0.2  # half dark
    torch.testing.assert_close(data.tissue_fraction(x), torch.tensor([0.5, 0.0]))
    train = data.stain_domains_skewed("train", patch_size=32)
    fa = data.tissue_fraction(torch.stack([train.a[i] for i in range(len(train.a))]))
    lo_a, hi_a = stain.SKEWED_TISSUE_A
    assert len(train.a) > 50 and (fa >= lo_a).all()
    # B patches are chosen on the IHC image at the same places (the re-staining changes the darkness)
    ihc = train.a.image
    fb = torch.stack(
        [data.tissue_fraction(ihc[:, top : top + 32, left : left + 32]) for top, left in train.b.positions]
    )
    assert len(train.b) > 20 and (fb <= stain.SKEWED_TISSUE_B[1]).all()
    test = data.stain_domains_skewed("test", patch_size=32)
    assert (data.tissue_fraction(torch.stack([test[i][0] for i in range(len(test))])) >= lo_a).all()
    full = data.stain_domains("test", patch_size=32)
    assert 0 < len(test) < len(full)
    assert data.DATASETS["stain_skewed"] is data.stain_domains_skewed
    with pytest.raises(ValueError, match="tissue"):
        data.stain_domains("train", patch_size=32, tissue_a=(0.6, 0.4))
    with pytest.raises(ValueError, match="no 32x32 patch"):
        data.stain_domains("train", patch_size=32, tissue_b=(0.3, 0.3001))


# --- digits_m -----------------------------------------------------------------------------------


def test_digits_m_shapes_labels_and_blend(digits_m_train):
    ds = digits_m_train
    base = data.digits("train", size=32)
    assert len(ds) == len(base) == 1438
    x, y = ds[3]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(ds.labels, base.labels) and y.dtype == torch.int64
    # coloured: the channels differ
    assert (ds.images[:, 0] - ds.images[:, 1]).abs().mean() > 0.02


def test_digits_m_blend_on_known_backgrounds(monkeypatch):
    """With one uniform source picture the background t is known: x = |t - d| per channel; a gray
    source is tinted by a colour in [0.2, 1]^3, the same over the patch."""
    from deepfast.data import textured as module

    base = data.digits("val", size=16)
    d = base.images  # (N, 1, 16, 16)
    colour = torch.tensor([0.2, 0.5, 0.8]).view(3, 1, 1)
    monkeypatch.setattr(module, "_sources", lambda size: [(colour.expand(3, 70, 90).clone(), False)])
    torch.testing.assert_close(data.digits_m("val", size=16).images, (colour - d).abs())
    monkeypatch.setattr(module, "_sources", lambda size: [(torch.ones(1, 64, 64), True)])
    x = data.digits_m("val", size=16).images
    tint = x[:, :, 0, 0] + d[:, :, 0, 0]  # the corners are blank (d = 0 there up to rounding)
    assert ((tint > 0.2 - 1e-3) & (tint < 1 + 1e-3)).all() and tint.std(0).min() > 0.1
    torch.testing.assert_close(x, (tint.view(-1, 3, 1, 1) - d).abs(), atol=1e-3, rtol=0)


def test_digits_m_deterministic_seeded_and_value_range(digits_m_train):
    again = data.digits_m("val", size=32)
    assert torch.equal(again.images, data.digits_m("val", size=32).images)
    other = data.digits_m("val", size=32, seed=1)
    assert not torch.equal(other.images, again.images)
    x, _ = data.digits_m("val", size=16, value_range=(-1, 1))[0]
    x01, _ = data.digits_m("val", size=16)[0]
    torch.testing.assert_close(x, x01 * 2 - 1)
    # backgrounds differ between digits: not one texture for all
    assert (digits_m_train.images[:50].std(0).mean()) > 0.1


def test_digits_m_bad_arguments_and_registry():
    with pytest.raises(ValueError, match="split"):
        data.digits_m("test")
    with pytest.raises(ValueError, match="size"):
        data.digits_m(size=0)
    with pytest.raises(ValueError, match="value_range"):
        data.digits_m(value_range=(2, 1))
    assert data.DATASETS["digits_m"] is data.digits_m and data.DATASETS["stain"] is data.stain_domains
    assert len(data.get_dataset("stain", split="test", patch_size=128)) == 5
