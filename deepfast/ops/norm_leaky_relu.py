"""Fused batch / instance normalization + LeakyReLU (ReLU with negative_slope=0), as after the convs of
DCGAN, VAE and CycleGAN networks.

    xhat = (x - mean) / sqrt(var + eps)        per channel c (batch norm) or per (n, c) (instance norm)
    z    = weight * xhat + bias
    y    = z if z > 0 else negative_slope * z

Batch norm uses the statistics of the batch when training (biased variance; the running estimates
are updated with the unbiased one, as nn.BatchNorm2d does) and the running ones in eval; instance
norm always uses those of each (n, c) plane.

Backends: torch (the references below: F.batch_norm / F.instance_norm + F.leaky_relu), cpp and cuda
(torch.ops.deepfast.norm_leaky_relu, csrc/), triton (torch.ops.deepfast_triton.norm_leaky_relu,
kernels/norm_leaky_relu.py). The compiled backends make two passes forward (statistics, then y) and two
backward (per-group sums of dz and dz * xhat, then dx):

    dz      = dy if y > 0 else negative_slope * dy
    dbias   = sum dz,   dweight = sum dz * xhat                        (over every group of channel c)
    dx      = weight / sqrt(var + eps) * (dz - mean(dz) - xhat * mean(dz * xhat))   (batch statistics)
    dx      = weight / sqrt(var + eps) * dz                                       (running statistics)

They save x for backward, or, with ``inplace=True`` (In-Place Activated BatchNorm), only y: then
z = y if y > 0 else y / negative_slope (negative_slope > 0 needed) and xhat = (z - bias) / weight.
In that mode weight is replaced by sign(weight) * max(|weight|, 1e-5) (sign(0) = +1) in forward and
backward, so that the division is defined: results equal the standard layers wherever
|weight| >= 1e-5; a smaller |weight| acts as 1e-5 with its sign, and its gradient is the gradient
with respect to that value (straight-through, so a zero weight still learns).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from deepfast import backends
from deepfast._validation import acc_dtype, check_float
from deepfast.ops._register import register_op_pair

INPLACE_MIN_WEIGHT = 1e-5


# --- references (the torch backend, and the spec of the others) ----------------------------------------


def inplace_weight(weight: Tensor) -> Tensor:
    """sign(w) * max(|w|, 1e-5) (sign(0) = +1), with the gradient passed straight through to w (an infinite
    or NaN w as it is: w + (clamped - w) would be NaN)."""
    clamped = torch.where(weight >= 0, weight.clamp_min(INPLACE_MIN_WEIGHT), weight.clamp_max(-INPLACE_MIN_WEIGHT))
    return torch.where(weight.isfinite(), weight + (clamped - weight).detach(), weight)


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None, inplace: bool) -> tuple:
    """weight and bias as the reference uses them: in-place weight, in the compute dtype (their own
    may differ: gradients come back in theirs)."""
    if inplace:
        weight = inplace_weight(weight if weight is not None else x.new_ones(x.shape[1]))
    return tuple(None if t is None else t.to(acc_dtype(x)) for t in (weight, bias))


def batch_norm_leaky_relu_reference(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    negative_slope: float = 0.2,
    inplace: bool = False,
) -> Tensor:
    """F.batch_norm + F.leaky_relu in the compute dtype (float32 for half types, else x's); updates the
    running stats in training (in their own dtype)."""
    weight, bias = _affine(x, weight, bias, inplace)
    dtype = acc_dtype(x)
    stats = [None if t is None else t.to(dtype) for t in (running_mean, running_var)]  # copies if cast
    z = F.batch_norm(x.to(dtype), *stats, weight, bias, training, momentum, eps)
    if training:  # running statistics updated in the compute dtype, stored back into a cast copy's origin
        with torch.no_grad():
            for t, updated in zip((running_mean, running_var), stats):
                if t is not None and updated is not t:
                    t.copy_(updated)
    return F.leaky_relu(z, negative_slope).to(x.dtype)


def instance_norm_leaky_relu_reference(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    negative_slope: float = 0.2,
    inplace: bool = False,
) -> Tensor:
    """F.instance_norm + F.leaky_relu in the compute dtype (float32 for half types, else x's)."""
    weight, bias = _affine(x, weight, bias, inplace)
    z = F.instance_norm(x.to(acc_dtype(x)), weight=weight, bias=bias, eps=eps)
    return F.leaky_relu(z, negative_slope).to(x.dtype)


# --- public ops ------------------------------------------------------------------------------------------


def batch_norm_leaky_relu(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    negative_slope: float = 0.2,
    inplace: bool = False,
) -> Tensor:
    """LeakyReLU(BatchNorm(x)) in one fused op; ReLU with negative_slope=0.

    Args:
        x: (N, C, *) floating tensor: float32, float64, float16 or bfloat16 (statistics in float32,
            float64 for float64); NCHW or channels_last (kept in the output).
        weight, bias: (C,) or None (1 and 0).
        running_mean, running_var: (C,) running estimates, or None. Needed when ``training`` is False
            (they are used instead of the batch statistics); when training they are updated in place:
            running = (1 - momentum) * running + momentum * batch (unbiased variance).
        training: normalize with the statistics of the batch (needs more than one value per channel).
        momentum: factor of the running-statistics update (nn.BatchNorm2d's momentum=None, the
            cumulative average, is the layer's business: it passes 1 / num_batches_tracked).
        negative_slope: >= 0.
        inplace: keep only y for backward (saves the activation memory of x); needs negative_slope > 0.

    Returns:
        y of the shape, dtype and memory format of x.
    """
    _check(x, weight, bias, negative_slope, inplace)
    for t, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        if t is not None:
            _check_channels(t, name, x)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("running_mean and running_var are needed when training=False (eval uses them)")
    if training and x.numel() and x.numel() == x.shape[1]:
        raise ValueError(f"expected more than 1 value per channel when training, got x of shape {tuple(x.shape)}")
    if x.numel() == 0:
        return _empty(x, negative_slope)
    backend = backends.select(x.device)
    if backend == "torch":
        return batch_norm_leaky_relu_reference(
            x,
            weight,
            bias,
            running_mean,
            running_var,
            training=training,
            momentum=momentum,
            eps=eps,
            negative_slope=negative_slope,
            inplace=inplace,
        )
    stats = (None, None) if training else (running_mean, running_var)
    y, mean, var = _op(backend)(x, weight, bias, *stats, False, eps, negative_slope, inplace)
    if training and running_mean is not None and running_var is not None:
        count = x.numel() // x.shape[1]
        # (1 - m) r + m s in the accumulation dtype, stored back, as torch does (lerp gives NaN for an
        # infinite s when m >= 0.5; in float16 the unbiased variance alone can overflow)
        with torch.no_grad():
            for running, stat in ((running_mean, mean), (running_var, var * (count / (count - 1)))):
                running.copy_(running.to(stat.dtype) * (1 - momentum) + stat * momentum)
    return y


def instance_norm_leaky_relu(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    negative_slope: float = 0.2,
    inplace: bool = False,
) -> Tensor:
    """LeakyReLU(InstanceNorm(x)) in one fused op (statistics per (n, c), as nn.InstanceNorm2d with
    track_running_stats=False); ReLU with negative_slope=0.

    Args:
        x: (N, C, *) floating tensor with more than one value per (n, c) plane; dtypes and memory
            formats as in batch_norm_leaky_relu.
        weight, bias: (C,) or None (affine=False).
        negative_slope: >= 0.
        inplace: keep only y for backward; needs negative_slope > 0.

    Returns:
        y of the shape, dtype and memory format of x.
    """
    _check(x, weight, bias, negative_slope, inplace)
    if x.dim() < 3 or (x.numel() and x[0, 0].numel() == 1):
        raise ValueError(f"expected more than 1 spatial element per (n, c) plane, got x of shape {tuple(x.shape)}")
    if x.numel() == 0:
        return _empty(x, negative_slope)
    backend = backends.select(x.device)
    if backend == "torch":
        return instance_norm_leaky_relu_reference(
            x, weight, bias, eps=eps, negative_slope=negative_slope, inplace=inplace
        )
    return _op(backend)(x, weight, bias, None, None, True, eps, negative_slope, inplace)[0]


def _empty(x: Tensor, negative_slope: float) -> Tensor:
    """The result for an empty x (N, C or a spatial size 0): an empty y of its shape, dtype and layout,
    differentiable in x; weight and bias get no gradient and the running statistics stay as they are
    (torch's batch norm fails on C = 0 with weights, and returns the same otherwise)."""
    return F.leaky_relu(x, negative_slope)


def _op(backend: str):
    return torch.ops.deepfast_triton.norm_leaky_relu if backend == "triton" else torch.ops.deepfast.norm_leaky_relu


def _check_channels(t: object, name: str, x: Tensor) -> None:
    check_float(t, name)
    if t.shape != (x.shape[1],):
        raise ValueError(
            f"{name} must have shape (C,) = ({x.shape[1]},) for x of shape {tuple(x.shape)}, got {tuple(t.shape)}"
        )
    if t.device != x.device:
        raise ValueError(f"{name} must be on the device of x ({x.device}), got {t.device}")


def _check(x: Tensor, weight: Tensor | None, bias: Tensor | None, negative_slope: float, inplace: bool) -> None:
    check_float(x, "x")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, C, *), got {tuple(x.shape)}")
    for t, name in ((weight, "weight"), (bias, "bias")):
        if t is not None:
            _check_channels(t, name, x)
    if not negative_slope >= 0:
        raise ValueError(f"negative_slope must be >= 0, got {negative_slope}")
    if inplace and negative_slope == 0:
        raise ValueError("inplace=True needs negative_slope > 0: ReLU cannot be inverted to recover its input")


# --- layout, shared by the fake kernels and the Triton backend ----------------------------------------


class Layout(NamedTuple):
    """x viewed as [B][R][C][S] (dense, in memory order), one statistics group per (b, c)."""

    B: int
    R: int
    C: int
    S: int
    channels_last: bool

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def layout(x: Tensor, instance: bool) -> Layout:
    """Batch norm: B = 1; instance norm: B = N. channels_last 4-d tensors keep their layout (S = 1)."""
    n, c = x.shape[:2]
    spatial = x[0, 0].numel() if n * c else 0
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    b = n if instance else 1
    if channels_last:
        return Layout(b, spatial if instance else n * spatial, c, 1, True)
    return Layout(b, 1 if instance else n, c, spatial, False)


# --- Triton backend: custom ops around the kernels of deepfast.kernels.norm_leaky_relu ---------------------


def _dense(*tensors: Tensor | None) -> list[Tensor | None]:
    return [None if t is None else t.contiguous() for t in tensors]


@torch.library.custom_op("deepfast_triton::norm_leaky_relu", mutates_args=())
def _triton_forward(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor | None,
    var: Tensor | None,
    instance: bool,
    eps: float,
    slope: float,
    inplace: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    from deepfast.kernels import norm_leaky_relu as kernels

    lay = layout(x, instance)
    return kernels.forward(
        x.contiguous(memory_format=lay.memory_format), *_dense(weight, bias, mean, var), lay[:4], eps, slope, inplace
    )


@torch.library.custom_op("deepfast_triton::norm_leaky_relu_backward", mutates_args=())
def _triton_backward(
    grad_y: Tensor,
    saved: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    batch_stats: bool,
    instance: bool,
    eps: float,
    slope: float,
    inplace: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    from deepfast.kernels import norm_leaky_relu as kernels

    lay = layout(saved, instance)
    fmt = lay.memory_format
    return kernels.backward(
        grad_y.contiguous(memory_format=fmt),
        saved.contiguous(memory_format=fmt),
        *_dense(weight, bias, mean, var),
        lay[:4],
        batch_stats,
        eps,
        slope,
        inplace,
    )


# --- fake kernels and autograd, shared by the compiled (cpp/cuda) and Triton ops ---------------------


def _fake_forward(x, weight, bias, mean, var, instance, eps, slope, inplace):
    lay = layout(x, instance)
    stats = x.new_empty(lay.B * lay.C, dtype=acc_dtype(x))
    return torch.empty_like(x, memory_format=lay.memory_format), stats, torch.empty_like(stats)


def _fake_backward(grad_y, saved, weight, bias, mean, var, batch_stats, instance, eps, slope, inplace):
    lay = layout(saved, instance)
    grad = saved.new_empty(lay.C, dtype=acc_dtype(saved))
    return torch.empty_like(saved, memory_format=lay.memory_format), grad, torch.empty_like(grad)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, mean, _, instance, eps, slope, inplace = inputs
    y, mean_out, var_out = output
    ctx.mark_non_differentiable(mean_out, var_out)
    ctx.save_for_backward(y if inplace else x, weight, bias, mean_out, var_out)
    ctx.args = (mean is None, instance, eps, slope, inplace)


def _backward(ctx, backward_op, grad_y: Tensor, _grad_mean: Tensor, _grad_var: Tensor) -> tuple:
    saved, weight, bias, mean, var = ctx.saved_tensors
    dx, dweight, dbias = backward_op(grad_y, saved, weight, bias, mean, var, *ctx.args)
    dweight = dweight.to(weight.dtype) if ctx.needs_input_grad[1] else None
    dbias = dbias.to(bias.dtype) if ctx.needs_input_grad[2] else None
    return dx, dweight, dbias, None, None, None, None, None, None


register_op_pair(
    "norm_leaky_relu",
    "norm_leaky_relu_backward",
    fakes=(_fake_forward, _fake_backward),
    autograd=(_setup_context, _backward),
)
