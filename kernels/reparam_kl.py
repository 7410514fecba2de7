"""Triton kernels of the fused reparameterization + KL op (math of deepfast/ops/reparam_kl.py).

Math runs in float32 (float64 for float64 tensors); indices are 64-bit. The reduced kl is summed per
program into a buffer, then summed in a fixed order, so it is deterministic.
"""

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _forward_kernel(mu_ptr, logvar_ptr, eps_ptr, z_ptr, kl_ptr, partial_ptr, n,
                    REDUCE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(ACC)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(ACC)
    eps = tl.load(eps_ptr + offs, mask=mask, other=0.0).to(ACC)
    s = tl.exp(0.5 * logvar)
    tl.store(z_ptr + offs, (mu + eps * s).to(z_ptr.dtype.element_ty), mask=mask)
    kl = -0.5 * (1.0 + logvar - mu * mu - s * s)
    if REDUCE:
        tl.store(partial_ptr + pid, tl.sum(tl.where(mask, kl, 0.0), axis=0))
    else:
        tl.store(kl_ptr + offs, kl.to(kl_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(gz_ptr, gkl_ptr, scale, mu_ptr, logvar_ptr, eps_ptr, dmu_ptr, dlogvar_ptr, n,
                     REDUCED: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gz = tl.load(gz_ptr + offs, mask=mask, other=0.0).to(ACC)
    if REDUCED:
        gkl = tl.load(gkl_ptr).to(ACC) * scale
    else:
        gkl = tl.load(gkl_ptr + offs, mask=mask, other=0.0).to(ACC)
    mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(ACC)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(ACC)
    eps = tl.load(eps_ptr + offs, mask=mask, other=0.0).to(ACC)
    s = tl.exp(0.5 * logvar)
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
        _backward_kernel[(triton.cdiv(n, BLOCK),)](grad_z, grad_kl, scale, mu, logvar, eps, dmu, dlogvar, n,
                                                   REDUCED=reduced, ACC=_acc(mu.dtype)[0], BLOCK=BLOCK)
    return dmu, dlogvar
