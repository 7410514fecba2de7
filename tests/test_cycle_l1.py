"""deepfast.ops.cycle_l1: every backend against the float64 reference, and its contract."""

import pytest
import torch

import deepfast
from conftest import TOLERANCE, assert_compiles_fullgraph, compiled_namespaces
from deepfast import backends
from deepfast.ops import cycle_l1, cycle_l1_reference
from deepfast.ops.cycle_l1 import REDUCTIONS

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(3, 3, 7, 9), (1, 3, 5, 5), (2, 17), (5,)]
LAYOUTS = [((3, 3, 7, 9), "channels_last"), ((1, 3, 5, 5), "channels_last")] + [(s, "contiguous") for s in SHAPES]
BOTH = ("rec", "orig")


def make_inputs(shape, dtype, device, seed=0, channels_last=False):
    """rec, orig with some elements exactly equal (where the gradient is 0)."""
    g = torch.Generator().manual_seed(seed)
    rec = torch.randn(shape, generator=g)
    orig = torch.randn(shape, generator=g)
    orig.view(-1)[::4] = rec.view(-1)[::4]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return (t.to(device=device, dtype=dtype, memory_format=fmt) for t in (rec, orig))


def skip_unsupported(backend, device, dtype):
    if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("bfloat16 is wrong in the Triton interpreter; tested on a GPU")


def run(backend, rec, orig, grad, weight=2.5, reduction="mean", wrt=BOTH):
    """Forward with the given backend, then backward with ``grad``; returns (loss, grads of the inputs in wrt)."""
    rec = rec.detach().requires_grad_("rec" in wrt)
    orig = orig.detach().requires_grad_("orig" in wrt)
    with deepfast.use_backend(backend):
        loss = cycle_l1(rec, orig, weight=weight, reduction=reduction)
    return (loss, *torch.autograd.grad(loss, [t for t in (rec, orig) if t.requires_grad], grad))


def assert_matches_reference(backend, rec, orig, weight=2.5, reduction="mean", wrt=BOTH, seed=1):
    """A backend against the float64 reference on the same inputs, forward and backward (grad != 1)."""
    grad = (torch.rand((), generator=torch.Generator().manual_seed(seed)) + 0.5).to(rec)
    got = run(backend, rec, orig, grad, weight, reduction, wrt)
    want = run("torch", rec.double(), orig.double(), grad.double(), weight, reduction, wrt)
    rtol, atol = TOLERANCE[rec.dtype]
    assert got[0].dim() == 0
    for name, a, b in zip(("loss", *wrt), got, want, strict=True):
        assert a.dtype == rec.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,layout", LAYOUTS, ids=[f"{s}-{lay}" for s, lay in LAYOUTS])
def test_matches_float64_reference(backend_device, shape, layout, dtype, reduction, poison):
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    rec, orig = make_inputs(shape, dtype, device, channels_last=layout == "channels_last")
    assert_matches_reference(backend, rec, orig, reduction=reduction)


