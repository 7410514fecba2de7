"""Triton kernels of the PGD projection step (math of deepfast/ops/pgd_step.py and csrc/pgd_step.h).

The tensors are read in the memory format x_adv suggests (NCHW or channels_last: sample-major, so
sample s is the run of elements [s * M, (s + 1) * M), M elements per sample), other layouts copied
into it. Each program handles one tile of TILE elements of one sample; the tile is the largest power
of 2 in [MIN_TILE, MAX_TILE] that still gives every SM of the GPU several tiles (as csrc/cuda/pgd_step.cu).
Linf is one kernel; L2 is three: the sum of grad^2 per tile, the sum of d^2 per tile (d recomputed),
then the write (d recomputed, scaled, clipped); each program adds the tile sums of its sample in a
fixed order, so the norms are deterministic. Math runs in float32 (float64 for float64 tensors); sizes
are int64 arguments, so offsets are 64-bit; lo and hi are float64 arguments; the clip keeps a NaN
(as torch.clamp and the CUDA kernels do; tl.minimum / tl.maximum would drop it).
"""

import functools

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from deepfast.kernels._device import on_device

MAX_BLOCK = 1024  # half that for float64, which would spill registers
MIN_TILE, MAX_TILE = 1024, 16384


@triton.jit
def _tile(per_sample, tiles_per_sample, TILE: tl.constexpr):
    """(sample, first element, end) of this program's tile."""
    pid = tl.program_id(0).to(tl.int64)
    s = pid // tiles_per_sample
    begin = s * per_sample + (pid - s * tiles_per_sample) * TILE
    return s, begin, tl.minimum(begin + TILE, (s + 1) * per_sample)


