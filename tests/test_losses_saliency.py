"""deepfast.losses.SaliencyLoss: values and gradients against a float64 formula, schedule, ranges, errors."""

import pytest
import torch

from deepfast.losses import CycleConsistencyLoss, SaliencyLoss


def _reference(real, fake, k, tau_r, tau_f, w, lo=-1.0, hi=1.0):
    """The loss written out in float64: per pixel the channel mean, scaled to [0, 1], a logistic."""

    def mask(x, tau):
        u = (x.double().sum(1) / x.shape[1] - lo) / (hi - lo)
        return 1.0 / (1.0 + torch.exp(-k * (u - tau)))

    return w * (mask(real, tau_r) - mask(fake, tau_f)).abs().sum() / (real.shape[0] * real.shape[2] * real.shape[3])


def _images(seed, shape=(3, 3, 7, 5), dtype=torch.float32):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


@pytest.mark.parametrize("k, tau", [(100.0, 0.5), (5.0, (0.3, 0.6)), (20.0, 0.45)])
def test_value_and_gradients_match_float64_formula(k, tau):
    real, fake = _images(0).requires_grad_(), _images(1).requires_grad_()
    loss_fn = SaliencyLoss(k=k, tau=tau, weight=2.5)
    loss = loss_fn(real, fake)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    taus = (tau, tau) if isinstance(tau, float) else tau
    real64, fake64 = real.detach().double().requires_grad_(), fake.detach().double().requires_grad_()
    ref = _reference(real64, fake64, k, *taus, 2.5)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-7)
    g = torch.rand((), generator=torch.Generator().manual_seed(2)) + 0.5  # non-unit output gradient
    grads = torch.autograd.grad(loss, [real, fake], g)
    refs = torch.autograd.grad(ref, [real64, fake64], g.double())
    for got, want in zip(grads, refs):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-7)
        assert got.abs().sum() > 0


def test_gradcheck_float64():
    real, fake = _images(3, (2, 2, 3, 3), torch.float64), _images(4, (2, 2, 3, 3), torch.float64)
    loss_fn = SaliencyLoss(k=3.0, tau=(0.4, 0.55), weight=0.7)
    assert torch.autograd.gradcheck(loss_fn, (real.requires_grad_(), fake.requires_grad_()))


def test_identical_masks_give_zero_and_opposite_give_weight():
    x = _images(5)
    assert SaliencyLoss()(x, x).item() == 0.0
    bright, dark = torch.ones(2, 3, 4, 4), -torch.ones(2, 3, 4, 4)
    assert SaliencyLoss(k=100.0, weight=3.0)(bright, dark).item() == pytest.approx(3.0, rel=1e-6)
    # a translation that changes colours but keeps the foreground where it is costs little
    recoloured = x.clone()
    recoloured[:, 0], recoloured[:, 1] = x[:, 1], x[:, 0]
    assert SaliencyLoss()(x, recoloured).item() == pytest.approx(0.0, abs=1e-6)


def test_value_range_convention():
    x, y = _images(6), _images(7)
    minus_one_one = SaliencyLoss(k=10.0, tau=0.3)(x, y)
    zero_one = SaliencyLoss(k=10.0, tau=0.3, value_range=(0, 1))((x + 1) / 2, (y + 1) / 2)
    torch.testing.assert_close(minus_one_one, zero_one)
    # tau is relative: 0.3 of [-1, 1] is the absolute threshold -0.4
    loss = SaliencyLoss(k=10.0, tau=0.3)
    torch.testing.assert_close(loss.mask(torch.full((1, 3, 1, 1), -0.4), 0.3), torch.full((1, 1, 1), 0.5))


def test_weight_schedule_linear_decay():
    x, y = _images(8), _images(9)
    loss_fn = SaliencyLoss(weight=2.0, decay_epochs=4)
    full = loss_fn(x, y)
    assert [loss_fn.weight_at(e) for e in range(6)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0]
    loss_fn.set_epoch(1)
    assert loss_fn.current_weight == 1.5
    torch.testing.assert_close(loss_fn(x, y), full * 0.75)
    loss_fn.set_epoch(10)
    assert loss_fn(x, y).item() == 0.0
    constant = SaliencyLoss(weight=2.0)
    constant.set_epoch(100)
    torch.testing.assert_close(constant(x, y), full)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must"):
        SaliencyLoss(k=0.0)
    with pytest.raises(ValueError, match="tau"):
        SaliencyLoss(tau=(0.1, 0.2, 0.3))
    with pytest.raises(TypeError, match="tau"):
        SaliencyLoss(tau="0.5")
    with pytest.raises(ValueError, match="weight"):
        SaliencyLoss(weight=-1.0)
    with pytest.raises(ValueError, match="decay_epochs"):
        SaliencyLoss(decay_epochs=0)
    with pytest.raises(ValueError, match="value_range"):
        SaliencyLoss(value_range=(1, -1))
    with pytest.raises(ValueError, match="epoch"):
        SaliencyLoss().set_epoch(-1)
    x = _images(0)
    with pytest.raises(ValueError, match="real and translated"):
        SaliencyLoss()(x, x[:1])
    with pytest.raises(TypeError, match="translated"):
        SaliencyLoss()(x, x.long())


def test_exported_beside_cycle_loss():
    import deepfast.losses

    assert {"CycleConsistencyLoss", "SaliencyLoss"} <= set(deepfast.losses.__all__)
    assert CycleConsistencyLoss is deepfast.losses.CycleConsistencyLoss
