"""deepfast.ops.reparameterize_kl: every backend against the float64 reference, and its contract."""

import pytest
import torch

import deepfast
from conftest import TOLERANCE, assert_compiles_fullgraph, compiled_op_pairs
from deepfast import backends
from deepfast.ops.reparameterize_kl import REDUCTIONS, reparameterize_kl, reparameterize_kl_reference

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(37, 53), (5,), (3, 7, 11, 13), (1, 1)]


def make_inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g)
    logvar = 1.5 * torch.randn(shape, generator=g)
    eps = torch.randn(shape, generator=g)
    return (t.to(device=device, dtype=dtype) for t in (mu, logvar, eps))


def skip_unsupported(backend, device, dtype):
    if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("bfloat16 is wrong in the Triton interpreter; tested on a GPU")


def run(backend, mu, logvar, eps, reduction, grad_z, grad_kl):
    """Forward with the given backend, then backward with grad_z, grad_kl; returns z, kl, dmu, dlogvar."""
    mu, logvar = mu.detach().requires_grad_(), logvar.detach().requires_grad_()
    with deepfast.use_backend(backend):
        z, kl = reparameterize_kl(mu, logvar, eps, reduction=reduction)
    dmu, dlogvar = torch.autograd.grad((z, kl), (mu, logvar), (grad_z, grad_kl))
    return z, kl, dmu, dlogvar


def assert_matches_reference(backend, mu, logvar, eps, reduction, seed=1):
    """Compare a backend with the float64 reference on the same inputs, forward and backward."""
    g = torch.Generator().manual_seed(seed)
    grad_z = torch.randn(mu.shape, generator=g).to(mu)
    grad_kl = (torch.randn(mu.shape if reduction == "none" else (), generator=g) + 2.0).to(mu)
    got = run(backend, mu, logvar, eps, reduction, grad_z, grad_kl)
    want = run("torch", *(t.double() for t in (mu, logvar, eps)), reduction, grad_z.double(), grad_kl.double())
    rtol, atol = TOLERANCE[mu.dtype]
    for name, a, b in zip(("z", "kl", "grad_mu", "grad_logvar"), got, want):
        assert a.dtype == mu.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(backend_device, shape, dtype, reduction, poison):
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    assert_matches_reference(backend, *make_inputs(shape, dtype, device), reduction)


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_non_contiguous_inputs(backend_device, reduction, poison):
    backend, device = backend_device
    mu, logvar, eps = make_inputs((23, 2 * 19), torch.float32, device)
    assert_matches_reference(backend, mu[:, ::2], logvar.t().contiguous().t()[:, 1::2], eps[:, :19], reduction)
    assert_matches_reference(backend, mu.t(), logvar.t(), eps.t(), reduction)


def test_large_input_many_blocks(backend_device, poison):
    """More elements than one partial sum holds, and not a multiple of any block size."""
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("the interpreter is too slow for this size")
    assert_matches_reference(backend, *make_inputs((313, 1031), torch.float32, device), "batchmean")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_tensors(backend_device, reduction, poison):
    backend, device = backend_device
    mu, logvar, eps = make_inputs((0, 7), torch.float32, device)
    z, kl, dmu, dlogvar = run(
        backend,
        mu,
        logvar,
        eps,
        reduction,
        torch.zeros_like(mu),
        torch.ones_like(mu) if reduction == "none" else torch.ones((), device=device),
    )
    assert z.shape == dmu.shape == dlogvar.shape == (0, 7)
    want = reparameterize_kl_reference(mu, logvar, eps, reduction)[1]
    torch.testing.assert_close(kl, want, equal_nan=True)  # sum: 0; mean and batchmean: NaN, like torch


