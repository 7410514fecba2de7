"""Fused reparameterization + KL divergence to N(0, I), the sampling step and regulariser of a VAE.

    z  = mu + eps * exp(logvar / 2)
    kl = -1/2 * (1 + logvar - mu^2 - exp(logvar))      per element, then reduced

Backends: torch (the reference below), cpp and cuda (torch.ops.deepfast.reparameterize_kl, csrc/),
triton (torch.ops.deepfast_triton.reparameterize_kl, kernels/reparameterize_kl.py). The compiled backends make one
pass forward (z and the kl reduction) and one pass backward:

    dmu     = gz + gkl * mu
    dlogvar = 1/2 * (gz * eps * exp(logvar / 2) + gkl * (exp(logvar) - 1))

eps is drawn with torch.randn (reproducible under torch.manual_seed or ``generator``) and saved for
backward by every backend.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deepfast import backends
from deepfast._validation import check_choice, check_float, check_like, in_float32
from deepfast.ops._register import register_op_pair

REDUCTIONS = ("none", "sum", "mean", "batchmean")


def reparameterize_kl_reference(
    mu: Tensor, logvar: Tensor, eps: Tensor, reduction: str = "batchmean"
) -> tuple[Tensor, Tensor]:
    """The definition of the op, in plain torch (the ``torch`` backend, and the spec of the others)."""
    z = mu + eps * torch.exp(0.5 * logvar)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    if reduction == "none":
        return z, kl
    if reduction == "sum":
        return z, kl.sum()
    if reduction == "mean":
        return z, kl.mean()
    return z, kl.sum() / (mu.shape[0] if mu.dim() else 1)


def reparameterize_kl(
    mu: Tensor,
    logvar: Tensor,
    eps: Tensor | None = None,
    *,
    reduction: str = "batchmean",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample z ~ N(mu, exp(logvar)) by reparameterization and compute KL(N(mu, exp(logvar)) || N(0, I)).

    Args:
        mu, logvar: floating tensors of the same shape, dtype and device, e.g. (N, latent_dim).
            float32, float16 and bfloat16 compute in float32; float64 in float64.
        eps: standard normal noise of that shape; None draws it (with ``generator`` if given).
            eps gets no gradient (it must not require grad).
        reduction: "none" (kl per element, shape of mu), "sum", "mean" (over all elements) or
            "batchmean" (sum / mu.shape[0], the usual VAE term).

    Returns:
        (z, kl): z has the shape and dtype of mu; kl is 0-dim unless reduction="none".
    """
    check_float(mu, "mu")
    check_like(logvar, "logvar", mu, "mu")
    check_choice(reduction, "reduction", REDUCTIONS)
    if eps is None:
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
    else:
        check_like(eps, "eps", mu, "mu")
        if eps.requires_grad:
            raise ValueError("eps must not require grad: reparameterize_kl gives gradients to mu and logvar only")
    backend = backends.select(mu.device)
    if backend == "torch":
        return in_float32(reparameterize_kl_reference, mu, logvar, eps, reduction=reduction)
    reduce, scale = reduction != "none", _scale(mu, reduction)
    op = torch.ops.deepfast_triton.reparameterize_kl if backend == "triton" else torch.ops.deepfast.reparameterize_kl
    return op(mu, logvar, eps, reduce, scale)


def _scale(mu: Tensor, reduction: str) -> float:
    """Factor applied to sum(kl): 1, 1/numel or 1/batch (NaN for an empty mean, as torch.mean gives)."""
    if reduction in ("none", "sum"):
        return 1.0
    count = mu.numel() if reduction == "mean" else (mu.shape[0] if mu.dim() else 1)
    return 1.0 / count if count else math.nan


# --- Triton backend: custom ops around the kernels of deepfast.kernels.reparameterize_kl -------------------


@torch.library.custom_op("deepfast_triton::reparameterize_kl", mutates_args=())
def _triton_forward(mu: Tensor, logvar: Tensor, eps: Tensor, reduce: bool, scale: float) -> tuple[Tensor, Tensor]:
    from deepfast.kernels import reparameterize_kl as kernels

    return kernels.forward(mu, logvar, eps, reduce, scale)


@torch.library.custom_op("deepfast_triton::reparameterize_kl_backward", mutates_args=())
def _triton_backward(
    grad_z: Tensor, grad_kl: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    from deepfast.kernels import reparameterize_kl as kernels

    return kernels.backward(grad_z, grad_kl, mu, logvar, eps, scale)


# --- fake kernels and autograd, shared by the compiled (cpp/cuda) and Triton ops ---------------------


def _fake_forward(mu: Tensor, logvar: Tensor, eps: Tensor, reduce: bool, scale: float) -> tuple[Tensor, Tensor]:
    z = torch.empty_like(mu, memory_format=torch.contiguous_format)
    return z, mu.new_empty(()) if reduce else torch.empty_like(z)


def _fake_backward(
    grad_z: Tensor, grad_kl: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    grad = torch.empty_like(mu, memory_format=torch.contiguous_format)
    return grad, torch.empty_like(grad)


def _setup_context(ctx, inputs, output) -> None:
    mu, logvar, eps, _, scale = inputs
    ctx.save_for_backward(mu, logvar, eps)
    ctx.scale = scale


def _backward(ctx, backward_op, grad_z: Tensor, grad_kl: Tensor):
    mu, logvar, eps = ctx.saved_tensors
    grad_mu, grad_logvar = backward_op(grad_z, grad_kl, mu, logvar, eps, ctx.scale)
    return grad_mu, grad_logvar, None, None, None


register_op_pair(
    "reparameterize_kl",
    "reparameterize_kl_backward",
    fakes=(_fake_forward, _fake_backward),
    autograd=(_setup_context, _backward),
)
