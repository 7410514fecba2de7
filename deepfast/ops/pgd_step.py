"""Fused projected-gradient-descent (PGD) step of adversarial attacks, for the Linf and the L2 ball.

Per sample s of x_adv (N, ...), with step = step_size[s], eps = eps[s] and the box [lo, hi] = clamp:

    norm "inf":  x' = clip(min(max(x_adv + step * sign(grad), x_orig - eps), x_orig + eps), lo, hi)
    norm "2":    g  = grad / (||grad||_2 + 1e-10)               (norms over all non-batch dims)
                 d  = x_adv + step * g - x_orig
                 x' = clip(x_orig + d * factor, lo, hi),  factor = eps / ||d||_2 if ||d||_2 > eps else 1

These are the updates of torchattacks' PGD (there written x_orig + clamp(x_adv' - x_orig, -eps, eps),
the same up to rounding) and PGDL2 (factor = min(eps / ||d||, 1)), as in the PGD paper (Madry et al.).
The only deviation: where ||d|| = 0 and eps = 0, min(eps / ||d||, 1) is 0/0 = NaN in torch; here the
factor is 1 (and x' = x_orig).

Backends: torch (the reference below), cpp and cuda (torch.ops.deepfast.pgd_step / pgd_step_, csrc/),
triton (torch.ops.deepfast_triton.pgd_step / pgd_step_, kernels/pgd_step.py). The compiled backends make
one pass for Linf and three for L2 (sum of grad^2; sum of d^2, d recomputed; the write, d recomputed),
with deterministic per-sample sums and no temporary tensor. The L2 norms are summed in float64 on the
CPU (cpp, and the reference), in float32 on a GPU (cuda, triton: squares overflow from 1.8e19 on).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from deepfast import backends
from deepfast._validation import acc_dtype, check_choice, check_finite_float, check_float, check_like, in_float32
from deepfast.ops._register import register_op_pair

NORMS = ("inf", "2")

Amount = float | Tensor  # a Python float, or one value per sample: a tensor of shape (N,)


def _per_sample(value: Amount, x: Tensor) -> Amount:
    """A float as it is; a (N,) tensor viewed as (N, 1, ..., 1) to broadcast over the samples of x."""
    return value.view(-1, *(1,) * (x.dim() - 1)) if isinstance(value, Tensor) else value


def _norm(t: Tensor) -> Tensor:
    """L2 norm of each sample of t, shaped (N, 1, ..., 1), summed in float64 as the compiled backends do
    (float32 squares overflow from 1.8e19 on) and returned in t's dtype."""
    flat = t.reshape(t.shape[0], math.prod(t.shape[1:]))
    return torch.linalg.vector_norm(flat, dim=1, dtype=torch.float64).to(t.dtype).view(-1, *(1,) * (t.dim() - 1))


