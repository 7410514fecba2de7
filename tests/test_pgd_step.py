"""deepfast.ops.pgd_step, pgd_step_ and pgd_random_start: every backend against the float64 reference,
the contract (inside the eps ball and the box, never NaN), layouts, compile, opcheck and bad input."""

import pytest
import torch
from torch._prims_common import suggest_memory_format

import deepfast
from conftest import TOLERANCE, assert_compiles_fullgraph, compiled_namespaces
from deepfast import backends
from deepfast.ops import pgd_random_start, pgd_step, pgd_step_, pgd_step_reference

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(3, 3, 7, 9), (5, 1, 13, 11), (2, 17), (1, 3, 5, 5)]
NORMS = ("inf", "2")
AMOUNTS = {"inf": dict(step_size=0.03, eps=0.05), "2": dict(step_size=0.3, eps=0.5)}  # torchattacks-like
LAYOUTS = ("channels_last", "strided", "transposed", "channels_last_strided")


def make_inputs(shape, dtype, device, norm="inf", seed=0):
    """x_orig in [0, 1]; x_adv around it, partly outside the eps ball; grad with exact zeros (sign 0)."""
    g = torch.Generator().manual_seed(seed)
    x_orig = torch.rand(shape, generator=g)
    spread = 1.5 * AMOUNTS[norm]["eps"] / (1.0 if norm == "inf" else x_orig[0].numel() ** 0.5)
    x_adv = (x_orig + spread * (2 * torch.rand(shape, generator=g) - 1)).clamp(0, 1)
    grad = torch.randn(shape, generator=g)
    grad.view(-1)[::5] = 0.0
    return tuple(t.to(device=device, dtype=dtype) for t in (x_adv, grad, x_orig))


