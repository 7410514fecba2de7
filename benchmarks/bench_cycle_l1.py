"""Benchmarks of deepfast.ops.cycle_l1 (fused weighted L1, the cycle-consistency loss of CycleGAN).

Rows (op "cycle_l1"):
  shapes   (128, 3, 32, 32), (64, 3, 256, 256), (16, 3, 512, 512) float32 NCHW images
  modes    forward            loss = f(rec, orig); inputs need no grad (evaluation)
           forward+backward   rec requires grad, orig does not (real data, as in CycleGAN), then
                              torch.autograd.grad(loss, rec)
  impls    eager              deepfast.ops.cycle_l1_reference (weight * F.l1_loss) in eager torch
           compile            torch.compile of that reference (static shapes), compiled and warmed
                              up before timing
           cpp / cuda / triton  deepfast.ops.cycle_l1 under use_backend(name), for each backend that
                              runs on the device (never the Triton interpreter)

Least bytes moved, float32: forward reads rec and orig (2 tensors; the loss is a scalar);
forward+backward also reads rec and orig again and writes grad_rec (5 tensors).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import backend_impls, bench_device, measure_impl, shape_params
from deepfast.ops import cycle_l1, cycle_l1_reference

OP = "cycle_l1"
SHAPES = shape_params((128, 3, 32, 32), (64, 3, 256, 256), (16, 3, 512, 512))
MODES = ("forward", "forward+backward")
IMPLS = ("eager", "compile", *backend_impls(bench_device()))
TENSORS_MOVED = {"forward": 2, "forward+backward": 5}
WEIGHT = 10.0  # lambda of CycleGAN


def _reference(rec, orig):
    return cycle_l1_reference(rec, orig, WEIGHT)


def _fused(rec, orig):
    return cycle_l1(rec, orig, weight=WEIGHT)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_cycle_l1(benchmark, device, copy_bandwidth, shape, mode, impl):
    backward = mode == "forward+backward"
    gen = torch.Generator(device=device).manual_seed(0)
    rec = torch.randn(shape, device=device, generator=gen).requires_grad_(backward)
    orig = torch.randn(shape, device=device, generator=gen)

    def make_step(fn):
        def step():
            loss = fn(rec, orig)
            return (loss, *torch.autograd.grad(loss, rec)) if backward else (loss,)

        return step

    nbytes = TENSORS_MOVED[mode] * rec.numel() * rec.element_size()
    # the gradients are +-WEIGHT / numel: compared relatively
    measure_impl(
        benchmark,
        impl,
        _reference,
        _fused,
        make_step,
        atol=0.0,
        device=device,
        copy_bandwidth=copy_bandwidth,
        bytes_moved=nbytes,
        op=OP,
        shape=shape,
        mode=mode,
        dtype="float32",
    )
