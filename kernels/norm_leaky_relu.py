"""Triton kernels of the fused batch / instance norm + LeakyReLU ops (math of deepfast/ops/norm_leaky_relu.py).

The data is viewed as [B][R][C][S] (deepfast.ops.norm_leaky_relu.layout), one statistics group g = b * C + c
per (b, c), of M = R * S values. Every pass cuts each group into the same chunks (``geometry``): rows
[r0, r0 + rows) by values [s0, s0 + seg) of one channel when S > 1 (rows of S contiguous values, NCHW),
or rows [r0, r0 + rows) of BLOCK_W channels at once when S == 1 (channels contiguous, channels_last).
One program takes one chunk, so a large group spreads over many programs. The partial sums of each
chunk go to a slot of their own and ``_finish_kernel`` adds them in chunk order: results are
deterministic. Per-group coefficients are computed once, in ``_finish_kernel``:

    forward   _sums_kernel(STATS)            shifted sums of x per chunk (batch statistics only)
              _finish_kernel(STATS | GIVEN)   mean, var; mean, A, b of z = (x - mean) A + b (csrc/norm_leaky_relu.h)
              _apply_kernel(STATS)           y = leaky((x - mean) A + b)
    backward  _sums_kernel(FROM_X | FROM_Y)  sums of dz and dz * xhat per chunk
              _finish_kernel(FROM_X | FROM_Y) the sums per group; mean, A, b, P, Q of dx = A dz + du P + Q
              _apply_kernel(FROM_X | FROM_Y) dx (du = x - mean, or z - b with z = leaky^-1(y) in-place)

Math in float32 (float64 for float64 tensors); eps and slope arrive as float64; every size is an int64
argument and program ids are cast, so offsets are 64-bit; a NaN in the data propagates as in torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from deepfast.kernels._device import on_device

# What _sums_kernel reduces, _finish_kernel computes and _apply_kernel writes. GIVEN: running statistics.
STATS, FROM_X, FROM_Y, GIVEN = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)
FWD_COEFS, BWD_COEFS = tl.constexpr(3), tl.constexpr(5)  # per group: (mean, A, b), (mean, A, b, P, Q)
MIN_WEIGHT = tl.constexpr(1e-5)  # in-place mode: w -> sign(w) max(|w|, 1e-5), as deepfast.ops.norm_leaky_relu

BLOCK = 1024  # values per tile (half that for float64, which would spill registers), over NUM_WARPS warps
NUM_WARPS = 8  # 4 values a thread: with 4 warps, Triton 3.6's ptxas spills some tiles inside their loops
CHUNK = 16384  # values per program and pass (about)
BLOCK_G = 128  # groups per program of _finish_kernel


@triton.jit
def _leaky(z, slope):
    return tl.where(z > 0, z, z * slope)


@triton.jit
def _leaky_grad(dy, z, slope):
    """dz from dy and anything of the sign of z."""
    return tl.where(z > 0, dy, dy * slope)


@triton.jit
def _scalar(v, ACC: tl.constexpr):
    """A float64 argument in the accumulation dtype (tl.cast would round it through float32 in the interpreter)."""
    return tl.full([], v, ACC)


@triton.jit
def _shift(first):
    """The shift of the shifted sums: the group's first value, 0 where that is not finite (as csrc/norm_leaky_relu.h)."""
    return tl.where(first - first == 0, first, 0.0)


@triton.jit
def _invstd(var, eps, ACC: tl.constexpr):
    """1 / sqrt(var + eps), correctly rounded in float32 as in float64."""
    v = var + _scalar(eps, ACC)
    if ACC == tl.float64:
        return 1.0 / tl.sqrt(v)
    else:
        return tl.div_rn(1.0, tl.sqrt_rn(v))


@triton.jit
def _weight_bias(
    w_ptr, b_ptr, c, cmask, HAS_W: tl.constexpr, HAS_B: tl.constexpr, INPLACE: tl.constexpr, ACC: tl.constexpr
):
    """weight (1 when absent; sign(w) max(|w|, 1e-5) in in-place mode) and bias (0 when absent) of channels c."""
    if HAS_W:
        w = tl.load(w_ptr + c, mask=cmask, other=1.0).to(ACC)
    else:
        w = tl.full(c.shape, 1.0, ACC)
    if INPLACE:  # NaN stays NaN
        w = tl.where(w >= 0, tl.where(w < MIN_WEIGHT, MIN_WEIGHT, w), tl.where(w > -MIN_WEIGHT, -MIN_WEIGHT, w))
    if HAS_B:
        bias = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC)
    else:
        bias = tl.zeros(c.shape, ACC)
    return w, bias