@triton.jit
def _clip(v, lo, hi):
    """min(max(v, lo), hi), NaN kept."""
    return tl.minimum(tl.maximum(v, lo, propagate_nan=tl.PropagateNan.ALL), hi, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _sample_sum(partial_ptr, s, tiles_per_sample, TILES: tl.constexpr):
    """The tile sums of sample s added in a fixed order (TILES: tiles_per_sample rounded up to a power of 2)."""
    idx = tl.arange(0, TILES)
    return tl.sum(tl.load(partial_ptr + s * tiles_per_sample + idx, mask=idx < tiles_per_sample, other=0.0), axis=0)


@triton.jit
def _delta(x_ptr, g_ptr, x0_ptr, offs, mask, step, ginv, ACC: tl.constexpr):
    """(d, x0) with d = x + step * g * ginv - x0 (0 where masked)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    x0 = tl.load(x0_ptr + offs, mask=mask, other=0.0).to(ACC)
    return x + step * (g * ginv) - x0, x0


@triton.jit
def _grad_inv(gpartial_ptr, s, tiles_per_sample, TILES: tl.constexpr):
    """1 / (||grad|| + 1e-10) of sample s."""
    return 1.0 / (tl.sqrt(_sample_sum(gpartial_ptr, s, tiles_per_sample, TILES)) + 1e-10)


@triton.jit
def _linf_kernel(
    x_ptr,
    g_ptr,
    x0_ptr,
    out_ptr,
    step_ptr,
    eps_ptr,
    lo: tl.float64,
    hi: tl.float64,
    per_sample: tl.int64,
    tiles_per_sample: tl.int64,
    ACC: tl.constexpr,
    TILE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    s, begin, end = _tile(per_sample, tiles_per_sample, TILE)
    step = tl.load(step_ptr + s)
    eps = tl.load(eps_ptr + s)
    lo, hi = tl.full([], lo, ACC), tl.full([], hi, ACC)
    for k in range(0, TILE, BLOCK):
        offs = begin + k + tl.arange(0, BLOCK)
        mask = offs < end
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
        x0 = tl.load(x0_ptr + offs, mask=mask, other=0.0).to(ACC)
        sign = tl.where(g > 0, 1.0, tl.where(g < 0, -1.0, 0.0)).to(ACC)  # torch.sign: 0 for NaN
        y = _clip(_clip(x + step * sign, x0 - eps, x0 + eps), lo, hi)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_sumsq_kernel(
    g_ptr,
    partial_ptr,
    per_sample: tl.int64,
    tiles_per_sample: tl.int64,
    ACC: tl.constexpr,
    TILE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    _, begin, end = _tile(per_sample, tiles_per_sample, TILE)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for k in range(0, TILE, BLOCK):
        offs = begin + k + tl.arange(0, BLOCK)
        g = tl.load(g_ptr + offs, mask=offs < end, other=0.0).to(ACC)
        acc += g * g
    tl.store(partial_ptr + tl.program_id(0).to(tl.int64), tl.sum(acc, axis=0))


@triton.jit
def _delta_sumsq_kernel(
    x_ptr,
    g_ptr,
    x0_ptr,
    step_ptr,
    gpartial_ptr,
    partial_ptr,
    per_sample: tl.int64,
    tiles_per_sample: tl.int64,
    ACC: tl.constexpr,
    TILE: tl.constexpr,
    BLOCK: tl.constexpr,
    TILES: tl.constexpr,
):
    s, begin, end = _tile(per_sample, tiles_per_sample, TILE)
    step = tl.load(step_ptr + s)
    ginv = _grad_inv(gpartial_ptr, s, tiles_per_sample, TILES)
    acc = tl.zeros([BLOCK], dtype=ACC)
    for k in range(0, TILE, BLOCK):
        offs = begin + k + tl.arange(0, BLOCK)
        d, _ = _delta(x_ptr, g_ptr, x0_ptr, offs, offs < end, step, ginv, ACC)
        acc += d * d
    tl.store(partial_ptr + tl.program_id(0).to(tl.int64), tl.sum(acc, axis=0))


@triton.jit
def _l2_write_kernel(
    x_ptr,
    g_ptr,
    x0_ptr,
    out_ptr,
    step_ptr,
    eps_ptr,
    gpartial_ptr,
    dpartial_ptr,
    lo: tl.float64,
    hi: tl.float64,
    per_sample: tl.int64,
    tiles_per_sample: tl.int64,
    ACC: tl.constexpr,
    TILE: tl.constexpr,
    BLOCK: tl.constexpr,
    TILES: tl.constexpr,
):
    s, begin, end = _tile(per_sample, tiles_per_sample, TILE)
    step = tl.load(step_ptr + s)
    eps = tl.load(eps_ptr + s)
    lo, hi = tl.full([], lo, ACC), tl.full([], hi, ACC)
    ginv = _grad_inv(gpartial_ptr, s, tiles_per_sample, TILES)
    norm = tl.sqrt(_sample_sum(dpartial_ptr, s, tiles_per_sample, TILES))
    factor = tl.where(norm > eps, eps / norm, 1.0)
    for k in range(0, TILE, BLOCK):
        offs = begin + k + tl.arange(0, BLOCK)
        mask = offs < end
        d, x0 = _delta(x_ptr, g_ptr, x0_ptr, offs, mask, step, ginv, ACC)
        tl.store(out_ptr + offs, _clip(x0 + d * factor, lo, hi).to(out_ptr.dtype.element_ty), mask=mask)


@functools.cache
def _sm_count(device: torch.device) -> int:
    """SMs of a CUDA device; 1 elsewhere (the interpreter: the fewest, largest programs)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _tile_size(samples: int, per_sample: int, device: torch.device) -> int:
    """The largest power of 2 in [MIN_TILE, MAX_TILE] (at most per_sample rounded up) that gives every SM
    four tiles or more."""
    tile = min(MAX_TILE, triton.next_power_of_2(per_sample))
    while tile > MIN_TILE and samples * triton.cdiv(per_sample, tile) < 4 * _sm_count(device):
        tile //= 2
    return tile


def step(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x_orig: torch.Tensor,
    step_size: torch.Tensor,
    eps: torch.Tensor,
    norm: str,
    lo: float,
    hi: float,
    inplace: bool,
) -> torch.Tensor:
    """One PGD step (norm "inf" or "2"; step_size, eps of shape (N,)): into a new tensor in the memory
    format x_adv suggests, or into x_adv when inplace. Returns the tensor written."""
    fmt = suggest_memory_format(x_adv)
    x = x_adv.contiguous(memory_format=fmt)  # x_adv itself when it is laid out so
    g, x0 = grad.contiguous(memory_format=fmt), x_orig.contiguous(memory_format=fmt)
    out = x if inplace else torch.empty_like(x_adv, memory_format=fmt)
    acc_torch, acc = (torch.float64, tl.float64) if x.dtype == torch.float64 else (torch.float32, tl.float32)
    step_size, eps = step_size.to(acc_torch).contiguous(), eps.to(acc_torch).contiguous()
    samples = x.shape[0]
    per_sample = x.numel() // samples if samples else 0
    if per_sample:
        block = min(MAX_BLOCK // (2 if x.dtype == torch.float64 else 1), triton.next_power_of_2(per_sample))
        tile = max(block, _tile_size(samples, per_sample, x.device))
        tiles = triton.cdiv(per_sample, tile)
        grid = (samples * tiles,)
        sizes = dict(ACC=acc, TILE=tile, BLOCK=block)
        with on_device(x):
            if norm == "inf":
                _linf_kernel[grid](x, g, x0, out, step_size, eps, lo, hi, per_sample, tiles, **sizes)
            else:
                gpartial, dpartial = torch.empty((2, grid[0]), dtype=acc_torch, device=x.device)
                sizes["TILES"] = triton.next_power_of_2(tiles)
                _grad_sumsq_kernel[grid](g, gpartial, per_sample, tiles, ACC=acc, TILE=tile, BLOCK=block)
                _delta_sumsq_kernel[grid](x, g, x0, step_size, gpartial, dpartial, per_sample, tiles, **sizes)
                _l2_write_kernel[grid](
                    x, g, x0, out, step_size, eps, gpartial, dpartial, lo, hi, per_sample, tiles, **sizes
                )
    if inplace and out is not x_adv:
        x_adv.copy_(out)
    return out
