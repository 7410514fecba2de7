"""Non-finite inputs: every backend of every op gives what the float64 reference gives, NaN where it has
NaN and the same infinities (compiled tl.minimum / tl.maximum drop NaN where torch keeps it)."""

import pytest
import torch

import deepfast
from conftest import TOLERANCE
from deepfast.ops import batch_norm_leaky_relu, instance_norm_leaky_relu, pgd_step, pgd_step_reference

NAN, INF = float("nan"), float("inf")


def assert_same(got, want, name="", dtype=torch.float32):
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("clamp", [(0.0, 1.0), None], ids=["box", "no-box"])
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_pgd_step(backend_device, norm, clamp, poison):
    """A NaN in x_adv, grad or x_orig and an infinite gradient, each in a sample of its own."""
    backend, device = backend_device
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 2, 3, 5, generator=g)
    x, grad = (x0 + 0.01 * torch.randn(x0.shape, generator=g)).clamp(0, 1), torch.randn(x0.shape, generator=g)
    x[0, 1, 2, 3] = NAN
    grad[1, 0, 0, 1] = NAN
    grad[2, 1, 1, 1] = INF
    grad[3, 0, 2, 4] = -INF
    x0[4, 1, 0, 0] = NAN
    step, eps = (0.05, 0.1) if norm == "inf" else (0.5, 1.0)
    want = pgd_step_reference(x.double(), grad.double(), x0.double(), step, eps, norm=norm, clamp=clamp)
    assert want[:5].isnan().any() and not want[5].isnan().any()
    with deepfast.use_backend(backend):
        got = pgd_step(*(t.to(device) for t in (x, grad, x0)), step_size=step, eps=eps, norm=norm, clamp=clamp)
    assert_same(got.cpu(), want)


@pytest.mark.parametrize("mode", ["batch-train", "batch-eval", "instance"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_norm_leaky_relu(backend_device, mode, channels_last, poison):
    """A NaN, a +inf, and a -inf beside a +inf, each in a channel (and a sample) of its own; forward, and
    backward to x, weight and bias."""
    backend, device = backend_device
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 4, 3, generator=g)
    x[0, 0, 1, 2] = NAN
    x[1, 1, 0, 0] = INF
    x[2, 2, 3, 1], x[2, 2, 0, 2] = -INF, INF
    w, b = torch.randn(5, generator=g), torch.randn(5, generator=g)
    rm, rv = torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.5
    grad_y = torch.randn(x.shape, generator=g)

    def run(x, w, b, rm, rv, grad_y, backend):
        x, w, b = (t.detach().requires_grad_() for t in (x, w, b))
        with deepfast.use_backend(backend):
            if mode == "instance":
                y = instance_norm_leaky_relu(x, w, b)
            else:
                y = batch_norm_leaky_relu(x, w, b, rm.clone(), rv.clone(), training=mode == "batch-train")
        return (y, *torch.autograd.grad(y, (x, w, b), grad_y))

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    want = run(*(t.double() for t in (x, w, b, rm, rv, grad_y)), "torch")
    assert want[0].isnan().any() and want[0].isinf().any() == (mode == "batch-eval")
    got = run(x.to(device, memory_format=fmt), *(t.to(device) for t in (w, b, rm, rv)), grad_y.to(device), backend)
    for name, a, e in zip(("y", "grad_x", "grad_weight", "grad_bias"), got, want):
        assert_same(a.cpu(), e, name)
