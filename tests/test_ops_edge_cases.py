"""Edge cases a probe found in the ops (empty inputs, overlapping memory, mixed dtypes, huge and
degenerate values, amounts beyond float32), each on every backend: a result that matches the float64
reference, or an error that names the argument."""

import pytest
import torch
import torch.nn.functional as F

import deepfast
from deepfast import backends
from deepfast.nn import BatchNormLeakyReLU2d
from deepfast.ops import batch_norm_leaky_relu, cycle_l1, instance_norm_leaky_relu, pgd_step, pgd_step_


@pytest.mark.parametrize("shape", [(2, 3, 0, 4), (0, 3, 4, 4), (2, 0, 4, 4)], ids=["S=0", "N=0", "C=0"])
def test_empty_norm_inputs(backend_device, shape):
    """An empty x gives an empty y (train and eval, batch and instance) and leaves the running statistics
    alone, as torch; S = 0 used to write N * C values into the empty output (a heap overflow)."""
    backend, device = backend_device
    c = shape[1]
    with deepfast.use_backend(backend):
        layer = BatchNormLeakyReLU2d(c).to(device)
        for training in (True, False):
            x = torch.rand(shape, device=device, requires_grad=True)
            y = layer.train(training)(x)
            assert y.shape == x.shape
            y.sum().backward()
            assert x.grad.shape == x.shape
        assert torch.equal(layer.running_mean, torch.zeros(c, device=device))
        assert instance_norm_leaky_relu(torch.rand(shape, device=device)).shape == shape


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_op_on_an_empty_plane(channels_last):
    """The dispatcher op itself (what a custom caller reaches) with S = 0: empty outputs, no write."""
    x = torch.rand(2, 3, 0, 4)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y, mean, var = torch.ops.deepfast.norm_leaky_relu(
        x, None, None, torch.zeros(3), torch.ones(3), False, 1e-5, 0.2, False
    )
    assert y.shape == x.shape and torch.equal(mean, torch.zeros(3))
    y, mean, var = torch.ops.deepfast.norm_leaky_relu(x, None, None, None, None, True, 1e-5, 0.2, False)
    assert y.shape == x.shape and mean.isnan().all()  # the mean of no value


def test_norm_parameters_of_another_dtype(backend_device):
    """A float64 input to a float32 layer (and the reverse): every backend computes in the input's dtype,
    as the cpp backend always did, and gives weight gradients in the weight's dtype."""
    backend, device = backend_device
    torch.manual_seed(0)
    for x_dtype, p_dtype in ((torch.float64, torch.float32), (torch.float32, torch.float64)):
        x = torch.randn(4, 3, 5, 5, device=device, dtype=x_dtype, requires_grad=True)
        w = torch.randn(3, device=device, dtype=p_dtype, requires_grad=True)
        rm, rv = torch.zeros(3, device=device, dtype=p_dtype), torch.ones(3, device=device, dtype=p_dtype)
        with deepfast.use_backend(backend):
            y = batch_norm_leaky_relu(x, w, None, rm, rv, training=True)
        assert y.dtype == x_dtype
        grad_w = torch.autograd.grad(y.sum(), w)[0]
        want = F.leaky_relu(F.batch_norm(x.detach().double(), None, None, w.detach().double(), None, True), 0.2)
        torch.testing.assert_close(y.double(), want, rtol=2e-5, atol=2e-5)
        assert grad_w.dtype == p_dtype and rm.dtype == p_dtype and rm.abs().sum() > 0


def test_constant_channel_is_exactly_the_bias(backend_device):
    """A channel of one repeated value normalises to 0 exactly, so y = leaky(bias) to the last bit (torch's
    own batch norm leaves a residue of ~|w| ulp(x) / sqrt(eps) there); with bias 0, the activation's
    branch is that of z = 0, the same in every backend."""
    backend, device = backend_device
    x = torch.randn(4, 3, 5, 5, device=device)
    x[:, 1] = 972.4949
    w, b = torch.tensor([1.0, 0.6, 1.0], device=device), torch.tensor([0.0, 0.645, 0.0], device=device)
    with deepfast.use_backend(backend):
        y = batch_norm_leaky_relu(x, w, b, None, None, training=True)
    if backend != "torch":
        assert torch.equal(y[:, 1], torch.full_like(y[:, 1], 0.645))


def test_huge_values_keep_their_statistics():
    """float32 values of 1e19 .. 2e19 (squares beyond float32): the cpp backend sums in float64 and
    matches the float64 reference; torch's float32 batch norm gives the same here."""
    x = torch.full((2, 1, 2, 2), 1e19)
    x[0, 0, 0, 0] = 2e19
    want = F.batch_norm(x.double(), None, None, training=True)
    with deepfast.use_backend("cpp"):
        got = batch_norm_leaky_relu(x, None, None, None, None, training=True, negative_slope=1.0)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_pgd_step_refuses_partial_overlap(backend_device):
    """pgd_step_ writes x_adv while it reads grad and x_orig: a grad that is x_adv shifted by one element
    (the cpp backend used to give a silently wrong step) or an expanded x_adv is refused, naming them; the
    very same tensor is fine."""
    backend, device = backend_device
    b = torch.randn(5, 8, device=device)
    x0 = torch.rand(4, 8, device=device)
    with deepfast.use_backend(backend):
        with pytest.raises(ValueError, match="grad overlaps x_adv"):
            pgd_step_(b[1:], b[:4], x0, step_size=0.1, eps=0.3)
        with pytest.raises(ValueError, match="x_orig overlaps x_adv"):
            pgd_step_(b[:4], torch.randn(4, 8, device=device), b[1:], step_size=0.1, eps=0.3)
        with pytest.raises(ValueError, match="x_adv has elements that share memory"):
            pgd_step_(x0[:1].expand(4, 8), torch.randn(4, 8, device=device), x0, step_size=0.1, eps=0.3)
        x = x0 + 0.01
        want = pgd_step(x, x, x0, step_size=0.1, eps=0.3)
        torch.testing.assert_close(pgd_step_(x, x, x0, step_size=0.1, eps=0.3), want)


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
def test_compiled_pgd_op_refuses_partial_overlap():
    b = torch.randn(5, 8)
    step = torch.full((4,), 0.1)
    with pytest.raises(RuntimeError, match="unsupported operation"):
        torch.ops.deepfast.pgd_step_(b[1:], b[:4], torch.rand(4, 8), step, step, "inf", 0.0, 1.0)


def test_amounts_beyond_float32(backend_device):
    """step_size = 1e300 for float32 images is refused naming it (it was torch's 'cannot be converted to
    float'); a cycle weight of 1e300 gives an infinite float32 loss, as torch's l1_loss * 1e300 does."""
    backend, device = backend_device
    x, g = torch.rand(2, 3, device=device), torch.randn(2, 3, device=device)
    with deepfast.use_backend(backend):
        with pytest.raises(ValueError, match="step_size must be at most 3.40282e\\+38"):
            pgd_step(x, g, x, step_size=1e300, eps=0.1)
        with pytest.raises(ValueError, match="eps must be at most"):
            pgd_step(x, g, x, step_size=0.1, eps=torch.full((2,), 1e300, dtype=torch.float64, device=device))
        assert pgd_step(x.double(), g.double(), x.double(), step_size=1e300, eps=0.1).isfinite().all()
        loss = cycle_l1(x, torch.zeros_like(x), weight=1e300)
    assert loss.dtype == torch.float32 and loss.isinf()
