"""deepfast.ops.batch_norm_leaky_relu / instance_norm_leaky_relu: every backend against the float64
reference (F.batch_norm / F.instance_norm + F.leaky_relu), and their contract."""

import pytest
import torch
import torch.nn.functional as F

import deepfast
from conftest import TOLERANCE, assert_compiles_fullgraph, compiled_op_pairs
from deepfast import backends
from deepfast.ops.norm_leaky_relu import batch_norm_leaky_relu, instance_norm_leaky_relu

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(3, 5, 7, 9), (4, 17, 5, 3), (2, 3, 1, 1), (6, 4), (2, 33, 10)]
MODES = ["batch-train", "batch-eval", "instance"]


def skip_unsupported(backend, device, dtype):
    if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("bfloat16 is wrong in the Triton interpreter; tested on a GPU")


def tolerance(dtype, inplace):
    """TOLERANCE of conftest; in-place mode recovers xhat from y rounded to the half type: 5x looser there
    (with |weight| >= 0.5: the error of xhat = (z - bias) / weight grows as 1 / |weight|)."""
    rtol, atol = TOLERANCE[dtype]
    return (5 * rtol, 5 * atol) if inplace and dtype in (torch.float16, torch.bfloat16) else (rtol, atol)


def make_inputs(shape, dtype, device, channels_last=False, affine=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = 2.0 * torch.randn(shape, generator=g) + torch.randn(c, *([1] * (len(shape) - 2)), generator=g)
    w = torch.randn(c, generator=g) if affine else None
    b = torch.randn(c, generator=g) if affine else None
    rm, rv = torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
    x = cast(x)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return x, cast(w), cast(b), rm.to(device=device, dtype=dtype), rv.to(device=device, dtype=dtype)


def run(backend, mode, x, w, b, rm, rv, grad_y, *, slope=0.2, inplace=False, steps=1):
    """Forward (``steps`` times: running stats), backward with grad_y; returns y, dx, dw, db, rm, rv."""
    x = x.detach().requires_grad_()
    params = [None if t is None else t.detach().requires_grad_() for t in (w, b)]
    rm, rv = rm.clone(), rv.clone()
    with deepfast.use_backend(backend):
        for _ in range(steps):
            if mode == "instance":
                y = instance_norm_leaky_relu(x, *params, negative_slope=slope, inplace=inplace)
            else:
                y = batch_norm_leaky_relu(
                    x,
                    *params,
                    rm,
                    rv,
                    training=mode == "batch-train",
                    momentum=0.3,
                    negative_slope=slope,
                    inplace=inplace,
                )
    wanted = [x] + [p for p in params if p is not None]
    grads = list(torch.autograd.grad(y, wanted, grad_y))
    dx = grads.pop(0)
    dw, db = (grads + [None, None])[:2]
    return y, dx, dw, db, rm, rv


def assert_matches_reference(backend, mode, x, w, b, rm, rv, *, slope=0.2, inplace=False, steps=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    grad_y = torch.randn(x.shape, generator=g).to(x)
    got = run(backend, mode, x, w, b, rm, rv, grad_y, slope=slope, inplace=inplace, steps=steps)
    d = lambda t: None if t is None else t.double()  # noqa: E731
    want = run("torch", mode, d(x), d(w), d(b), d(rm), d(rv), d(grad_y), slope=slope, inplace=inplace, steps=steps)
    rtol, atol = tolerance(x.dtype, inplace)
    for name, a, e in zip(("y", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var"), got, want):
        if e is None:
            assert a is None, name
            continue
        assert a.dtype == x.dtype and a.shape == e.shape, name
        torch.testing.assert_close(a.double(), e, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    if backend != "torch":  # torch's instance norm returns NCHW; the fused ops keep the memory format
        cl = torch.channels_last
        assert (
            got[0].is_contiguous(memory_format=cl)
            == got[1].is_contiguous(memory_format=cl)
            == x.is_contiguous(memory_format=cl)
        )


def valid(mode, shape, channels_last):
    if channels_last and len(shape) != 4:
        return False
    return not (mode == "instance" and (len(shape) < 3 or shape[2:].numel() <= 1))


CASES = [
    pytest.param(mode, shape, cl, id=f"{mode}-{'x'.join(map(str, shape))}{'-cl' if cl else ''}")
    for mode in MODES
    for shape in map(torch.Size, SHAPES)
    for cl in (False, True)
    if valid(mode, shape, cl)
]


@pytest.mark.parametrize("inplace", [False, True], ids=["normal", "inplace"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode,shape,channels_last", CASES)
def test_matches_float64_reference(backend_device, mode, shape, channels_last, dtype, inplace, poison):
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    x, w, b, rm, rv = make_inputs(shape, dtype, device, channels_last)
    if inplace and dtype in (torch.float16, torch.bfloat16):
        # xhat = (z - b) / w from z rounded to the half type: its error grows as 1 / |w|
        w = torch.where(w < 0, w - 0.5, w + 0.5)
    assert_matches_reference(backend, mode, x, w, b, rm, rv, inplace=inplace, steps=3 if mode == "batch-train" else 1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("slope", [0.0, 0.01, 1.5])
def test_relu_and_other_slopes_without_affine(backend_device, mode, slope, poison):
    backend, device = backend_device
    x, _, _, rm, rv = make_inputs((4, 6, 5, 5), torch.float32, device, affine=False)
    assert_matches_reference(backend, mode, x, None, None, rm, rv, slope=slope)


@pytest.mark.parametrize("mode", ["batch-train", "instance"])
def test_inplace_weight_negative_zero_tiny(backend_device, mode, poison):
    """In-place mode: xhat = (z - b) / w with w -> sign(w) max(|w|, 1e-5). Negative weights are exact;
    zero and tiny ones (|w| < 1e-5) act as +-1e-5; the others equal the standard layer."""
    backend, device = backend_device
    x, _, b, rm, rv = make_inputs((4, 6, 5, 5), torch.float64, device)
    w = torch.tensor([-1.5, -0.3, 0.0, 1e-7, -1e-7, 2.0], dtype=torch.float64, device=device)
    assert_matches_reference(backend, mode, x, w, b, rm, rv, inplace=True)
    grad_y = torch.randn_like(x)
    inplace = run(backend, mode, x, w, b, rm, rv, grad_y, inplace=True)
    standard = run("torch", mode, x, w, b, rm, rv, grad_y)
    ok = w.abs() >= 1e-5  # channels where the two modes agree
    for a, e in zip(inplace[:4], standard[:4]):
        a, e = (a[:, ok], e[:, ok]) if a.dim() > 1 else (a[ok], e[ok])
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)
    assert inplace[2][~ok].abs().sum() > 0  # a zero weight still gets a gradient (straight-through)
    clamped = w.clone()
    clamped[~ok] = torch.tensor([1e-5, 1e-5, -1e-5], dtype=torch.float64, device=device)
    torch.testing.assert_close(inplace[0], run("torch", mode, x, clamped, b, rm, rv, grad_y)[0], rtol=1e-9, atol=1e-9)


def test_non_contiguous_input(backend_device, poison):
    backend, device = backend_device
    x, w, b, rm, rv = make_inputs((4, 6, 8, 10), torch.float32, device)
    assert_matches_reference(backend, "batch-train", x[:, :, ::2, 1:], w, b, rm, rv)
    assert_matches_reference(backend, "instance", x.transpose(2, 3), w, b, rm, rv)


def test_large_input_many_chunks(backend_device, poison):
    """More values per group than one partial sum holds, not a multiple of any block size, and a mean of
    100 (50x the standard deviation): the statistics stay accurate to float32 rounding. Long rows (41x43
    maps) and many short ones (4x4 maps, which share the CPU kernel's partial sums across rows)."""
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("the interpreter is too slow for this size")
    if backend == "torch":
        pytest.skip("torch's own float32 batch norm is off by 6e-5 here: the kernels are what is tested")
    for shape in ((5, 7, 41, 43), (301, 3, 4, 4)):
        for cl in (False, True):
            x, w, b, rm, rv = make_inputs(shape, torch.float32, device, channels_last=cl)
            assert_matches_reference(backend, "batch-train", x + 100.0, w, b, rm, rv)


@pytest.mark.parametrize("mode", ["batch-train", "instance"])
def test_triton_chunks_segments_and_column_tiles(backend_device, mode, monkeypatch, poison):
    """Triton with 48 values per chunk: groups of many chunks, rows longer than a chunk (S = 77, cut into
    segments), and channels_last column tiles of a few rows; what large inputs get on a GPU."""
    backend, device = backend_device
    if backend != "triton":
        pytest.skip("the chunking of the Triton kernels")
    from deepfast.kernels import norm_leaky_relu as kernels

    monkeypatch.setattr(kernels, "CHUNK", 48)
    shapes = [((5, 3, 7, 11), False), ((3, 5, 6, 7), True)] + [((41, 3, 2, 2), False)] * (mode != "instance")
    for shape, cl in shapes:
        x, w, b, rm, rv = make_inputs(shape, torch.float64, device, channels_last=cl)
        assert kernels.Geometry(*deepfast.ops.norm_leaky_relu.layout(x, mode == "instance")[:4], x.dtype).chunks > 1
        for inplace in (False, True):
            assert_matches_reference(backend, mode, x, w, b, rm, rv, inplace=inplace)


def test_statistics_are_deterministic(backend_device):
    """Same bits for any thread count (fixed partial sums added in a fixed order)."""
    backend, device = backend_device
    if backend == "torch":
        pytest.skip("torch's own batch norm is not what is tested")
    if backend == "triton" and device == "cpu":
        pytest.skip("the interpreter is too slow for this size")
    threads = torch.get_num_threads()
    for cl in (False, True):
        x, w, b, rm, rv = make_inputs((8, 16, 40, 40), torch.float32, device, channels_last=cl)
        grad_y = torch.randn_like(x)
        first = run(backend, "batch-train", x, w, b, rm, rv, grad_y)
        torch.set_num_threads(1)
        try:
            again = run(backend, "batch-train", x, w, b, rm, rv, grad_y)
        finally:
            torch.set_num_threads(threads)
        assert all(torch.equal(p, q) for p, q in zip(first, again))


@pytest.mark.parametrize("inplace", [False, True], ids=["normal", "inplace"])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(backend_device, mode, inplace):
    backend, device = backend_device
    x, w, b, rm, rv = make_inputs((3, 4, 3, 2), torch.float64, device)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()

    def fn(x, w, b):
        if mode == "instance":
            return instance_norm_leaky_relu(x, w, b, inplace=inplace)
        return batch_norm_leaky_relu(x, w, b, rm.clone(), rv.clone(), training=mode == "batch-train", inplace=inplace)

    with deepfast.use_backend(backend):  # the Triton interpreter: fast mode (a random projection)
        assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=backend == "triton" and device == "cpu")


OP_PAIRS = compiled_op_pairs("norm_leaky_relu")


@pytest.mark.parametrize("name,forward,backward", OP_PAIRS, ids=[pair[0] for pair in OP_PAIRS])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_opcheck(name, forward, backward, mode, channels_last):
    device = "cuda" if torch.cuda.is_available() and name != "cpp" else "cpu"
    x, w, b, rm, rv = make_inputs((2, 3, 4, 5), torch.float32, device, channels_last)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    stats = (rm, rv) if mode == "batch-eval" else (None, None)
    instance = mode == "instance"
    for inplace in (False, True):
        torch.library.opcheck(forward, (x, w, b, *stats, instance, 1e-5, 0.2, inplace))
        y, mean, var = forward(x.detach(), w.detach(), b.detach(), *stats, instance, 1e-5, 0.2, inplace)
        saved = y if inplace else x.detach()
        args = (
            torch.randn_like(y),
            saved,
            w.detach(),
            b.detach(),
            mean,
            var,
            stats[0] is None,
            instance,
            1e-5,
            0.2,
            inplace,
        )
        torch.library.opcheck(backward, args)


@pytest.mark.parametrize("mode", ["batch-train", "instance"])
def test_torch_compile_fullgraph(backend_device, mode):
    backend, device = backend_device
    x, w, b, rm, rv = make_inputs((4, 6, 5, 5), torch.float32, device)

    def loss(x, w, b):
        if mode == "instance":
            y = instance_norm_leaky_relu(x, w, b, inplace=True)
        else:
            y = batch_norm_leaky_relu(x, w, b, rm, rv, training=True)
        return (y * y).sum()

    assert_compiles_fullgraph(loss, (x, w, b), backend, "norm_leaky_relu")


def test_matches_nn_modules_train_and_eval(backend_device):
    """Against nn.BatchNorm2d + nn.LeakyReLU and nn.InstanceNorm2d + nn.ReLU themselves, over several steps."""
    backend, device = backend_device
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(6).to(device)
    bn.weight.data.normal_(), bn.bias.data.normal_()
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    with deepfast.use_backend(backend):
        for training in (True, True, True, False):
            bn.train(training)
            x = torch.randn(4, 6, 5, 7, device=device)
            want = F.leaky_relu(bn(x), 0.2)
            got = batch_norm_leaky_relu(x, bn.weight, bn.bias, rm, rv, training=training)
            torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
            torch.testing.assert_close((rm, rv), (bn.running_mean, bn.running_var), rtol=2e-5, atol=2e-5)
        x = torch.randn(3, 6, 5, 7, device=device)
        inorm = torch.nn.InstanceNorm2d(6, affine=True).to(device)
        torch.testing.assert_close(
            instance_norm_leaky_relu(x, inorm.weight, inorm.bias, negative_slope=0.0),
            torch.relu(inorm(x)),
            rtol=2e-5,
            atol=2e-5,
        )


@pytest.mark.cuda
def test_64bit_indexing_cuda():
    """More than 2^31 elements: the last values are normalised with the statistics of their group."""
    x = torch.zeros(2**31 + 2 * 2**20, dtype=torch.float16, device="cuda").view(-1, 2, 2**20)
    x[-1, :, -3:] = 1.0
    for backend in ("cuda", "triton"):
        if not backends.status()[backend].available:
            continue
        with deepfast.use_backend(backend):
            y = instance_norm_leaky_relu(x, negative_slope=0.0)
        assert y[-1, :, -3:].float().min().item() > 100
        assert y[0].abs().max().item() == 0.0
        del y


@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_more_channels_than_a_grid_axis_holds_cuda(channels_last):
    """C = 70000 > 65535 (the limit of grid axes 1 and 2): every backend matches the reference."""
    x, w, b, rm, rv = make_inputs((2, 70000, 2, 2), torch.float32, "cuda", channels_last=channels_last)
    for backend in ("cuda", "triton"):
        if backends.status()[backend].available:
            assert_matches_reference(backend, "batch-train", x, w, b, rm, rv)


@pytest.mark.cuda
def test_tensors_on_another_device_than_the_current_one_cuda():
    """Tensors on cuda:1 while cuda:0 is current: the kernels run on cuda:1 (Triton launches on the current
    device unless the wrapper moves there)."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    x, w, b, rm, rv = make_inputs((4, 6, 5, 5), torch.float32, "cuda:1")
    torch.cuda.set_device(0)
    for backend in ("cuda", "triton"):
        if backends.status()[backend].available:
            assert_matches_reference(backend, "batch-train", x, w, b, rm, rv)
            assert_matches_reference(backend, "instance", x, w, b, rm, rv)


# --- bad input -------------------------------------------------------------------------------------

C = 3


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(x=torch.zeros(2, C, 4, dtype=torch.int64)), TypeError, "x must be a floating-point"),
        (dict(x=torch.zeros(5)), ValueError, "x must have shape"),
        (dict(weight=torch.ones(C + 1)), ValueError, "weight must have shape"),
        (dict(bias=torch.ones(C, 1)), ValueError, "bias must have shape"),
        (dict(running_mean=torch.ones(C + 1)), ValueError, "running_mean must have shape"),
        (dict(running_var=torch.ones(2)), ValueError, "running_var must have shape"),
        (dict(running_var=None, training=False), ValueError, "running_mean and running_var are needed"),
        (dict(negative_slope=-0.1), ValueError, "negative_slope must be >= 0"),
        (dict(negative_slope=0.0, inplace=True), ValueError, "inplace=True needs negative_slope > 0"),
        (dict(x=torch.zeros(1, C, 1, 1)), ValueError, "more than 1 value per channel"),
        (dict(weight=torch.ones(C, device="meta")), ValueError, "weight must be on the device of x"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, words):
    args = (
        dict(
            x=torch.zeros(2, C, 4),
            weight=torch.ones(C),
            bias=torch.zeros(C),
            running_mean=torch.zeros(C),
            running_var=torch.ones(C),
            training=True,
        )
        | kwargs
    )
    with pytest.raises(error, match=words):
        batch_norm_leaky_relu(
            args.pop("x"),
            args.pop("weight"),
            args.pop("bias"),
            args.pop("running_mean"),
            args.pop("running_var"),
            **args,
        )


def test_instance_norm_bad_input():
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        instance_norm_leaky_relu(torch.zeros(2, 3, 1, 1))
    with pytest.raises(ValueError, match="weight must have shape"):
        instance_norm_leaky_relu(torch.zeros(2, 3, 4), torch.ones(4))


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
def test_compiled_op_checks_its_arguments():
    x = torch.zeros(2, 3, 4)
    op = torch.ops.deepfast.norm_leaky_relu
    with pytest.raises(RuntimeError, match="weight must have shape"):
        op(x, torch.ones(4), None, None, None, False, 1e-5, 0.2, False)
    with pytest.raises(RuntimeError, match="x must be a floating-point"):
        op(x.long(), None, None, None, None, False, 1e-5, 0.2, False)
    with pytest.raises(RuntimeError, match="inplace needs negative_slope > 0"):
        op(x, None, None, None, None, False, 1e-5, 0.0, True)
    with pytest.raises(RuntimeError, match="running_var must have shape"):
        op(x, None, None, torch.zeros(3), torch.zeros(2), False, 1e-5, 0.2, False)
    with pytest.raises(RuntimeError, match="grad_y must have the shape of x"):
        torch.ops.deepfast.norm_leaky_relu_backward(
            torch.zeros(2, 3, 5), x, None, None, torch.zeros(3), torch.ones(3), True, False, 1e-5, 0.2, False
        )
