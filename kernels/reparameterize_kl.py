"""Triton kernels of the fused reparameterization + KL op (math of deepfast/ops/reparameterize_kl.py).

Math runs in float32 (float64 for float64 tensors). exp in float32 is ``_exp_f32``, the algorithm of
csrc/common.h exp_f32 (relative error below 1e-8 before rounding): tl.exp is ex2.approx of a rounded
product there, 4e-6 off at |logvar| = 85, and libdevice does not run in the interpreter. Sizes are
int64 arguments, so offsets are 64-bit; ``scale`` is a float64 argument. The reduced kl is summed per program into a buffer, then summed in a
fixed order, so it is deterministic.
"""

import torch
import triton
import triton.language as tl

from deepfast.kernels._device import on_device

BLOCK = 1024


@triton.jit
def _exp_f32(x):
    """exp(x) in float32: x = n ln2 + r (Cody-Waite, |r| <= ln2 / 2), e^r by a degree-7 Taylor polynomial,
    2^n from its bits. Below FLT_MIN it is 0, above FLT_MAX inf; NaN stays NaN."""
    t = x * 1.44269504088896341
    t = tl.where(t < -126.0, -126.0, tl.where(t > 127.0, 127.0, t))
    n = (t + 12582912.0) - 12582912.0  # 1.5 * 2^23: rounds to an integer
    r = (x - n * 0.693145751953125) - n * 1.42860682030941723e-6  # ln2 = hi + lo, n * hi exact
    p = 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    y = p * ((n.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)
    y = tl.where(x < -87.33654, 0.0, y)
    y = tl.where(x > 88.72283, float("inf"), y)
    return tl.where(x != x, x, y)


@triton.jit
def _exp(x, ACC: tl.constexpr):
    if ACC == tl.float64:
        return tl.exp(x)  # libdevice's exp in float64
    else:
        return _exp_f32(x)


@triton.jit
def _forward_kernel(
    mu_ptr,
    logvar_ptr,
    eps_ptr,
    z_ptr,
    kl_ptr,
    partial_ptr,
    n: tl.int64,
    REDUCE: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(ACC)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(ACC)
    eps = tl.load(eps_ptr + offs, mask=mask, other=0.0).to(ACC)
    s = _exp(0.5 * logvar, ACC)
    tl.store(z_ptr + offs, (mu + eps * s).to(z_ptr.dtype.element_ty), mask=mask)
    kl = -0.5 * (1.0 + logvar - mu * mu - s * s)
    if REDUCE:
        tl.store(partial_ptr + pid, tl.sum(tl.where(mask, kl, 0.0), axis=0))
    else:
        tl.store(kl_ptr + offs, kl.to(kl_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(
    gz_ptr,
    gkl_ptr,
    scale: tl.float64,
    mu_ptr,
    logvar_ptr,
    eps_ptr,
    dmu_ptr,
    dlogvar_ptr,
    n: tl.int64,
    REDUCED: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gz = tl.load(gz_ptr + offs, mask=mask, other=0.0).to(ACC)
    if REDUCED:  # grad_kl * scale in float64, as in csrc/
        gkl = (tl.load(gkl_ptr).to(ACC).to(tl.float64) * scale).to(ACC)
    else:
        gkl = tl.load(gkl_ptr + offs, mask=mask, other=0.0).to(ACC)
    mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(ACC)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(ACC)
    eps = tl.load(eps_ptr + offs, mask=mask, other=0.0).to(ACC)
    s = _exp(0.5 * logvar, ACC)
    tl.store(dmu_ptr + offs, (gz + gkl * mu).to(dmu_ptr.dtype.element_ty), mask=mask)
    dlogvar = 0.5 * (gz * eps * s + gkl * (s * s - 1.0))
    tl.store(dlogvar_ptr + offs, dlogvar.to(dlogvar_ptr.dtype.element_ty), mask=mask)


def _acc(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def forward(mu, logvar, eps, reduce: bool, scale: float):
    """(z, kl) of contiguous copies of the inputs; kl is scale * sum when reduce, else per element."""
    mu, logvar, eps = mu.contiguous(), logvar.contiguous(), eps.contiguous()
    n = mu.numel()
    grid = (triton.cdiv(n, BLOCK),)
    acc_tl, acc_torch = _acc(mu.dtype)
    z = torch.empty_like(mu)
    if reduce:
        partial = torch.empty(grid[0], dtype=acc_torch, device=mu.device)
        kl = None
    else:
        partial, kl = None, torch.empty_like(mu)
    if n:
        with on_device(mu):
            _forward_kernel[grid](mu, logvar, eps, z, kl, partial, n, REDUCE=reduce, ACC=acc_tl, BLOCK=BLOCK)
    if reduce:
        kl = (partial.sum() * scale).to(mu.dtype)
    return z, kl


def backward(grad_z, grad_kl, mu, logvar, eps, scale: float):
    """(grad_mu, grad_logvar); grad_kl is 0-dim (multiplied by scale) or shaped like mu."""
    grad_z, grad_kl = grad_z.contiguous(), grad_kl.contiguous()
    mu, logvar, eps = mu.contiguous(), logvar.contiguous(), eps.contiguous()
    n = mu.numel()
    dmu, dlogvar = torch.empty_like(mu), torch.empty_like(mu)
    reduced = grad_kl.dim() == 0 and mu.dim() != 0
    if n:
        with on_device(mu):
            _backward_kernel[(triton.cdiv(n, BLOCK),)](
                grad_z,
                grad_kl,
                scale,
                mu,
                logvar,
                eps,
                dmu,
                dlogvar,
                n,
                REDUCED=reduced,
                ACC=_acc(mu.dtype)[0],
                BLOCK=BLOCK,
            )
    return dmu, dlogvar
