"""Triton kernels of the fused cycle-consistency L1 loss (math of deepfast/ops/cycle_l1.py).

    loss     = scale * sum_i |rec_i - orig_i|
    grad_rec = grad * scale * sign(rec - orig),   grad_orig = -grad_rec

rec and orig are read as flat memory, in one dense layout (copied into it when they are not). Math
runs in float32 (float64 for float64 tensors); sizes are int64 arguments, so offsets are 64-bit;
``scale`` is a float64 argument.
The loss is summed per program into a buffer, then summed in a fixed order, so it is deterministic.
"""

import torch
import triton
import triton.language as tl

from deepfast.kernels._device import on_device

BLOCK = 1024


@triton.jit
def _forward_kernel(rec_ptr, orig_ptr, partial_ptr, n: tl.int64, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    rec = tl.load(rec_ptr + offs, mask=mask, other=0.0).to(ACC)
    orig = tl.load(orig_ptr + offs, mask=mask, other=0.0).to(ACC)
    tl.store(partial_ptr + pid, tl.sum(tl.abs(rec - orig), axis=0))


@triton.jit
def _backward_kernel(
    grad_ptr,
    scale: tl.float64,
    rec_ptr,
    orig_ptr,
    grad_rec_ptr,
    grad_orig_ptr,
    n: tl.int64,
    WRITE_REC: tl.constexpr,
    WRITE_ORIG: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    c = (tl.load(grad_ptr).to(ACC).to(tl.float64) * scale).to(ACC)  # grad * scale in float64, as in csrc/
    rec = tl.load(rec_ptr + offs, mask=mask, other=0.0).to(ACC)
    diff = rec - tl.load(orig_ptr + offs, mask=mask, other=0.0).to(ACC)
    g = tl.where(diff > 0, c, tl.where(diff < 0, -c, 0.0))
    if WRITE_REC:
        tl.store(grad_rec_ptr + offs, g.to(grad_rec_ptr.dtype.element_ty), mask=mask)
    if WRITE_ORIG:
        tl.store(grad_orig_ptr + offs, (-g).to(grad_orig_ptr.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _is_dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill its memory exactly once (a permutation of a contiguous layout)."""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(rec: torch.Tensor, orig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rec and orig in one dense memory layout, so that flat index i is the same element of both (as
    csrc/cycle_l1_args.h does): rec's own when rec is non-overlapping and dense, else that of
    torch.empty_like(rec); a tensor not in it is copied (nothing is allocated when both are in it)."""
    if rec.numel() and not _is_dense(rec):
        rec = torch.empty_like(rec).copy_(rec)
    if orig.stride() != rec.stride():
        orig = torch.empty_like(rec).copy_(orig)  # empty_like keeps the strides of a dense rec
    return rec, orig


def forward(rec: torch.Tensor, orig: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * sum(|rec - orig|) as a 0-dim tensor of the dtype of rec."""
    rec, orig = _same_layout(rec, orig)
    n = rec.numel()
    grid = (triton.cdiv(n, BLOCK),)
    acc_tl, acc_torch = _acc(rec.dtype)
    partial = torch.empty(grid[0], dtype=acc_torch, device=rec.device)
    if n:
        with on_device(rec):
            _forward_kernel[grid](rec, orig, partial, n, ACC=acc_tl, BLOCK=BLOCK)
    return (partial.sum() * scale).to(rec.dtype)


def backward(
    grad: torch.Tensor, rec: torch.Tensor, orig: torch.Tensor, scale: float, output_mask: list[bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(grad_rec, grad_orig) = (g, -g) with g = grad * scale * sign(rec - orig), grad 0-dim; only those
    output_mask asks for (None for the others), in the layout of _same_layout."""
    rec, orig = _same_layout(rec, orig)
    grad_rec, grad_orig = (torch.empty_like(rec) if wanted else None for wanted in output_mask)
    n = rec.numel()
    if n and (grad_rec is not None or grad_orig is not None):
        with on_device(rec):
            _backward_kernel[(triton.cdiv(n, BLOCK),)](
                grad,
                scale,
                rec,
                orig,
                grad_rec,
                grad_orig,
                n,
                WRITE_REC=grad_rec is not None,
                WRITE_ORIG=grad_orig is not None,
                ACC=_acc(rec.dtype)[0],
                BLOCK=BLOCK,
            )
    return grad_rec, grad_orig