def per_sample(value, x, seed=3):
    """(N,) tensor of values around ``value`` (one 0), of the accumulation dtype of x."""
    n = x.shape[0]
    t = value * (0.5 + torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    t[n // 2] = 0.0
    return t.to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)


def to_layout(t, layout):
    """t with the same values in another memory layout (4-dim t)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":  # dense, permuted: copied by the compiled backends
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    base = to_layout(t, "channels_last") if layout == "channels_last_strided" else t
    wide = torch.cat([base, base], dim=-1)  # a strided view, of wide's layout
    return wide[..., ::2].copy_(base)


def skip_unsupported(backend, device, dtype):
    if backend == "triton" and device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("bfloat16 is wrong in the Triton interpreter; tested on a GPU")


def reference64(x_adv, grad, x_orig, step_size, eps, norm, clamp=(0.0, 1.0)):
    d = [v.double() if isinstance(v, torch.Tensor) else v for v in (x_adv, grad, x_orig, step_size, eps)]
    return pgd_step_reference(*d, norm=norm, clamp=clamp)


def run(backend, inplace, x_adv, grad, x_orig, **kwargs):
    """pgd_step, or pgd_step_ on a copy of x_adv (same layout), with the backend forced. For pgd_step_,
    checks that x_adv is returned, keeps its storage and strides, and that no other input changed."""
    with deepfast.use_backend(backend):
        if not inplace:
            return pgd_step(x_adv, grad, x_orig, **kwargs)
        target = torch.empty_strided(x_adv.shape, x_adv.stride(), dtype=x_adv.dtype, device=x_adv.device)
        target.copy_(x_adv)
        others = [t.clone() for t in (grad, x_orig, *kwargs.values()) if isinstance(t, torch.Tensor)]
        ptr, strides = target.data_ptr(), target.stride()
        assert pgd_step_(target, grad, x_orig, **kwargs) is target
    assert target.data_ptr() == ptr and target.stride() == strides
    after = [t for t in (grad, x_orig, *kwargs.values()) if isinstance(t, torch.Tensor)]
    assert all(torch.equal(a, b) for a, b in zip(others, after, strict=True)), "an input other than x_adv changed"
    return target


def assert_matches_reference(backend, inplace, x_adv, grad, x_orig, norm, clamp=(0.0, 1.0), **amounts):
    amounts = amounts or AMOUNTS[norm]
    got = run(backend, inplace, x_adv, grad, x_orig, norm=norm, clamp=clamp, **amounts)
    want = reference64(x_adv, grad, x_orig, amounts["step_size"], amounts["eps"], norm, clamp)
    assert got.dtype == x_adv.dtype and got.shape == x_adv.shape
    rtol, atol = TOLERANCE[x_adv.dtype]
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol)
    return got


@pytest.mark.parametrize("inplace", [False, True], ids=["pgd_step", "pgd_step_"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(backend_device, shape, dtype, norm, inplace, poison):
    backend, device = backend_device
    skip_unsupported(backend, device, dtype)
    assert_matches_reference(backend, inplace, *make_inputs(shape, dtype, device, norm), norm)


@pytest.mark.parametrize("inplace", [False, True], ids=["pgd_step", "pgd_step_"])
@pytest.mark.parametrize("clamp", [None, (0.0, 1.0), (0.2, 0.7)], ids=str)
@pytest.mark.parametrize("amounts", ["scalar", "per-sample"])
@pytest.mark.parametrize("norm", NORMS)
def test_per_sample_amounts_and_box(backend_device, norm, amounts, clamp, inplace, poison):
    backend, device = backend_device
    x_adv, grad, x_orig = make_inputs((5, 1, 13, 11), torch.float32, device, norm)
    kwargs = AMOUNTS[norm]
    if amounts == "per-sample":
        kwargs = {name: per_sample(value, x_adv, seed) for seed, (name, value) in enumerate(kwargs.items())}
    assert_matches_reference(backend, inplace, x_adv, grad, x_orig, norm, clamp, **kwargs)


@pytest.mark.parametrize("inplace", [False, True], ids=["pgd_step", "pgd_step_"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("norm", NORMS)
def test_layouts(backend_device, norm, layout, inplace, poison):
    """Every input in another layout, and mixed layouts; out-of-place results in x_adv's suggested format."""
    backend, device = backend_device
    x_adv, grad, x_orig = make_inputs((3, 3, 7, 9), torch.float32, device, norm)
    x_adv_l = to_layout(x_adv, layout)
    got = assert_matches_reference(backend, inplace, x_adv_l, *(to_layout(t, layout) for t in (grad, x_orig)), norm)
    assert_matches_reference(backend, inplace, x_adv_l, grad, to_layout(x_orig, "channels_last"), norm)
    if not inplace and backend != "torch":  # the reference keeps the layout torch's elementwise ops give
        assert got.stride() == torch.empty_like(x_adv_l, memory_format=suggest_memory_format(x_adv_l)).stride()


def test_many_chunks_per_sample(backend_device, poison):
    """Samples longer than one partial sum (CPU chunk, CUDA tile, Triton tile), of odd lengths."""
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("the interpreter is too slow for this size")
    for norm in NORMS:
        for shape in [(3, 3, 101, 131), (1, 70001)]:
            inputs = make_inputs(shape, torch.float32, device, norm)
            for inplace in (False, True):
                assert_matches_reference(backend, inplace, *inputs, norm)


def test_l2_is_deterministic(backend_device):
    """The same bits for any thread count, and for a sample alone as within a batch (both CPU paths)."""
    backend, device = backend_device
    if backend == "triton" and device == "cpu":
        pytest.skip("the interpreter is too slow for this size")
    x_adv, grad, x_orig = make_inputs((4, 3, 97, 113), torch.float32, device, "2")
    threads = torch.get_num_threads()
    with deepfast.use_backend(backend):
        first = pgd_step(x_adv, grad, x_orig, norm="2", **AMOUNTS["2"])
        alone = pgd_step(x_adv[1:2], grad[1:2], x_orig[1:2], norm="2", **AMOUNTS["2"])
        torch.set_num_threads(1)
        try:
            again = [pgd_step(x_adv, grad, x_orig, norm="2", **AMOUNTS["2"]) for _ in range(2)]
        finally:
            torch.set_num_threads(threads)
    assert all(torch.equal(first, out) for out in again)
    assert torch.equal(first[1:2], alone)


@pytest.mark.parametrize("inplace", [False, True], ids=["pgd_step", "pgd_step_"])
@pytest.mark.parametrize("norm", NORMS)
def test_empty(backend_device, norm, inplace):
    backend, device = backend_device
    for shape in [(0, 3, 4, 4), (4, 0)]:
        x = torch.zeros(shape, device=device)
        out = run(backend, inplace, x, x, x, step_size=0.1, eps=torch.ones(shape[0], device=device), norm=norm)
        assert out.shape == shape


# --- the contract: inside the eps ball of x_orig and the box, never NaN ------------------------------


def contract_inputs(case, norm, device):
    """Random and adversarial inputs: (x_adv, grad, x_orig, step_size, eps)."""
    x_adv, grad, x_orig = make_inputs((4, 3, 8, 8), torch.float32, device, norm, seed=7)
    step, eps = AMOUNTS[norm]["step_size"], AMOUNTS[norm]["eps"]
    if case == "grad zero":
        grad = torch.zeros_like(grad)
    elif case == "x_orig on the box edge":
        x_orig = (x_orig > 0.5).float()
        x_adv = (x_orig + 0.9 * (torch.rand_like(x_orig) - 0.5)).clamp(0, 1)
    elif case == "eps zero":
        eps = 0.0
    elif case == "all zero":  # eps = 0, grad = 0, x_adv = x_orig: the 0/0 of the L2 factor
        eps, grad, x_adv = 0.0, torch.zeros_like(grad), x_orig.clone()
    elif case in ("huge step", "giant step"):
        step = 1e6 if case == "huge step" else 1e30
    elif case == "far outside":  # x_adv far from x_orig, no box
        x_adv = x_orig + 100.0 * torch.randn_like(x_orig)
    elif case == "per-sample eps":
        eps = torch.tensor([0.0, eps, 4 * eps, 1e-7], device=device)
    return x_adv, grad, x_orig, step, eps


CONTRACT_CASES = [
    "random",
    "grad zero",
    "x_orig on the box edge",
    "eps zero",
    "all zero",
    "huge step",
    "giant step",
    "far outside",
    "per-sample eps",
]


@pytest.mark.parametrize("case", CONTRACT_CASES)
@pytest.mark.parametrize("norm", NORMS)
def test_contract(backend_device, norm, case):
    backend, device = backend_device
    x_adv, grad, x_orig, step, eps = contract_inputs(case, norm, device)
    clamp = None if case == "far outside" else (0.0, 1.0)
    for inplace in (False, True):
        out = run(backend, inplace, x_adv, grad, x_orig, step_size=step, eps=eps, norm=norm, clamp=clamp)
        assert not out.isnan().any()
        if clamp is not None:
            assert out.min() >= 0.0 and out.max() <= 1.0
        diff = (out.double() - x_orig.double()).flatten(1)
        e = (eps.double() if isinstance(eps, torch.Tensor) else torch.tensor(eps)).to(diff.device)
        if norm == "inf":
            assert (diff.abs().amax(1) <= e + 1e-6).all()
        else:
            assert (diff.norm(dim=1) <= e * (1 + 1e-6) + 1e-6).all()
        if case in ("eps zero", "all zero"):
            assert torch.equal(out, x_orig)
        if case != "giant step":  # L2 norms of ~1e30 overflow float32: the step lands on x_orig (documented)
            want = reference64(x_adv, grad, x_orig, step, eps, norm, clamp)
            torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


# --- pgd_random_start --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("norm", NORMS)
def test_random_start_in_ball_and_box(norm, dtype):
    x = torch.rand(6, 3, 5, 5, dtype=dtype)
    for eps in (AMOUNTS[norm]["eps"], torch.tensor([0.0, 0.1, 0.5, 1.0, 2.0, 0.3], dtype=dtype)):
        start = pgd_random_start(x, eps, norm=norm)
        assert start.dtype == dtype and start.shape == x.shape
        assert start.min() >= 0 and start.max() <= 1
        diff = (start - x).flatten(1).double()
        e = torch.as_tensor(eps, dtype=torch.float64)
        size = diff.abs().amax(1) if norm == "inf" else diff.norm(dim=1)
        assert (size <= e * (1 + 1e-6) + 1e-6).all()
        if isinstance(eps, torch.Tensor):
            assert torch.equal(start[0], x[0])  # eps 0
    assert pgd_random_start(x[:0], 0.1, norm=norm).shape == (0, 3, 5, 5)


def test_random_start_distribution():
    """Linf: uniform in [-eps, eps]; L2: uniform in the ball (mean radius eps * D / (D + 1), D elements)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(20000, 2)
    delta = pgd_random_start(x, 0.5, norm="inf", clamp=None, generator=gen)
    assert abs(delta.mean()) < 0.01 and delta.min() > -0.5 and delta.max() < 0.5 and delta.abs().max() > 0.499
    radius = pgd_random_start(x, 0.5, norm="2", clamp=None, generator=gen).norm(dim=1)
    assert abs(radius.mean() - 0.5 * 2 / 3) < 0.01 and radius.max() <= 0.5 * (1 + 1e-6)
    assert abs((radius < 0.25).float().mean() - 0.25) < 0.02  # P(r < eps/2) = (1/2)^D


def test_random_start_generator_reproducible():
    x = torch.rand(3, 4, 5)
    a, b = (pgd_random_start(x, 0.1, norm="2", generator=torch.Generator().manual_seed(5)) for _ in range(2))
    c = pgd_random_start(x, 0.1, norm="2", generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- dispatcher ops: opcheck, torch.compile ----------------------------------------------------------


@pytest.mark.parametrize("namespace", compiled_namespaces())
@pytest.mark.parametrize("norm", NORMS)
def test_opcheck(namespace, norm):
    device = "cuda" if torch.cuda.is_available() and namespace == "deepfast_triton" else "cpu"
    ops = getattr(torch.ops, namespace)
    x_adv, grad, x_orig = make_inputs((3, 2, 4, 5), torch.float32, device, norm)
    step, eps = (per_sample(v, x_adv) for v in AMOUNTS[norm].values())
    for x in (x_adv, x_adv.contiguous(memory_format=torch.channels_last), x_adv.transpose(2, 3)):
        g, x0 = grad.view_as(x), x_orig.view_as(x)
        torch.library.opcheck(ops.pgd_step, (x, g, x0, step, eps, norm, 0.0, 1.0))
        torch.library.opcheck(ops.pgd_step_, (x.clone(), g, x0, step, eps, norm, float("-inf"), float("inf")))


@pytest.mark.parametrize("inplace", [False, True], ids=["pgd_step", "pgd_step_"])
def test_torch_compile_fullgraph(backend_device, inplace):
    backend, device = backend_device
    x_adv, grad, x_orig = make_inputs((2, 3, 5, 7), torch.float32, device)
    eps = per_sample(0.05, x_adv)

    def attack_steps(x_adv, grad, x_orig):
        x = x_adv.clone() if inplace else x_adv
        for norm in NORMS:
            if inplace:
                pgd_step_(x, grad, x_orig, step_size=0.02, eps=eps, norm=norm)
            else:
                x = pgd_step(x, grad, x_orig, step_size=0.02, eps=eps, norm=norm)
        return x * 2.0

    op = "pgd_step_" if inplace else "pgd_step"
    assert_compiles_fullgraph(attack_steps, (x_adv, grad, x_orig), backend, op, grad_of=())


@pytest.mark.cuda
def test_64bit_indexing_cuda():
    """More than 2^31 elements: the tail of the last sample is stepped; L2 norms see it."""
    n = 2**30 + 8  # per sample, 2 samples
    x_orig = torch.full((2, n), 0.5, dtype=torch.float16, device="cuda")
    grad = torch.zeros_like(x_orig)
    grad[1, -5:] = 1.0
    for backend in ("cuda", "triton"):
        if not backends.status()[backend].available:
            continue
        for norm, want in (("inf", 0.5 + 0.0625), ("2", 0.5 + 0.0625 / 5**0.5)):
            for inplace in (False, True):
                x_adv = x_orig.clone()
                out = run(backend, inplace, x_adv, grad, x_orig, step_size=0.0625, eps=0.125, norm=norm)
                assert torch.allclose(out[1, -5:].float().cpu(), torch.tensor(want), rtol=1e-3)
                assert out[0].eq(0.5).all() and out[1, :-5].eq(0.5).all()
                del out, x_adv


# --- bad input -------------------------------------------------------------------------------------


def bad_input_cases():
    cases = [
        (dict(x_adv=torch.zeros(2, 3, dtype=torch.int64)), TypeError, "x_adv must be a floating-point"),
        (dict(x_adv=[0.0, 1.0]), TypeError, "x_adv must be a torch.Tensor"),
        (
            dict(x_adv=torch.tensor(0.5), grad=torch.tensor(1.0), x_orig=torch.tensor(0.5)),
            ValueError,
            "x_adv must have a batch dimension",
        ),
        (dict(grad=torch.zeros(2, 4)), ValueError, "grad must have the shape of x_adv"),
        (dict(grad=torch.zeros(2, 3, dtype=torch.int32)), TypeError, "grad must be a floating-point"),
        (dict(x_orig=torch.zeros(2, 3, dtype=torch.float64)), TypeError, "x_orig must have the dtype of x_adv"),
        (dict(x_orig=torch.zeros(2, 3, device="meta")), ValueError, "x_orig must be on the device of x_adv"),
        (dict(step_size=-0.1), ValueError, "step_size must be finite and >= 0"),
        (dict(step_size=float("inf")), ValueError, "step_size must be finite"),
        (dict(eps=-1), ValueError, "eps must be finite and >= 0"),
        (dict(eps=float("nan")), ValueError, "eps must be finite"),
        (dict(eps="0.1"), TypeError, "eps must be a Python float or a tensor of shape"),
        (dict(eps=torch.ones(3)), ValueError, r"eps must be a float or a tensor of shape \(N,\) = \(2,\)"),
        (dict(eps=torch.ones(2, 1)), ValueError, r"eps must be a float or a tensor of shape \(N,\)"),
        (dict(eps=torch.tensor([0.1, -0.1])), ValueError, "eps must be finite and >= 0"),
        (dict(step_size=torch.tensor([0.1, float("nan")])), ValueError, "step_size must be finite and >= 0"),
        (dict(step_size=torch.ones(2, dtype=torch.int64)), TypeError, "step_size must be a floating-point"),
        (dict(eps=torch.ones(2, device="meta")), ValueError, "eps must be on the device of x_adv"),
        (dict(eps=torch.ones(2, requires_grad=True)), ValueError, "eps must not require grad"),
        (dict(norm="l2"), ValueError, "norm must be one of 'inf', '2'"),
        (dict(norm=2), ValueError, "norm must be one of 'inf', '2'"),
        (dict(clamp=(1.0, 0.0)), ValueError, r"clamp must be None or a pair \(lo, hi\)"),
        (dict(clamp=(0.0,)), ValueError, "clamp must be None or a pair"),
        (dict(clamp=(0.0, float("nan"))), ValueError, "clamp must be None or a pair"),
    ]
    for name in ("x_adv", "grad", "x_orig"):
        cases.append(
            (dict([(name, torch.zeros(2, 3, requires_grad=True))]), ValueError, f"{name} must not require grad")
        )
    return cases


@pytest.mark.parametrize("fn", [pgd_step, pgd_step_], ids=["pgd_step", "pgd_step_"])
@pytest.mark.parametrize("kwargs,error,words", bad_input_cases())
def test_bad_input_names_the_argument(fn, kwargs, error, words):
    args = dict(x_adv=torch.zeros(2, 3), grad=torch.zeros(2, 3), x_orig=torch.zeros(2, 3), step_size=0.1, eps=0.2)
    args |= kwargs
    with pytest.raises(error, match=words):
        fn(args.pop("x_adv"), args.pop("grad"), args.pop("x_orig"), **args)


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        (dict(x=torch.zeros(2, dtype=torch.int64)), TypeError, "x must be a floating-point"),
        (dict(eps=-0.5), ValueError, "eps must be finite and >= 0"),
        (dict(eps=torch.ones(3)), ValueError, r"eps must be a float or a tensor of shape \(N,\) = \(2,\)"),
        (dict(norm="1"), ValueError, "norm must be one of"),
        (dict(clamp=(2, 1)), ValueError, "clamp must be None or a pair"),
    ],
)
def test_random_start_bad_input(kwargs, error, words):
    args = dict(x=torch.zeros(2, 3), eps=0.1) | kwargs
    with pytest.raises(error, match=words):
        pgd_random_start(args.pop("x"), args.pop("eps"), **args)


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
def test_compiled_op_checks_its_arguments():
    a, e = torch.zeros(2, 3), torch.ones(2)
    for op in (torch.ops.deepfast.pgd_step, torch.ops.deepfast.pgd_step_):
        with pytest.raises(RuntimeError, match="grad must have the shape of x_adv"):
            op(a, torch.zeros(3, 2), a, e, e, "inf", 0.0, 1.0)
        with pytest.raises(RuntimeError, match="x_orig must have the dtype of x_adv"):
            op(a, a, a.double(), e, e, "inf", 0.0, 1.0)
        with pytest.raises(RuntimeError, match=r"eps must have shape \(N,\) = \(2,\)"):
            op(a, a, a, e, torch.ones(3), "inf", 0.0, 1.0)
        with pytest.raises(RuntimeError, match="step_size must be a floating-point"):
            op(a, a, a, e.long(), e, "inf", 0.0, 1.0)
        with pytest.raises(RuntimeError, match="norm must be 'inf' or '2'"):
            op(a, a, a, e, e, "1", 0.0, 1.0)
        with pytest.raises(RuntimeError, match="clamp must have lo <= hi"):
            op(a, a, a, e, e, "2", 1.0, 0.0)
        with pytest.raises(RuntimeError, match="x_adv must have a batch dimension"):
            op(a[0, 0], a[0, 0], a[0, 0], e, e, "2", 0.0, 1.0)
        with pytest.raises(RuntimeError, match="x_adv must be a floating-point"):
            op(a.long(), a.long(), a.long(), e, e, "2", 0.0, 1.0)
