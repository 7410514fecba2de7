"""Fused cycle-consistency L1 loss: weight * mean (or sum) of |reconstructed - original|.

    loss          = weight * 1/N * sum_i |rec_i - orig_i|          reduction="mean" (N = numel)
                  = weight * sum_i |rec_i - orig_i|                reduction="sum"
    grad_rec_i    = grad * weight / N * sign(rec_i - orig_i)       (/ N for "mean" only; 0 where equal)
    grad_orig_i   = -grad_rec_i

Backends: torch (the reference below: weight * F.l1_loss), cpp and cuda (torch.ops.deepfast.cycle_l1,
csrc/), triton (torch.ops.deepfast_triton.cycle_l1, kernels/cycle_l1.py). The compiled backends make one
pass forward (a deterministic reduction, no difference tensor) and save rec and orig; the backward is
one pass that writes only the gradients autograd needs (output_mask).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from deepfast import backends
from deepfast._validation import check_choice, check_finite_float, check_float, check_like, in_float32
from deepfast.ops._register import register_op_pair

REDUCTIONS = ("mean", "sum")


def cycle_l1_reference(rec: Tensor, orig: Tensor, weight: float = 1.0, reduction: str = "mean") -> Tensor:
    """The definition of the op, in plain torch (the ``torch`` backend, and the spec of the others)."""
    return weight * F.l1_loss(rec, orig, reduction=reduction)


def cycle_l1(reconstructed: Tensor, original: Tensor, *, weight: float = 1.0, reduction: str = "mean") -> Tensor:
    """Weighted L1 distance between a reconstruction and the original, the cycle-consistency term of CycleGAN.

    Args:
        reconstructed, original: floating tensors of one shape, dtype and device, any shape and layout
            (NCHW, channels_last, non-contiguous), e.g. (N, C, H, W) images. float32, float16 and
            bfloat16 compute in float32; float64 in float64.
        weight: a finite Python float multiplying the loss (lambda of CycleGAN).
        reduction: "mean" (over all elements; NaN for empty tensors, as torch) or "sum".

    Returns:
        The 0-dim loss, of the dtype of ``reconstructed``. The sum is deterministic: the same inputs
        give the same bits on the same device. Gradients flow to both inputs; only those that require
        grad are computed.
    """
    check_float(reconstructed, "reconstructed")
    check_like(original, "original", reconstructed, "reconstructed")
    check_finite_float(weight, "weight")
    check_choice(reduction, "reduction", REDUCTIONS)
    backend = backends.select(reconstructed.device)
    if backend == "torch":
        return in_float32(cycle_l1_reference, reconstructed, original, weight=weight, reduction=reduction)
    op = torch.ops.deepfast_triton.cycle_l1 if backend == "triton" else torch.ops.deepfast.cycle_l1
    return op(reconstructed, original, _scale(reconstructed, weight, reduction))


def _scale(rec: Tensor, weight: float, reduction: str) -> float:
    """Factor applied to sum(|rec - orig|): weight, or weight / numel (NaN when empty, as torch.mean gives)."""
    if reduction == "sum":
        return float(weight)
    return weight / rec.numel() if rec.numel() else math.nan


# --- Triton backend: custom ops around the kernels of deepfast.kernels.cycle_l1 -----------------------


@torch.library.custom_op("deepfast_triton::cycle_l1", mutates_args=())
def _triton_forward(rec: Tensor, orig: Tensor, scale: float) -> Tensor:
    from deepfast.kernels import cycle_l1 as kernels

    return kernels.forward(rec, orig, scale)


@torch.library.custom_op(
    "deepfast_triton::cycle_l1_backward",
    mutates_args=(),
    schema="(Tensor grad, Tensor rec, Tensor orig, float scale, bool[2] output_mask) -> (Tensor?, Tensor?)",
)
def _triton_backward(
    grad: Tensor, rec: Tensor, orig: Tensor, scale: float, output_mask: list[bool]
) -> tuple[Tensor | None, Tensor | None]:
    from deepfast.kernels import cycle_l1 as kernels

    return kernels.backward(grad, rec, orig, scale, output_mask)


# --- fake kernels and autograd, shared by the compiled (cpp/cuda) and Triton ops ---------------------


def _fake_forward(rec: Tensor, orig: Tensor, scale: float) -> Tensor:
    return rec.new_empty(())


def _fake_backward(
    grad: Tensor, rec: Tensor, orig: Tensor, scale: float, output_mask: list[bool]
) -> tuple[Tensor | None, Tensor | None]:
    grad_rec, grad_orig = (torch.empty_like(rec) if wanted else None for wanted in output_mask)
    return grad_rec, grad_orig


def _setup_context(ctx, inputs, output) -> None:
    rec, orig, scale = inputs
    ctx.save_for_backward(rec, orig)
    ctx.scale = scale


def _backward(ctx, backward_op, grad: Tensor):
    rec, orig = ctx.saved_tensors
    grad_rec, grad_orig = backward_op(grad, rec, orig, ctx.scale, list(ctx.needs_input_grad[:2]))
    return grad_rec, grad_orig, None


register_op_pair(
    "cycle_l1", "cycle_l1_backward", fakes=(_fake_forward, _fake_backward), autograd=(_setup_context, _backward)
)