def pgd_step_reference(
    x_adv: Tensor,
    grad: Tensor,
    x_orig: Tensor,
    step_size: Amount,
    eps: Amount,
    norm: str = "inf",
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """The definition of the op, in plain torch (the ``torch`` backend, and the spec of the others)."""
    step, eps = _per_sample(step_size, x_adv), _per_sample(eps, x_adv)
    if norm == "inf":
        x = x_adv + step * grad.sign()
        x = torch.min(torch.max(x, x_orig - eps), x_orig + eps)
    else:
        x = x_adv + step * (grad / (_norm(grad) + 1e-10))
        d = x - x_orig
        d_norm = _norm(d)
        # (a tensor over a tensor: a Python float over one is its reciprocal times it, 0 * inf = NaN for a
        # subnormal norm)
        eps = torch.as_tensor(eps, dtype=d_norm.dtype, device=d_norm.device)
        x = x_orig + d * torch.where(d_norm > eps, eps / d_norm, 1.0)
    return x if clamp is None else x.clamp(*clamp)


def pgd_step(
    x_adv: Tensor,
    grad: Tensor,
    x_orig: Tensor,
    *,
    step_size: Amount,
    eps: Amount,
    norm: str = "inf",
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """One PGD step: move x_adv along grad, project into the eps ball around x_orig and into the box.

    Per sample s (``step = step_size[s]``, ``eps = eps[s]``, ``(lo, hi) = clamp``)::

        norm "inf":  x' = clip(min(max(x_adv + step * sign(grad), x_orig - eps), x_orig + eps), lo, hi)
        norm "2":    g  = grad / (||grad||_2 + 1e-10)
                     d  = x_adv + step * g - x_orig
                     x' = clip(x_orig + d * (eps / ||d||_2 if ||d||_2 > eps else 1), lo, hi)

    with sign(0) = 0 and L2 norms over all non-batch dims: the updates of torchattacks' PGD and PGDL2.
    Where torch's ``min(eps / ||d||, 1)`` is NaN (eps = 0 and d = 0) the factor here is 1.

    Args:
        x_adv, grad, x_orig: floating tensors of one shape (N, ...), dtype and device, e.g. (N, C, H, W)
            images, NCHW or channels_last or any other layout. float32, float16 and bfloat16 compute in
            float32; float64 in float64. None may require grad: the step is not differentiable (pass
            ``x_adv.detach()``).
        step_size, eps: finite, >= 0: Python floats, or tensors of shape (N,) (one value per sample).
        norm: "inf" or "2".
        clamp: the box (lo, hi) the result is clipped to, lo <= hi; None for no box.

    Returns:
        x' of the shape and dtype of x_adv, in the memory format x_adv suggests (channels_last stays
        channels_last). Contract: for finite inputs with x_orig inside the box, x' is in the box and
        in the eps ball of x_orig up to one rounding (float32: |x' - x_orig| <= eps + 1e-6 for "inf",
        ||x' - x_orig|| <= eps * (1 + 1e-6) + 1e-6 for "2"), and never NaN.
    """
    return _step(x_adv, grad, x_orig, step_size, eps, norm, clamp, inplace=False)


def pgd_step_(
    x_adv: Tensor,
    grad: Tensor,
    x_orig: Tensor,
    *,
    step_size: Amount,
    eps: Amount,
    norm: str = "inf",
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """In-place ``pgd_step``: writes x' into x_adv (no new tensor when x_adv is NCHW- or
    channels_last-contiguous) and returns x_adv. Same arguments, formulas and contract."""
    return _step(x_adv, grad, x_orig, step_size, eps, norm, clamp, inplace=True)


def pgd_random_start(
    x: Tensor,
    eps: Amount,
    norm: str = "inf",
    clamp: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """A random starting point of PGD around x (N, ...), clipped to the box ``clamp`` (None: no box).

    norm "inf": x + U(-eps, eps) per element. norm "2": uniform in the L2 ball of radius eps, per
    sample: x + eps * u^(1/D) * z / ||z|| with z ~ N(0, I), u ~ U(0, 1), D the elements per sample.
    eps: a finite float >= 0 or a tensor of shape (N,). Random numbers in float32 (float64 for
    float64 x), from ``generator`` if given (on the device of x). Returns a new tensor like x.
    """
    check_float(x, "x")
    _check_batched(x, "x")
    _check_amount(eps, "eps", x, "x")
    check_choice(norm, "norm", NORMS)
    bounds = _check_clamp(clamp)
    acc = acc_dtype(x)
    e = _per_sample(eps.to(acc) if isinstance(eps, Tensor) else eps, x)
    if norm == "inf":
        delta = (2 * torch.rand(x.shape, generator=generator, dtype=acc, device=x.device) - 1) * e
    else:
        z = torch.randn(x.shape, generator=generator, dtype=acc, device=x.device)
        u = torch.rand((x.shape[0], *(1,) * (x.dim() - 1)), generator=generator, dtype=acc, device=x.device)
        radius = e * u.pow(1.0 / max(1, math.prod(x.shape[1:])))
        delta = z * (radius / _norm(z).clamp_min(torch.finfo(acc).tiny))
    out = x.to(acc) + delta
    return (out if bounds is None else out.clamp(*bounds)).to(x.dtype)


# --- argument checks and backend choice --------------------------------------------------------------


def _check_batched(t: Tensor, name: str) -> None:
    if t.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension (N, ...), got a 0-dim tensor")


def _check_no_grad(t: Tensor, name: str) -> None:
    if t.requires_grad:
        raise ValueError(f"{name} must not require grad: the PGD step is not differentiable (pass {name}.detach())")


def _check_amount(value: object, name: str, x: Tensor, x_name: str) -> None:
    """step_size or eps: a finite float >= 0, or a tensor of shape (N,) of such values on x's device, within
    the range of the accumulation dtype of x (float32 for all but float64)."""
    largest = torch.finfo(acc_dtype(x)).max
    if not isinstance(value, Tensor):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{name} must be a Python float or a tensor of shape (N,), got {type(value).__name__}")
        check_finite_float(value, name, minimum=0)
        if value > largest:
            raise ValueError(
                f"{name} must be at most {largest:.6g} (the largest {acc_dtype(x)}, the dtype the "
                f"step of {x_name} of dtype {x.dtype} is computed in), got {value:g}"
            )
        return
    check_float(value, name)
    if tuple(value.shape) != (x.shape[0],):
        raise ValueError(
            f"{name} must be a float or a tensor of shape (N,) = ({x.shape[0]},) for {x_name} of shape "
            f"{tuple(x.shape)}, got shape {tuple(value.shape)}"
        )
    if value.device != x.device:
        raise ValueError(f"{name} must be on the device of {x_name} ({x.device}), got {value.device}")
    _check_no_grad(value, name)
    # Values are checked where that needs no device sync: CPU tensors, outside torch.compile. A GPU
    # tensor is not read back in every step of an attack loop (and CUDA-graph capture forbids it).
    on_cpu = value.device.type == "cpu"
    if on_cpu and not torch.compiler.is_compiling() and not bool((torch.isfinite(value) & (value >= 0)).all()):
        raise ValueError(f"{name} must be finite and >= 0 in every sample")
    if on_cpu and not torch.compiler.is_compiling() and bool((value > largest).any()):
        raise ValueError(f"{name} must be at most {largest:.6g} (the largest {acc_dtype(x)}) in every sample")


def _check_clamp(clamp: object) -> tuple[float, float] | None:
    if clamp is None:
        return None
    ok = isinstance(clamp, (tuple, list)) and len(clamp) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in clamp)
    if not ok or not clamp[0] <= clamp[1]:  # also NaN
        raise ValueError(f"clamp must be None or a pair (lo, hi) of numbers with lo <= hi, got {clamp!r}")
    return float(clamp[0]), float(clamp[1])


def _check_writable(x_adv: Tensor, others: dict[str, Tensor]) -> None:
    """pgd_step_ writes x_adv while it reads the others: as torch's in-place ops, refuse an x_adv whose
    elements share memory (an expanded tensor) and inputs that overlap it in part (the very same
    tensor is fine: each element is read before it is written)."""
    if any(stride == 0 and size > 1 for stride, size in zip(x_adv.stride(), x_adv.shape)):
        raise ValueError(
            "x_adv has elements that share memory (an expanded tensor): pgd_step_ cannot write it in "
            "place; pass x_adv.clone() or use pgd_step"
        )

    def span(t: Tensor) -> tuple[int, int]:
        extent = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride())) + 1
        return t.data_ptr(), t.data_ptr() + extent * t.element_size()

    for name, t in others.items():
        if t.numel() == 0 or x_adv.numel() == 0 or t.untyped_storage().data_ptr() != x_adv.untyped_storage().data_ptr():
            continue
        if t.data_ptr() == x_adv.data_ptr() and t.stride() == x_adv.stride():
            continue  # the same elements
        (a0, a1), (b0, b1) = span(x_adv), span(t)
        if a0 < b1 and b0 < a1:
            raise ValueError(
                f"{name} overlaps x_adv in memory: pgd_step_ writes x_adv while it reads {name}; pass {name}.clone()"
            )


def _step(x_adv, grad, x_orig, step_size, eps, norm, clamp, inplace: bool) -> Tensor:
    check_float(x_adv, "x_adv")
    _check_batched(x_adv, "x_adv")
    check_like(grad, "grad", x_adv, "x_adv")
    check_like(x_orig, "x_orig", x_adv, "x_adv")
    if inplace and not torch.compiler.is_compiling():  # (fake tensors under torch.compile have no memory)
        _check_writable(x_adv, {"grad": grad, "x_orig": x_orig})
    for t, name in ((x_adv, "x_adv"), (grad, "grad"), (x_orig, "x_orig")):
        _check_no_grad(t, name)
    _check_amount(step_size, "step_size", x_adv, "x_adv")
    _check_amount(eps, "eps", x_adv, "x_adv")
    check_choice(norm, "norm", NORMS)
    bounds = _check_clamp(clamp)
    acc = acc_dtype(x_adv)
    backend = backends.select(x_adv.device)
    if backend == "torch":
        step_size, eps = (v.to(acc) if isinstance(v, Tensor) else v for v in (step_size, eps))
        out = in_float32(pgd_step_reference, x_adv, grad, x_orig, step_size=step_size, eps=eps, norm=norm, clamp=bounds)
        return x_adv.copy_(out) if inplace else out
    step_size, eps = (
        v if isinstance(v, Tensor) else x_adv.new_full((x_adv.shape[0],), v, dtype=acc) for v in (step_size, eps)
    )
    lo, hi = bounds if bounds is not None else (-math.inf, math.inf)
    ops = torch.ops.deepfast_triton if backend == "triton" else torch.ops.deepfast
    if inplace:
        ops.pgd_step_(x_adv, grad, x_orig, step_size, eps, norm, lo, hi)
        return x_adv
    return ops.pgd_step(x_adv, grad, x_orig, step_size, eps, norm, lo, hi)


# --- Triton backend: custom ops around the kernels of deepfast.kernels.pgd_step -------------------------

_ARGS = "Tensor grad, Tensor x_orig, Tensor step_size, Tensor eps, str norm, float lo, float hi"  # after x_adv


@torch.library.custom_op("deepfast_triton::pgd_step", mutates_args=(), schema=f"(Tensor x_adv, {_ARGS}) -> Tensor")
def _triton_step(x_adv: Tensor, *args) -> Tensor:
    from deepfast.kernels import pgd_step as kernels

    return kernels.step(x_adv, *args, inplace=False)


@torch.library.custom_op(
    "deepfast_triton::pgd_step_", mutates_args=["x_adv"], schema=f"(Tensor(a!) x_adv, {_ARGS}) -> ()"
)
def _triton_step_(x_adv: Tensor, *args) -> None:
    from deepfast.kernels import pgd_step as kernels

    kernels.step(x_adv, *args, inplace=True)


# --- fake kernels, shared by the compiled (cpp/cuda) and Triton ops (no autograd: the step is not differentiable)


def _fake_step(x_adv: Tensor, *args) -> Tensor:
    return torch.empty_like(x_adv, memory_format=suggest_memory_format(x_adv))


def _fake_step_(x_adv: Tensor, *args) -> None:
    return None


register_op_pair("pgd_step", "pgd_step_", fakes=(_fake_step, _fake_step_))