@triton.jit
def _chunk(R, C, S, rows, seg, spr, chunks, ctiles, COLUMNS: tl.constexpr, BLOCK_W: tl.constexpr):
    """The chunk of this program: its index j among the chunks of its groups, batch b, channel (tile) ct,
    the channels c and lane offsets s along a row (vectors of BLOCK_W), their mask, and the row and value
    ranges [r0, r1), [s0, s1). Program ids and chunk counts are below 2^31: they are split in 32 bits."""
    pid = tl.program_id(0)
    n_chunks, n_tiles, n_segs = chunks.to(tl.int32), ctiles.to(tl.int32), spr.to(tl.int32)
    j = pid % n_chunks
    t = pid // n_chunks
    b = (t // n_tiles).to(tl.int64)
    ct = (t % n_tiles).to(tl.int64)
    r0 = (j // n_segs).to(tl.int64) * rows
    s0 = (j % n_segs).to(tl.int64) * seg
    col = tl.arange(0, BLOCK_W).to(tl.int64)
    if COLUMNS:  # S == 1: BLOCK_W channels side by side
        c = ct * BLOCK_W + col
        s = col * 0
    else:  # one channel, BLOCK_W values of its rows
        c = ct + col * 0
        s = s0 + col
    return j.to(tl.int64), b, ct, c, s, c < C, r0, tl.minimum(r0 + rows, R), s0, tl.minimum(s0 + seg, S)


@triton.jit
def _tiles(
    a_ptr,
    dy_ptr,
    out_ptr,
    w_ptr,
    b_ptr,
    mean_ptr,
    var_ptr,
    coef_ptr,
    part1_ptr,
    part2_ptr,
    R,
    C,
    S,
    rows,
    seg,
    spr,
    chunks,
    ctiles,
    eps,
    slope,
    MODE: tl.constexpr,
    APPLY: tl.constexpr,
    BATCH_STATS: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    INPLACE: tl.constexpr,
    COLUMNS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """One chunk, tile by tile: its partial sums (APPLY False) or its output (APPLY True)."""
    j, b, ct, c, s, cmask, r0, r1, s0, s1 = _chunk(R, C, S, rows, seg, spr, chunks, ctiles, COLUMNS, BLOCK_W)
    g = b * C + c
    sl = _scalar(slope, ACC)
    if MODE == FROM_Y:
        inv_sl = 1.0 / sl  # in-place mode needs slope > 0
    if APPLY:
        ncoef: tl.constexpr = FWD_COEFS if MODE == STATS else BWD_COEFS
        mean = tl.load(coef_ptr + g * ncoef, mask=cmask, other=0.0)[None, :]
        A = tl.load(coef_ptr + g * ncoef + 1, mask=cmask, other=0.0)[None, :]
        bias = tl.load(coef_ptr + g * ncoef + 2, mask=cmask, other=0.0)[None, :]
        if MODE != STATS:
            P = tl.load(coef_ptr + g * ncoef + 3, mask=cmask, other=0.0)[None, :]
            Q = tl.load(coef_ptr + g * ncoef + 4, mask=cmask, other=0.0)[None, :]
    else:
        if MODE == STATS:  # shifted sums, shift = the group's first value
            shift = _shift(tl.load(a_ptr + ((b * R) * C + c) * S, mask=cmask & (R * S > 0), other=0.0).to(ACC))[None, :]
        else:
            w, bias = _weight_bias(w_ptr, b_ptr, c, cmask, HAS_W, HAS_B, INPLACE, ACC)
            mean = tl.load(mean_ptr + g, mask=cmask, other=0.0).to(ACC)
            inv = _invstd(tl.load(var_ptr + g, mask=cmask, other=1.0).to(ACC), eps, ACC)
            A = (w * inv)[None, :]
            mean, inv, bias, winv = mean[None, :], inv[None, :], bias[None, :], (1.0 / w)[None, :]
        acc1 = tl.zeros([BLOCK_R, BLOCK_W], dtype=ACC)
        acc2 = tl.zeros([BLOCK_R, BLOCK_W], dtype=ACC)
    for rb in range(r0, r1, BLOCK_R):
        r = rb + tl.arange(0, BLOCK_R).to(tl.int64)
        for sb in range(s0, s1, BLOCK_W):
            ss = s + (sb - s0)
            mask = (r < r1)[:, None] & (cmask & (ss < s1))[None, :]
            offs = ((b * R + r)[:, None] * C + c[None, :]) * S + ss[None, :]
            a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(ACC)
            if MODE != STATS:
                dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(ACC)
                if MODE == FROM_X:
                    dz = _leaky_grad(dy, (a - mean) * A + bias, sl)
                    du = a - mean
                else:
                    dz = _leaky_grad(dy, a, sl)
                    du = tl.where(a > 0, a, a * inv_sl) - bias  # z - b
            if APPLY:
                if MODE == STATS:
                    v = _leaky((a - mean) * A + bias, sl)
                elif BATCH_STATS:
                    v = A * dz + du * P + Q
                else:  # running statistics: P = Q = 0, and a non-finite x must not make dx NaN (as torch)
                    v = A * dz
                tl.store(out_ptr + offs, v.to(out_ptr.dtype.element_ty), mask=mask)
            else:
                if MODE == STATS:
                    d = tl.where(mask, a - shift, 0.0)
                    acc1 += d
                    acc2 += d * d
                else:
                    if MODE == FROM_X:
                        xhat = du * inv
                    else:
                        xhat = du * winv
                    acc1 += dz
                    acc2 += tl.where(mask, dz * xhat, 0.0)
    if not APPLY:
        if COLUMNS:  # one sum per channel
            slot = g * chunks + j
            tl.store(part1_ptr + slot, tl.sum(acc1, axis=0), mask=cmask)
            tl.store(part2_ptr + slot, tl.sum(acc2, axis=0), mask=cmask)
        else:  # one sum for the program's channel
            slot = (b * C + ct) * chunks + j
            tl.store(part1_ptr + slot, tl.sum(tl.sum(acc1, axis=1), axis=0))
            tl.store(part2_ptr + slot, tl.sum(tl.sum(acc2, axis=1), axis=0))


@triton.jit
def _sums_kernel(
    a_ptr,
    dy_ptr,
    w_ptr,
    b_ptr,
    mean_ptr,
    var_ptr,
    part1_ptr,
    part2_ptr,
    R: tl.int64,
    C: tl.int64,
    S: tl.int64,
    rows: tl.int64,
    seg: tl.int64,
    spr: tl.int64,
    chunks: tl.int64,
    ctiles: tl.int64,
    eps: tl.float64,
    slope: tl.float64,
    MODE: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    INPLACE: tl.constexpr,
    COLUMNS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    _tiles(
        a_ptr,
        dy_ptr,
        None,
        w_ptr,
        b_ptr,
        mean_ptr,
        var_ptr,
        None,
        part1_ptr,
        part2_ptr,
        R,
        C,
        S,
        rows,
        seg,
        spr,
        chunks,
        ctiles,
        eps,
        slope,
        MODE,
        False,
        True,
        HAS_W,
        HAS_B,
        INPLACE,
        COLUMNS,
        ACC,
        BLOCK_R,
        BLOCK_W,
    )


@triton.jit
def _apply_kernel(
    a_ptr,
    dy_ptr,
    out_ptr,
    coef_ptr,
    R: tl.int64,
    C: tl.int64,
    S: tl.int64,
    rows: tl.int64,
    seg: tl.int64,
    spr: tl.int64,
    chunks: tl.int64,
    ctiles: tl.int64,
    slope: tl.float64,
    MODE: tl.constexpr,
    BATCH_STATS: tl.constexpr,
    COLUMNS: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    _tiles(
        a_ptr,
        dy_ptr,
        out_ptr,
        None,
        None,
        None,
        None,
        coef_ptr,
        None,
        None,
        R,
        C,
        S,
        rows,
        seg,
        spr,
        chunks,
        ctiles,
        0.0,
        slope,
        MODE,
        True,
        BATCH_STATS,
        False,
        False,
        False,
        COLUMNS,
        ACC,
        BLOCK_R,
        BLOCK_W,
    )


@triton.jit
def _finish_kernel(
    a_ptr,
    w_ptr,
    b_ptr,
    stat1_ptr,
    stat2_ptr,
    part1_ptr,
    part2_ptr,
    out1_ptr,
    out2_ptr,
    coef_ptr,
    G: tl.int64,
    R: tl.int64,
    C: tl.int64,
    S: tl.int64,
    chunks: tl.int64,
    eps: tl.float64,
    MODE: tl.constexpr,
    BATCH_STATS: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    INPLACE: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK_G: tl.constexpr,
):
    """Per group g: the chunk sums added in order, and the coefficients of _apply_kernel.

    STATS:  out = mean, biased var from the shifted sums; GIVEN: out = stat1, stat2 (running mean, var of
    channel c); FROM_X / FROM_Y: stat = the forward's mean, var of g, out = sum dz, sum dz * xhat.
    """
    g = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    gmask = g < G
    c = g % C
    m = R * S
    w, bias = _weight_bias(w_ptr, b_ptr, c, gmask, HAS_W, HAS_B, INPLACE, ACC)
    s1 = tl.zeros([BLOCK_G], dtype=ACC)
    s2 = tl.zeros([BLOCK_G], dtype=ACC)
    if MODE != GIVEN:
        for j in range(0, chunks):
            s1 += tl.load(part1_ptr + g * chunks + j, mask=gmask, other=0.0)
            s2 += tl.load(part2_ptr + g * chunks + j, mask=gmask, other=0.0)
    if MODE == STATS:
        shift = _shift(tl.load(a_ptr + ((g // C) * R * C + c) * S, mask=gmask & (m > 0), other=0.0).to(ACC))
        d = s1 / m
        mean = shift + d
        var = s2 / m - d * d
        var = tl.where(var < 0, 0.0, var)  # rounding can make it negative; NaN stays NaN
        out1, out2 = mean, var
    elif MODE == GIVEN:
        mean = tl.load(stat1_ptr + c, mask=gmask, other=0.0).to(ACC)
        var = tl.load(stat2_ptr + c, mask=gmask, other=1.0).to(ACC)
        out1, out2 = mean, var
    else:
        mean = tl.load(stat1_ptr + g, mask=gmask, other=0.0).to(ACC)
        var = tl.load(stat2_ptr + g, mask=gmask, other=1.0).to(ACC)
        out1, out2 = s1, s2
    tl.store(out1_ptr + g, out1, mask=gmask)
    tl.store(out2_ptr + g, out2, mask=gmask)
    inv = _invstd(var, eps, ACC)
    A = w * inv
    ncoef: tl.constexpr = FWD_COEFS if MODE == STATS or MODE == GIVEN else BWD_COEFS
    tl.store(coef_ptr + g * ncoef, mean, mask=gmask)
    tl.store(coef_ptr + g * ncoef + 1, A, mask=gmask)
    tl.store(coef_ptr + g * ncoef + 2, bias, mask=gmask)
    if MODE == FROM_X or MODE == FROM_Y:  # dx = A dz - A (s2 / m) xhat - A s1 / m (batch statistics)
        if BATCH_STATS:
            if MODE == FROM_X:  # xhat = (x - mean) inv
                P = -(A * s2 / m) * inv
            else:  # xhat = (z - b) / w
                P = -(A * s2 / m) / w
            Q = -A * s1 / m
        else:
            P = tl.zeros([BLOCK_G], dtype=ACC)
            Q = tl.zeros([BLOCK_G], dtype=ACC)
        tl.store(coef_ptr + g * ncoef + 3, P, mask=gmask)
        tl.store(coef_ptr + g * ncoef + 4, Q, mask=gmask)


# --- launches --------------------------------------------------------------------------------------------


class Geometry:
    """How the passes cut [B][R][C][S] into chunks: a function of the sizes only (the same on every device)."""

    def __init__(self, B: int, R: int, C: int, S: int, dtype: torch.dtype):
        self.B, self.R, self.C, self.S = B, R, C, S
        block = BLOCK // 2 if dtype == torch.float64 else BLOCK
        self.columns = S == 1
        if self.columns:
            self.block_w = min(max(triton.next_power_of_2(C), 16), 128)
            self.ctiles, self.seg = triton.cdiv(C, self.block_w), 1
            self.rows = max(1, CHUNK // self.block_w)
        else:
            self.block_w = min(triton.next_power_of_2(max(S, 1)), block)
            self.ctiles = C
            self.seg = min(max(S, 1), CHUNK)  # long rows are cut into segments
            self.rows = max(1, CHUNK // max(S, 1))
        self.block_r = max(1, block // self.block_w)
        self.spr = triton.cdiv(S, self.seg)  # segments per row
        self.chunks = triton.cdiv(R, self.rows) * self.spr if R * S else 0
        self.programs = B * self.ctiles * self.chunks

    def args(self) -> tuple[int, ...]:
        return self.R, self.C, self.S, self.rows, self.seg, self.spr, self.chunks, self.ctiles

    def blocks(self) -> dict:
        return dict(COLUMNS=self.columns, BLOCK_R=self.block_r, BLOCK_W=self.block_w, num_warps=NUM_WARPS)


def _acc(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _sums(mode, geo: Geometry, a, dy, w, b, mean, var, eps: float, slope: float, inplace: bool):
    """The partial sums (part1, part2), each (B * C, chunks) in the accumulation dtype."""
    acc_tl, acc_torch = _acc(a.dtype)
    part1, part2 = torch.empty((2, geo.B * geo.C * geo.chunks), dtype=acc_torch, device=a.device)
    if geo.programs:
        with on_device(a):
            _sums_kernel[(geo.programs,)](
                a,
                dy,
                w,
                b,
                mean,
                var,
                part1,
                part2,
                *geo.args(),
                eps,
                slope,
                MODE=mode.value,
                HAS_W=w is not None,
                HAS_B=b is not None,
                INPLACE=inplace and mode is FROM_Y,
                ACC=acc_tl,
                **geo.blocks(),
            )
    return part1, part2


def _finish(mode, geo: Geometry, a, w, b, stat1, stat2, part1, part2, eps: float, inplace: bool, batch_stats=True):
    """(out1, out2, coef): see _finish_kernel."""
    acc_tl, acc_torch = _acc(a.dtype)
    groups = geo.B * geo.C
    out1, out2 = (torch.empty(groups, dtype=acc_torch, device=a.device) for _ in range(2))  # returned: no views
    coef = torch.empty(groups * (FWD_COEFS if mode in (STATS, GIVEN) else BWD_COEFS), dtype=acc_torch, device=a.device)
    if groups:
        with on_device(a):
            _finish_kernel[(triton.cdiv(groups, BLOCK_G),)](
                a,
                w,
                b,
                stat1,
                stat2,
                part1,
                part2,
                out1,
                out2,
                coef,
                groups,
                geo.R,
                geo.C,
                geo.S,
                geo.chunks,
                eps,
                MODE=mode.value,
                BATCH_STATS=batch_stats,
                HAS_W=w is not None,
                HAS_B=b is not None,
                INPLACE=inplace,
                ACC=acc_tl,
                BLOCK_G=BLOCK_G,
            )
    return out1, out2, coef


def _apply(mode, geo: Geometry, a, dy, coef, slope: float, batch_stats: bool = True):
    out = torch.empty_like(a)
    if geo.programs:
        with on_device(a):
            _apply_kernel[(geo.programs,)](
                a,
                dy,
                out,
                coef,
                *geo.args(),
                slope,
                MODE=mode.value,
                BATCH_STATS=batch_stats or mode is STATS,
                ACC=_acc(a.dtype)[0],
                **geo.blocks(),
            )
    return out


def forward(x, w, b, mean, var, shape, eps: float, slope: float, inplace: bool):
    """(y, mean, var) of dense x viewed as ``shape`` = (B, R, C, S); batch statistics when mean is None.

    w, b: (C,) or None; mean, var: the (C,) running statistics (any floating dtype), or None. The mean and
    var returned are (B * C,) in the accumulation dtype.
    """
    geo = Geometry(*shape, x.dtype)
    if mean is None:
        part1, part2 = _sums(STATS, geo, x, None, None, None, None, None, eps, slope, inplace)
        mean, var, coef = _finish(STATS, geo, x, w, b, None, None, part1, part2, eps, inplace)
    else:
        mean, var, coef = _finish(GIVEN, geo, x, w, b, mean, var, None, None, eps, inplace)
    return _apply(STATS, geo, x, None, coef, slope), mean, var


def backward(grad_y, saved, w, b, mean, var, shape, batch_stats: bool, eps: float, slope: float, from_y: bool):
    """(grad_x, grad_weight, grad_bias); saved is x, or y when from_y (in-place mode); mean, var (B * C,)."""
    geo = Geometry(*shape, saved.dtype)
    mode = FROM_Y if from_y else FROM_X
    part1, part2 = _sums(mode, geo, saved, grad_y, w, b, mean, var, eps, slope, from_y)
    s1, s2, coef = _finish(mode, geo, saved, w, b, mean, var, part1, part2, eps, from_y, batch_stats)
    dx = _apply(mode, geo, saved, grad_y, coef, slope, batch_stats)
    return dx, s2.view(geo.B, geo.C).sum(0), s1.view(geo.B, geo.C).sum(0)