@pytest.mark.parametrize("wrt", [("rec",), ("orig",)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_of_one_input(backend_device, wrt, reduction, poison):
    """Only the input that requires grad gets one (CycleGAN: orig is real data)."""
    backend, device = backend_device
    assert_matches_reference(backend, *make_inputs((2, 3, 4, 5), torch.float32, device), -0.75, reduction, wrt)


@pytest.mark.parametrize("namespace", compiled_namespaces())
def test_backward_op_writes_only_what_the_mask_asks(namespace, poison):
    device = "cuda" if torch.cuda.is_available() and namespace == "deepfast_triton" else "cpu"
    rec, orig = make_inputs((3, 11), torch.float32, device)
    backward = getattr(torch.ops, namespace).cycle_l1_backward
    grad = torch.tensor(2.0, device=device)
    sign = torch.sign(rec - orig)
    assert backward(grad, rec, orig, 0.25, [False, False]) == (None, None)
    grad_rec, grad_orig = backward(grad, rec, orig, 0.25, [True, False])
    assert grad_orig is None and torch.equal(grad_rec, 0.5 * sign)
    grad_rec, grad_orig = backward(grad, rec, orig, 0.25, [False, True])
    assert grad_rec is None and torch.equal(grad_orig, -0.5 * sign)


def test_mixed_and_non_contiguous_layouts(backend_device, poison):
    backend, device = backend_device
    rec, orig = make_inputs((2, 3, 6, 10), torch.float32, device)
    rec_cl = rec.contiguous(memory_format=torch.channels_last)
    assert_matches_reference(backend, rec_cl, orig)  # one channels_last, one NCHW
    assert_matches_reference(backend, orig, rec_cl)
    assert_matches_reference(backend, rec[..., ::2], orig[..., 1::2])  # strided
    assert_matches_reference(backend, rec.transpose(1, 3), orig.transpose(1, 3))  # dense, permuted
    assert_matches_reference(backend, rec_cl[:, 1:], orig[:, :2])  # non-dense channels_last


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_gradient_keeps_the_layout_of_dense_rec(backend_device, memory_format):
    """Dense inputs are read as they lie in memory; grad_rec comes out in their layout, with no copy."""
    backend, device = backend_device
    if backend == "torch":
        pytest.skip("the reference returns the layout torch's l1_loss gives")
    rec, orig = make_inputs((2, 3, 4, 5), torch.float32, device)
    rec, orig = (t.contiguous(memory_format=memory_format).requires_grad_() for t in (rec, orig))
    with deepfast.use_backend(backend):
        grad_rec, grad_orig = torch.autograd.grad(cycle_l1(rec, orig), (rec, orig))
    assert grad_rec.stride() == grad_orig.stride() == rec.stride()


def test_large_input_many_blocks(backend_device, poison):
    """More elements than one partial sum holds, and not a multiple of any block size."""
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("the interpreter is too slow for this size")
    assert_matches_reference(backend, *make_inputs((313, 1031), torch.float32, device), reduction="sum")


def test_loss_is_deterministic(backend_device):
    """The same bits on every call and for any thread count, at a size with many partial sums."""
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("the interpreter is too slow for this size")
    rec, orig = make_inputs((3, 3, 197, 211), torch.float32, device)
    threads = torch.get_num_threads()
    with deepfast.use_backend(backend):
        first = cycle_l1(rec, orig, reduction="sum")
        torch.set_num_threads(1)
        try:
            again = [cycle_l1(rec, orig, reduction="sum") for _ in range(3)]
        finally:
            torch.set_num_threads(threads)
        again.append(cycle_l1(rec, orig, reduction="sum"))
    assert all(torch.equal(first, loss) for loss in again)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_tensors(backend_device, reduction, poison):
    """The mean of nothing is NaN and the sum 0, as in torch; the gradients are empty."""
    backend, device = backend_device
    rec, orig = make_inputs((0, 3), torch.float32, device)
    loss, grad_rec, grad_orig = run(backend, rec, orig, torch.ones((), device=device), reduction=reduction)
    torch.testing.assert_close(loss, cycle_l1_reference(rec, orig, 2.5, reduction), equal_nan=True)
    assert grad_rec.shape == grad_orig.shape == (0, 3)


@pytest.mark.parametrize("weight", [0.0, -3.0, 7])
def test_any_finite_weight(backend_device, weight, poison):
    backend, device = backend_device
    assert_matches_reference(backend, *make_inputs((4, 9), torch.float32, device), weight, "sum")


def test_nan_input_propagates_forward_and_gets_zero_gradient(backend_device):
    """As torch's l1_loss: NaN loss, sign(NaN) = 0 in backward."""
    backend, device = backend_device
    rec, orig = make_inputs((2, 7), torch.float32, device)
    rec[1, 3] = float("nan")
    assert_matches_reference(backend, rec, orig)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(backend_device, reduction):
    backend, device = backend_device
    rec, _ = make_inputs((3, 5), torch.float64, device)
    step = (0.1 + torch.rand(rec.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)).to(device)
    orig = rec + step * torch.sign(torch.randn_like(rec))  # |rec - orig| >= 0.1: away from the kink of |x|
    rec.requires_grad_(), orig.requires_grad_()
    with deepfast.use_backend(backend):
        assert torch.autograd.gradcheck(lambda r, o: cycle_l1(r, o, weight=1.5, reduction=reduction), (rec, orig))


@pytest.mark.parametrize("namespace", compiled_namespaces())
@pytest.mark.parametrize("mask", [[True, True], [True, False], [False, True]], ids=str)
def test_opcheck(namespace, mask):
    device = "cuda" if torch.cuda.is_available() and namespace == "deepfast_triton" else "cpu"
    ops = getattr(torch.ops, namespace)
    rec, orig = make_inputs((2, 3, 4, 5), torch.float32, device)
    rec, orig = rec.requires_grad_(mask[0]), orig.requires_grad_(mask[1])
    torch.library.opcheck(ops.cycle_l1, (rec, orig, 0.125))
    rec_cl = rec.detach().contiguous(memory_format=torch.channels_last)
    for r, o in ((rec.detach(), orig.detach()), (rec_cl, rec_cl * 0.5), (rec_cl, orig.detach())):
        torch.library.opcheck(ops.cycle_l1_backward, (torch.tensor(1.5, device=device), r, o, 0.125, mask))


def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device

    def loss(rec, orig):
        return cycle_l1(rec, orig, weight=10.0) + cycle_l1(rec * rec, orig, reduction="sum")

    inputs = tuple(make_inputs((2, 3, 5, 7), torch.float32, device))
    assert_compiles_fullgraph(loss, inputs, backend, "cycle_l1", grad_of=(0,))


@pytest.mark.cuda
def test_64bit_indexing_cuda():
    """More than 2^31 elements: the elements past 2^31 enter the sum and get their gradient."""
    n = 2**31 + 77
    rec = torch.zeros(n, dtype=torch.float16, device="cuda")
    orig = torch.zeros_like(rec)
    rec[-5:], orig[-3:] = 1.0, 3.0  # |diff| over the tail: 1, 1, 2, 2, 2
    for backend in ("cuda", "triton"):
        if not backends.status()[backend].available:
            continue
        r = rec.clone().requires_grad_()
        with deepfast.use_backend(backend):
            loss = cycle_l1(r, orig, weight=0.5, reduction="sum")
            (grad_rec,) = torch.autograd.grad(loss, r)
        assert loss.item() == 4.0
        assert grad_rec[-5:].tolist() == [0.5, 0.5, -0.5, -0.5, -0.5]
        assert grad_rec[: 2**31].abs().max().item() == 0.0
        del r, loss, grad_rec


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(rec=torch.zeros(3, dtype=torch.int64)), TypeError, "reconstructed must be a floating-point"),
        (dict(rec=[0.0, 1.0]), TypeError, "reconstructed must be a torch.Tensor"),
        (dict(orig=torch.zeros(4)), ValueError, "original must have the shape of reconstructed"),
        (dict(orig=torch.zeros(3, dtype=torch.float64)), TypeError, "original must have the dtype of reconstructed"),
        (dict(orig=torch.zeros(3, device="meta")), ValueError, "original must be on the device of reconstructed"),
        (dict(orig=torch.zeros(3, dtype=torch.int32)), TypeError, "original must be a floating-point"),
        (dict(reduction="none"), ValueError, "reduction must be one of 'mean', 'sum'"),
        (dict(weight=float("nan")), ValueError, "weight must be finite"),
        (dict(weight=float("inf")), ValueError, "weight must be finite"),
        (dict(weight=torch.tensor(1.0)), TypeError, "weight must be a Python float"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, words):
    args = dict(rec=torch.zeros(3), orig=torch.zeros(3)) | kwargs
    with pytest.raises(error, match=words):
        cycle_l1(args.pop("rec"), args.pop("orig"), **args)


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
def test_compiled_op_checks_its_arguments():
    a = torch.zeros(3)
    with pytest.raises(RuntimeError, match="orig must have the shape of rec"):
        torch.ops.deepfast.cycle_l1(a, torch.zeros(4), 1.0)
    with pytest.raises(RuntimeError, match="rec must be a floating-point"):
        torch.ops.deepfast.cycle_l1(a.long(), a.long(), 1.0)
    with pytest.raises(RuntimeError, match="grad must be a 0-dim tensor"):
        torch.ops.deepfast.cycle_l1_backward(a, a, a, 1.0, [True, True])
    with pytest.raises(RuntimeError, match="grad must have the dtype and device of rec"):
        torch.ops.deepfast.cycle_l1_backward(torch.tensor(1.0, dtype=torch.float64), a, a, 1.0, [True, True])