def test_extreme_logvar_matches_reference(backend_device, poison):
    """exp over its whole float32 range: tiny, huge (overflow to inf, as torch.exp in float32), inf and NaN."""
    backend, device = backend_device
    logvar = torch.cat([torch.linspace(-200, 200, 4001), torch.tensor([float("inf"), -float("inf"), float("nan")])])
    mu, eps = torch.zeros_like(logvar), torch.ones_like(logvar)
    with deepfast.use_backend(backend):
        z, kl = reparameterize_kl(*(t.to(device) for t in (mu, logvar, eps)), reduction="none")
    want_z, want_kl = reparameterize_kl_reference(mu, logvar, eps, "none")
    tiny = torch.finfo(torch.float32).tiny  # the C++ exp flushes results below FLT_MIN to 0
    torch.testing.assert_close(z.cpu(), want_z, rtol=1e-6, atol=tiny, equal_nan=True)
    torch.testing.assert_close(kl.cpu(), want_kl, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_reduced_kl_is_deterministic(backend_device):
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("the interpreter is too slow for this size")
    mu, logvar, eps = make_inputs((100_003,), torch.float32, device)
    threads = torch.get_num_threads()
    with deepfast.use_backend(backend):
        first = reparameterize_kl(mu, logvar, eps, reduction="sum")[1]
        torch.set_num_threads(1)
        try:
            again = [reparameterize_kl(mu, logvar, eps, reduction="sum")[1] for _ in range(3)]
        finally:
            torch.set_num_threads(threads)
    assert all(torch.equal(first, kl) for kl in again)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(backend_device, reduction):
    backend, device = backend_device
    mu, logvar, eps = make_inputs((3, 5), torch.float64, device)
    mu.requires_grad_(), logvar.requires_grad_()
    with deepfast.use_backend(backend):
        assert torch.autograd.gradcheck(lambda m, v: reparameterize_kl(m, v, eps, reduction=reduction), (mu, logvar))


OP_PAIRS = compiled_op_pairs("reparameterize_kl")


@pytest.mark.parametrize("name,forward,backward", OP_PAIRS, ids=[pair[0] for pair in OP_PAIRS])
@pytest.mark.parametrize("reduce", [True, False])
def test_opcheck(name, forward, backward, reduce):
    device = "cuda" if torch.cuda.is_available() and name != "cpp" else "cpu"
    mu, logvar, eps = make_inputs((4, 6), torch.float32, device)
    mu.requires_grad_(), logvar.requires_grad_()
    torch.library.opcheck(forward, (mu, logvar, eps, reduce, 0.25))
    grad_kl = torch.randn((), device=device) if reduce else torch.randn_like(mu)
    torch.library.opcheck(backward, (torch.randn_like(mu), grad_kl, mu.detach(), logvar.detach(), eps, 0.25))


def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device
    mu, logvar, eps = make_inputs((9, 13), torch.float32, device)

    def loss(mu, logvar):
        z, kl = reparameterize_kl(mu, logvar, eps)
        return (z * z).sum() + 3.0 * kl

    assert_compiles_fullgraph(loss, (mu, logvar), backend, "reparameterize_kl")


def test_noise_reproducible_with_seed_and_generator(backend_device):
    backend, device = backend_device
    mu, logvar, _ = make_inputs((6, 4), torch.float32, device)
    with deepfast.use_backend(backend):
        torch.manual_seed(3)
        a = reparameterize_kl(mu, logvar)[0]
        torch.manual_seed(3)
        b = reparameterize_kl(mu, logvar)[0]
        c = reparameterize_kl(mu, logvar, generator=torch.Generator(device).manual_seed(5))[0]
        d = reparameterize_kl(mu, logvar, generator=torch.Generator(device).manual_seed(5))[0]
    assert torch.equal(a, b) and torch.equal(c, d)
    assert not torch.equal(a, c) and not torch.equal(a, mu)


def test_kl_of_standard_normal_is_zero():
    z, kl = reparameterize_kl(torch.zeros(8, 3), torch.zeros(8, 3), torch.ones(8, 3))
    assert torch.equal(z, torch.ones(8, 3)) and kl.item() == 0.0


@pytest.mark.cuda
def test_64bit_indexing_cuda():
    """More than 2^31 elements: the elements past 2^31 are computed and the kl sum sees them."""
    n = 2**31 + 77
    mu = torch.zeros(n, dtype=torch.float16, device="cuda")
    logvar, eps = torch.zeros_like(mu), torch.zeros_like(mu)
    mu[-5:], eps[-5:], logvar[-5:] = 1.0, 2.0, 2.0
    for backend in ("cuda", "triton"):
        if not backends.status()[backend].available:
            continue
        with deepfast.use_backend(backend):
            z, kl = reparameterize_kl(mu, logvar, eps, reduction="sum")
        s = torch.tensor(1.0).exp()  # exp(logvar / 2)
        assert torch.allclose(z[-5:].float().cpu(), 1.0 + 2.0 * s.expand(5), rtol=1e-3)
        assert z[: 2**31].abs().max().item() == 0.0
        kl_tail = -0.5 * (1 + 2.0 - 1.0 - s**2) * 5
        assert abs(kl.item() - kl_tail.item()) < 1e-2 * abs(kl_tail.item())
        del z, kl


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(mu=torch.zeros(3, dtype=torch.int64)), TypeError, "mu must be a floating-point"),
        (dict(mu=[0.0, 1.0]), TypeError, "mu must be a torch.Tensor"),
        (dict(logvar=torch.zeros(4)), ValueError, "logvar must have the shape of mu"),
        (dict(logvar=torch.zeros(3, dtype=torch.float64)), TypeError, "logvar must have the dtype of mu"),
        (dict(logvar=torch.zeros(3, device="meta")), ValueError, "logvar must be on the device of mu"),
        (dict(eps=torch.zeros(2)), ValueError, "eps must have the shape of mu"),
        (dict(eps=torch.zeros(3, requires_grad=True)), ValueError, "eps must not require grad"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, words):
    args = dict(mu=torch.zeros(3), logvar=torch.zeros(3), eps=None, reduction="sum") | kwargs
    with pytest.raises(error, match=words):
        reparameterize_kl(args.pop("mu"), args.pop("logvar"), args.pop("eps"), **args)


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
def test_compiled_op_checks_its_arguments():
    a = torch.zeros(3)
    with pytest.raises(RuntimeError, match="logvar must have the shape of mu"):
        torch.ops.deepfast.reparameterize_kl(a, torch.zeros(4), a, True, 1.0)
    with pytest.raises(RuntimeError, match="mu must be a floating-point"):
        torch.ops.deepfast.reparameterize_kl(a.long(), a.long(), a.long(), True, 1.0)
    with pytest.raises(RuntimeError, match="grad_kl must have the shape of mu"):
        torch.ops.deepfast.reparameterize_kl_backward(a, torch.zeros(2), a, a, a, 1.0)
