"""Benchmarks of deepfast.ops.reparameterize_kl (fused reparameterization + KL to N(0, I)).

Rows (op "reparameterize_kl"):
  shapes   (256, 128), (4096, 512), (65536, 512) float32; the last is ``large`` (not in --quick)
  modes    forward            z, kl = f(mu, logvar, eps); inputs need no grad (inference)
           forward+backward   the same with mu, logvar requiring grad, then
                              torch.autograd.grad((z, kl), (mu, logvar), (g, 1)) with a random g
  impls    eager              deepfast.ops.reparameterize_kl_reference in eager torch
           compile            torch.compile of that reference (static shapes), compiled and warmed
                              up before timing
           cpp / cuda / triton  deepfast.reparameterize_kl under use_backend(name), for each backend
                              that runs on the device (never the Triton interpreter)
  call overhead  at (256, 128): one eager torch.mul of two such tensors vs the deepfast call
                 (forward, backend chosen automatically).

Least bytes moved, float32: forward reads mu, logvar, eps and writes z (4 tensors; kl is a scalar);
forward+backward also reads grad_z, mu, logvar, eps and writes dmu, dlogvar (10 tensors).
"""

from __future__ import annotations

import pytest
import torch

import deepfast
from benchmarks.conftest import backend_impls, bench_device, measure, measure_impl, shape_params
from deepfast.ops import reparameterize_kl, reparameterize_kl_reference

OP = "reparameterize_kl"
SHAPES = shape_params((256, 128), (4096, 512), (65536, 512))
MODES = ("forward", "forward+backward")
IMPLS = ("eager", "compile", *backend_impls(bench_device()))
TENSORS_MOVED = {"forward": 4, "forward+backward": 10}


def _inputs(shape, device, requires_grad):
    gen = torch.Generator(device=device).manual_seed(0)
    mu = torch.randn(shape, device=device, generator=gen)
    logvar = 0.5 * torch.randn(shape, device=device, generator=gen)
    eps = torch.randn(shape, device=device, generator=gen)
    grad_z = torch.randn(shape, device=device, generator=gen)
    mu.requires_grad_(requires_grad)
    logvar.requires_grad_(requires_grad)
    return mu, logvar, eps, grad_z


def _reference(mu, logvar, eps):
    return reparameterize_kl_reference(mu, logvar, eps, "batchmean")


def _fused(mu, logvar, eps):
    return reparameterize_kl(mu, logvar, eps, reduction="batchmean")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_reparameterize_kl(benchmark, device, copy_bandwidth, shape, mode, impl):
    backward = mode == "forward+backward"
    mu, logvar, eps, grad_z = _inputs(shape, device, requires_grad=backward)
    one = torch.ones((), device=device)

    def make_step(fn):
        if not backward:
            return lambda: fn(mu, logvar, eps)

        def step():
            z, kl = fn(mu, logvar, eps)
            return torch.autograd.grad((z, kl), (mu, logvar), (grad_z, one))

        return step

    nbytes = TENSORS_MOVED[mode] * mu.numel() * mu.element_size()
    measure_impl(
        benchmark,
        impl,
        _reference,
        _fused,
        make_step,
        device=device,
        copy_bandwidth=copy_bandwidth,
        bytes_moved=nbytes,
        op=OP,
        shape=shape,
        mode=mode,
        dtype="float32",
    )


@pytest.mark.parametrize("impl", ("torch.mul", "deepfast"))
def test_reparameterize_kl_call_overhead(benchmark, device, copy_bandwidth, impl):
    """Per-call cost at a small shape: the fused op against a single eager elementwise op."""
    shape = (256, 128)
    mu, logvar, eps, _ = _inputs(shape, device, requires_grad=False)
    nbytes = mu.numel() * mu.element_size()
    if impl == "torch.mul":
        label, role, moved = "torch.mul (1 eager op)", "eager", 3 * nbytes

        def step():
            return torch.mul(mu, eps)

    else:
        label, role, moved = f"deepfast ({deepfast.backends.select(device)})", None, 4 * nbytes

        def step():
            return reparameterize_kl(mu, logvar, eps, reduction="batchmean")

    measure(
        benchmark,
        step,
        device=device,
        copy_bandwidth=copy_bandwidth,
        bytes_moved=moved,
        op=OP,
        shape=shape,
        mode="call overhead",
        impl=label,
        role=role,
        dtype="float32",
        warmup=20,
        note="call overhead: 'vs eager' is (time of one eager torch.mul) / (time of the row); "
        "the target is >= 0.67 (within 1.5x of one eager elementwise op)",
    )
