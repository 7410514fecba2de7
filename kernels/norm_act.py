"""Triton kernels of the fused batch / instance norm + LeakyReLU ops (math of deepfast/ops/norm_act.py).

The data is viewed as [B][R][C][S] (see deepfast.ops.norm_act.layout) with one statistics group per
(b, c). ``_sums_kernel`` reduces each group (programs over (b, block of channels), a fixed loop
order, so deterministic): the shifted sums giving mean and biased variance, or the sums of dz and
dz * xhat of the backward. ``_apply_kernel`` is the elementwise pass: y forward, dx backward.
Math in float32 (float64 for float64 tensors); offsets are 64-bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024
STATS, FROM_X, FROM_Y = 0, 1, 2  # what _sums_kernel reduces / _apply_kernel computes


@triton.jit
def _affine(w_ptr, b_ptr, mean_ptr, var_ptr, c, g, mask, eps):
    """weight, bias, mean, 1/sqrt(var + eps) of channel c in group g, and z = scale * x + shift."""
    w = tl.load(w_ptr + c, mask=mask, other=1.0)
    bias = tl.load(b_ptr + c, mask=mask, other=0.0)
    mean = tl.load(mean_ptr + g, mask=mask, other=0.0)
    inv = 1.0 / tl.sqrt(tl.load(var_ptr + g, mask=mask, other=1.0) + eps)
    scale = w * inv
    return w, bias, mean, inv, scale, bias - mean * scale


@triton.jit
def _sums_kernel(a_ptr, dy_ptr, w_ptr, b_ptr, mean_ptr, var_ptr, out1_ptr, out2_ptr, R, C, S, eps, slope,
                 MODE: tl.constexpr, ACC: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    g = b * C + c
    m = R * S
    if MODE == STATS:
        shift = tl.load(a_ptr + (b * R * C + c) * S, mask=cmask, other=0.0).to(ACC)
    else:
        w, bias, mean, inv, scale, shift = _affine(w_ptr, b_ptr, mean_ptr, var_ptr, c, g, cmask, eps)
    acc1 = tl.zeros([BLOCK_K, BLOCK_C], dtype=ACC)
    acc2 = tl.zeros([BLOCK_K, BLOCK_C], dtype=ACC)
    for k0 in range(0, m, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        r = k // S
        s = k % S
        offs = ((b * R + r)[:, None] * C + c[None, :]) * S + s[:, None]
        mask = (k < m)[:, None] & cmask[None, :]
        a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(ACC)
        if MODE == STATS:
            d = tl.where(mask, a - shift[None, :], 0.0)
            acc1 += d
            acc2 += d * d
        else:
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
            if MODE == FROM_X:
                dz = tl.where(a * scale[None, :] + shift[None, :] > 0, dy, dy * slope)
                xhat = (a - mean[None, :]) * inv[None, :]
            else:
                dz = tl.where(a > 0, dy, dy * slope)
                xhat = (tl.where(a > 0, a, a / slope) - bias[None, :]) / w[None, :]
            acc1 += dz
            acc2 += dz * xhat
    s1 = tl.sum(acc1, axis=0)
    s2 = tl.sum(acc2, axis=0)
    if MODE == STATS:
        d = s1 / m
        tl.store(out1_ptr + g, shift + d, mask=cmask)
        tl.store(out2_ptr + g, tl.maximum(s2 / m - d * d, 0.0), mask=cmask)
    else:
        tl.store(out1_ptr + g, s1, mask=cmask)
        tl.store(out2_ptr + g, s2, mask=cmask)


@triton.jit
def _apply_kernel(a_ptr, dy_ptr, out_ptr, w_ptr, b_ptr, mean_ptr, var_ptr, s1_ptr, s2_ptr, n, R, C, S, eps, slope,
                  MODE: tl.constexpr, BATCH_STATS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    t = offs // S
    c = t % C
    g = (t // (R * C)) * C + c
    w, bias, mean, inv, scale, shift = _affine(w_ptr, b_ptr, mean_ptr, var_ptr, c, g, mask, eps)
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(ACC)
    if MODE == STATS:
        z = a * scale + shift
        tl.store(out_ptr + offs, tl.where(z > 0, z, z * slope).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
        if MODE == FROM_X:
            dz = tl.where(a * scale + shift > 0, dy, dy * slope)
        else:
            dz = tl.where(a > 0, dy, dy * slope)
        dx = scale * dz
        if BATCH_STATS:
            m = R * S
            alpha = scale * tl.load(s2_ptr + g, mask=mask, other=0.0) / m
            beta = scale * tl.load(s1_ptr + g, mask=mask, other=0.0) / m
            if MODE == FROM_X:  # xhat = (x - mean) * inv
                dx += -alpha * (a - mean) * inv - beta
            else:  # xhat = (z - b) / w
                dx += -alpha * (tl.where(a > 0, a, a / slope) - bias) / w - beta
        tl.store(out_ptr + offs, dx.to(out_ptr.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _blocks(S: int) -> tuple[int, int]:
    """(BLOCK_K, BLOCK_C) of _sums_kernel: along rows of S values, or across channels when S == 1."""
    return (BLOCK, 1) if S > 1 else (32, 32)


def _sums(mode: int, a, dy, w, b, mean, var, shape, eps: float, slope: float):
    B, R, C, S = shape
    acc_tl, acc_torch = _acc(a.dtype)
    out1 = torch.empty(B * C, dtype=acc_torch, device=a.device)
    out2 = torch.empty_like(out1)
    block_k, block_c = _blocks(S)
    if B * C:
        _sums_kernel[(B, triton.cdiv(C, block_c))](a, dy, w, b, mean, var, out1, out2, R, C, S, eps, slope,
                                                   MODE=mode, ACC=acc_tl, BLOCK_K=block_k, BLOCK_C=block_c)
    return out1, out2


def forward(x, w, b, mean, var, shape, eps: float, slope: float):
    """(y, mean, var) of dense x viewed as ``shape`` = (B, R, C, S); batch statistics when mean is None.

    w, b: (C,) in the accumulation dtype; mean, var: (B * C,) in it, or None.
    """
    B, R, C, S = shape
    if mean is None:
        mean, var = _sums(STATS, x, None, None, None, None, None, shape, eps, slope)
    y = torch.empty_like(x)
    n = x.numel()
    if n:
        _apply_kernel[(triton.cdiv(n, BLOCK),)](x, None, y, w, b, mean, var, None, None, n, R, C, S, eps, slope,
                                                MODE=STATS, BATCH_STATS=False, ACC=_acc(x.dtype)[0], BLOCK=BLOCK)
    return y, mean, var


def backward(grad_y, saved, w, b, mean, var, shape, batch_stats: bool, eps: float, slope: float, from_y: bool):
    """(grad_x, grad_weight, grad_bias); saved is x, or y when from_y (in-place mode)."""
    B, R, C, S = shape
    mode = FROM_Y if from_y else FROM_X
    s1, s2 = _sums(mode, saved, grad_y, w, b, mean, var, shape, eps, slope)
    dx = torch.empty_like(saved)
    n = saved.numel()
    if n:
        _apply_kernel[(triton.cdiv(n, BLOCK),)](saved, grad_y, dx, w, b, mean, var, s1, s2, n, R, C, S, eps, slope,
                                                MODE=mode, BATCH_STATS=batch_stats, ACC=_acc(saved.dtype)[0],
                                                BLOCK=BLOCK)
    return dx, s2.view(B, C).sum(0), s1.view(B, C).sum(0)
