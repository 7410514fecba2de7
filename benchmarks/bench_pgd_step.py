"""Benchmarks of deepfast.ops.pgd_step and pgd_step_ (the fused PGD projection step of adversarial attacks).

Rows (op "pgd_step"):
  shapes   (128, 3, 32, 32), (64, 3, 256, 256), (16, 3, 512, 512) float32 NCHW images, x_orig in [0, 1],
           x_adv a random start around it, grad ~ N(0, 1), box (0, 1)
  modes    Linf               norm "inf", eps 8/255, step_size 2/255
           L2                 norm "2", eps 0.5, step_size 0.1
  impls    eager              deepfast.ops.pgd_step_reference (the formulas in plain torch) in eager torch
           compile            torch.compile of that reference (static shapes), compiled and warmed up
                              before timing
           cpp / cuda / triton  deepfast.ops.pgd_step under use_backend(name), for each backend that runs
                              on the device (never the Triton interpreter): a new output tensor per call
           <backend> in-place deepfast.ops.pgd_step_ on one fixed x_adv (updated by every call: its
                              values drift but stay in the ball)

Least bytes moved, float32: Linf reads x_adv, grad, x_orig and writes the result (4 tensors); L2, with
its three passes (norm of grad; norm of d; the write), reads grad, then x_adv, grad, x_orig twice, and
writes the result (8 tensors).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import backend_impls, bench_device, measure_impl, shape_params
from deepfast.ops import pgd_random_start, pgd_step, pgd_step_, pgd_step_reference

OP = "pgd_step"
SHAPES = shape_params((128, 3, 32, 32), (64, 3, 256, 256), (16, 3, 512, 512))
MODES = {"Linf": dict(norm="inf", eps=8 / 255, step_size=2 / 255), "L2": dict(norm="2", eps=0.5, step_size=0.1)}
BACKENDS = backend_impls(bench_device())
IMPLS = ("eager", "compile", *BACKENDS, *(f"{b} in-place" for b in BACKENDS))
TENSORS_MOVED = {"Linf": 4, "L2": 8}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_pgd_step(benchmark, device, copy_bandwidth, shape, mode, impl):
    args = MODES[mode]
    gen = torch.Generator(device=device).manual_seed(0)
    x_orig = torch.rand(shape, device=device, generator=gen)
    x_adv = pgd_random_start(x_orig, args["eps"], norm=args["norm"], generator=gen)
    grad = torch.randn(shape, device=device, generator=gen)

    def reference(x_adv, grad, x_orig):
        return pgd_step_reference(x_adv, grad, x_orig, args["step_size"], args["eps"], args["norm"])

    inplace = impl.endswith(" in-place")
    fused = pgd_step_ if inplace else pgd_step

    def fused_step(x_adv, grad, x_orig):
        return fused(x_adv, grad, x_orig, step_size=args["step_size"], eps=args["eps"], norm=args["norm"])

    def make_step(fn):
        return lambda: (fn(x_adv, grad, x_orig),)

    measure_impl(
        benchmark,
        impl.removesuffix(" in-place"),
        reference,
        fused_step,
        make_step,
        label=impl,
        device=device,
        copy_bandwidth=copy_bandwidth,
        op=OP,
        shape=shape,
        mode=mode,
        dtype="float32",
        bytes_moved=TENSORS_MOVED[mode] * x_orig.numel() * x_orig.element_size(),
    )
