"""deepfast.augment (DiffAugment): shapes, what each part does, gradients, seeded draws, bad policies."""

import pytest
import torch

from deepfast.augment import check_policy, colour_jitter, cutout, diff_augment, translate


def test_translate_shifts_each_image_by_at_most_r_pixels():
    torch.manual_seed(0)
    x = torch.zeros(64, 2, 16, 24)
    x[:, :, 8, 12] = 1.0  # one bright pixel, far from the border
    y = translate(x)  # r = 2 and 3
    assert y.shape == x.shape and torch.equal(y[:, 0], y[:, 1])
    where = y[:, 0].flatten(1).argmax(1)
    dy, dx = where // 24 - 8, where % 24 - 12
    assert (y.flatten(1).sum(1) == 2).all()  # moved, not lost
    assert dy.abs().max() <= 2 and dx.abs().max() <= 3 and len(set(zip(dy.tolist(), dx.tolist()))) > 10
    ramp = torch.arange(10.0).expand(1, 1, 10, 10)
    shifted = translate(ramp.repeat(32, 1, 1, 1))
    assert torch.isin(shifted, ramp).all()  # border pixels repeated, nothing new


def test_cutout_zeroes_one_square():
    torch.manual_seed(1)
    y = cutout(torch.ones(50, 3, 16, 16))
    zeros = (y[:, 0] == 0).flatten(1).sum(1)
    assert (zeros <= 64).all() and (zeros > 0).all() and (zeros == 64).any()  # 8x8, clipped at the border
    assert torch.equal(y[:, 0], y[:, 2])


def test_diff_augment_gradient_and_seed():
    x = torch.randn(4, 1, 32, 32, requires_grad=True)
    torch.manual_seed(3)
    a = diff_augment(x)
    torch.manual_seed(3)
    assert torch.equal(a, diff_augment(x))
    weight = torch.randn_like(a)
    (a * weight).sum().backward()
    assert x.grad.abs().sum() > 0 and x.grad.shape == x.shape
    assert torch.equal(diff_augment(x, ""), x)


def test_bad_policy_and_input():
    assert check_policy("cutout,translation") == ("cutout", "translation")
    for bad in ("color", "translation,zoom", None):
        with pytest.raises(ValueError, match="policy"):
            check_policy(bad)
    with pytest.raises(ValueError, match="x must be images"):
        diff_augment(torch.zeros(3, 8, 8))


def test_colour_jitter_shuffles_channels_then_scales_and_shifts_each():
    torch.manual_seed(4)
    x = torch.rand(300, 3, 5, 7, dtype=torch.float64) * 0.5 + 0.25  # inside (0, 1): the clamp never acts at 0.2
    y = colour_jitter(x, 0.2)
    assert y.shape == x.shape and y.dtype == x.dtype
    # each output channel is an affine map g * x_p + b of one input channel p, g in [0.8, 1.2], b in [-0.1, 0.1]
    sources = set()
    for i in range(0, 300, 7):
        for c in range(3):
            fits = []
            for p in range(3):
                design = torch.stack([x[i, p].flatten(), torch.ones(35, dtype=x.dtype)], 1)
                g, b = torch.linalg.lstsq(design, y[i, c].flatten().unsqueeze(1)).solution.flatten()
                if torch.allclose(design @ torch.stack([g, b]), y[i, c].flatten(), atol=1e-12):
                    fits.append((p, g.item(), b.item()))
            assert len(fits) == 1 and 0.8 <= fits[0][1] <= 1.2 and -0.1 <= fits[0][2] <= 0.1
            sources.add((c, fits[0][0]))
    assert len(sources) == 9  # every output channel drawn from every input channel in some image
    z = colour_jitter(torch.rand(64, 3, 4, 4) * 2 - 1, 1.0, (-1.0, 1.0))
    assert z.min() >= -1 and z.max() <= 1 and (z == 1).any()  # clamped to the value range
    assert torch.equal(colour_jitter(x, 0.0).sort(1).values, x.sort(1).values)  # strength 0: only the shuffle


def test_colour_jitter_bad_input():
    with pytest.raises(ValueError, match="strength"):
        colour_jitter(torch.zeros(2, 3, 4, 4), 1.5)
    with pytest.raises(ValueError, match="x must be images"):
        colour_jitter(torch.zeros(3, 4, 4))
