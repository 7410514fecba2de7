"""Benchmarks of the fused norm + LeakyReLU ops (deepfast.ops.norm_leaky_relu).

Rows:
  op "batch_norm_leaky_relu"  BatchNorm2d (training: batch statistics, running-stat update) + LeakyReLU(0.2)
  op "instance_norm_leaky_relu"  InstanceNorm2d(affine=True) + LeakyReLU(0.2), at (16, 64, 128, 128) only
  shapes   (64, 128, 32, 32), (16, 64, 128, 128), (1, 256, 64, 64), (256, 64, 56, 56) float32, NCHW and
           channels_last (shape label "... cl"); the last three are ``large`` (not in --quick); the last
           (ResNet's first block at batch 256) is the GPU runbook's headline row
  modes    forward            y = f(x), x needs no grad
           forward+backward   y = f(x) with x, weight, bias requiring grad, then
                              torch.autograd.grad(y, (x, weight, bias), g) with a random g
  impls    eager              the nn module pair (nn.BatchNorm2d / nn.InstanceNorm2d, nn.LeakyReLU)
           compile            torch.compile of that pair (static shapes), compiled and warmed up first
           cpp / cuda / triton  the fused layer under use_backend(name), for each backend that runs on
                              the device (never the Triton interpreter); "<backend> inplace" with inplace=True
  train step (6 blocks)  forward+backward of 6 x (Conv2d 3x3 -> norm -> LeakyReLU), 32 channels,
                         (8, 32, 64, 64): eager pair vs fused vs fused in-place; the note gives the
                         bytes autograd saves for backward (activation memory), in all and for the
                         norm + activation part (all minus the same stack of convs alone).

Least bytes moved, float32: forward reads x and writes y (2 tensors; the statistics pass reads x once
more, not counted); forward+backward also reads grad_y and x (or y) and writes grad_x (5 tensors).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepfast
from benchmarks.conftest import backend_impls, bench_device, measure, shape_params
from deepfast._memory import STACKS, conv_stack, saved_bytes
from deepfast.nn import BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d

SHAPES = shape_params((64, 128, 32, 32), (16, 64, 128, 128), (1, 256, 64, 64), (256, 64, 56, 56))
MODES = ("forward", "forward+backward")
BACKENDS = backend_impls(bench_device())
IMPLS = ("eager", "compile", *BACKENDS, *(f"{b} inplace" for b in BACKENDS))
TENSORS_MOVED = {"forward": 2, "forward+backward": 5}


def _modules(norm: str, channels: int, impl: str, device) -> tuple[nn.Module, str | None]:
    """(module, backend to force or None) for one row."""
    torch.manual_seed(0)
    if impl in ("eager", "compile"):
        first = nn.BatchNorm2d(channels) if norm == "batch" else nn.InstanceNorm2d(channels, affine=True)
        module = nn.Sequential(first, nn.LeakyReLU(0.2)).to(device)
        if impl == "compile":
            torch._dynamo.reset()
            module = torch.compile(module, dynamic=False)
        return module, None
    backend, _, inplace = impl.partition(" ")
    layer = (
        BatchNormLeakyReLU2d(channels, 0.2, inplace=bool(inplace))
        if norm == "batch"
        else (InstanceNormLeakyReLU2d(channels, 0.2, affine=True, inplace=bool(inplace)))
    )
    return layer.to(device), backend


def _run(benchmark, device, copy_bandwidth, norm, shape, channels_last, mode, impl):
    module, backend = _modules(norm, shape[1], impl, device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, device=device, generator=gen)
    grad = torch.randn(shape, device=device, generator=gen)
    if channels_last:
        x, grad = x.to(memory_format=torch.channels_last), grad.to(memory_format=torch.channels_last)
    backward = mode == "forward+backward"
    x.requires_grad_(backward)
    params = [x, *module.parameters()]

    def step():
        y = module(x)
        return torch.autograd.grad(y, params, grad) if backward else y

    with deepfast.use_backend(backend or "auto"):
        measure(
            benchmark,
            step,
            device=device,
            copy_bandwidth=copy_bandwidth,
            bytes_moved=TENSORS_MOVED[mode] * x.numel() * x.element_size(),
            op=f"{norm}_norm_leaky_relu",
            shape="x".join(map(str, shape)) + (" cl" if channels_last else ""),
            mode=mode,
            impl=impl,
            role=impl if " " not in impl else None,
            dtype="float32",
        )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_leaky_relu(benchmark, device, copy_bandwidth, shape, channels_last, mode, impl):
    _run(benchmark, device, copy_bandwidth, "batch", shape, channels_last, mode, impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", shape_params((16, 64, 128, 128)))
def test_instance_norm_leaky_relu(benchmark, device, copy_bandwidth, shape, mode, impl):
    _run(benchmark, device, copy_bandwidth, "instance", shape, False, mode, impl)


# --- one training step of a conv stack: time and activation memory --------------------------------------

STACK_SHAPE = (8, 32, 64, 64)


def _memory_note(device) -> str:
    x = torch.randn(STACK_SHAPE, device=device, requires_grad=True)
    saved = {name: saved_bytes(conv_stack(name).to(device), x) for name in STACKS}
    part = {name: saved[name] - saved["convs alone"] for name in ("eager", "fused", "fused inplace")}
    mb = lambda n: f"{n / 2**20:.1f} MB"  # noqa: E731
    return (
        f"activation memory of one training step of 6 x (conv 3x3, BN, LeakyReLU) at {STACK_SHAPE} "
        "(bytes autograd saves for backward): "
        + ", ".join(
            f"{name} {mb(saved[name])} (norm+act part {mb(part[name])}, "
            f"{100 * part[name] / part['eager']:.0f}% of eager)"
            for name in part
        )
    )


@pytest.mark.parametrize("impl", ["eager", *(f"{b}{mode}" for b in BACKENDS for mode in ("", " inplace"))])
def test_train_step_memory(benchmark, device, copy_bandwidth, impl):
    backend, _, inplace = impl.partition(" ")
    model = conv_stack("eager" if impl == "eager" else "fused inplace" if inplace else "fused").to(device)
    x = torch.randn(STACK_SHAPE, device=device)
    note = _memory_note(device)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    with deepfast.use_backend("auto" if impl == "eager" else backend):
        measure(
            benchmark,
            step,
            device=device,
            copy_bandwidth=copy_bandwidth,
            bytes_moved=0,
            op="conv_bn_stack",
            shape="x".join(map(str, STACK_SHAPE)),
            mode="train step (6 blocks)",
            impl=impl,
            role=impl if " " not in impl else None,
            dtype="float32",
            note=note,
        )
