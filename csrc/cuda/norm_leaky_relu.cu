// CUDA kernels of deepfast::norm_leaky_relu and deepfast::norm_leaky_relu_backward (batch / instance norm +
// LeakyReLU), in three passes each way over the chunks of NormGeometry (norm_leaky_relu_args.h), one block a
// chunk, so that a large statistics group spreads over many blocks:
//   sums_kernel    the partial sums of one chunk, into a slot of its own
//   finish_kernel  per group: the slots added in chunk order (deterministic), mean and var (forward) or
//                  the sums of dz and dz * xhat (backward), and the coefficients of the elementwise pass
//   apply_kernel   y = leaky((x - mean) A + b) forward, dx = A dz + du P + Q backward (norm_leaky_relu.h)
// A block takes values of one channel, kThreads apart along its rows (S > 1), or kLanes channels side by
// side, kRows rows at a time (S == 1: channels contiguous, channels_last). No element index is divided.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../norm_leaky_relu_args.h"
#include "launch.cuh"

namespace deepfast {
namespace {

enum Mode { kStats = 0, kFromX = 1, kFromY = 2, kGiven = 3 };
constexpr int kForwardCoefs = 3, kBackwardCoefs = 5;   // per group: (mean, A, b), (mean, A, b, P, Q)
constexpr int kLanes = 32, kRows = kThreads / kLanes;  // a column block: kRows rows of kLanes channels

// The chunk of a block, and the channel of its thread.
struct Chunk {
  int64_t b, c, j, r0, r1, s0, s1;
  bool valid;  // c < C (column blocks: the last tile may be partial)
  template <bool kColumns>
  __device__ static Chunk of(const NormGeometry& q) {
    // block indices fit 32 bits (a launch has fewer than 2^31 blocks), so does every quotient here
    const uint32_t blk = blockIdx.x, chunks = q.chunks, ctiles = q.ctiles, spr = q.spr;
    Chunk ch;
    const uint32_t j = blk % chunks, t = blk / chunks;
    ch.j = j;
    ch.b = t / ctiles;
    ch.c = kColumns ? int64_t(t % ctiles) * kLanes + threadIdx.x % kLanes : int64_t(t % ctiles);
    ch.valid = ch.c < q.C;
    ch.r0 = int64_t(j / spr) * q.rows;
    ch.r1 = ch.r0 + q.rows < q.R ? ch.r0 + q.rows : q.R;
    ch.s0 = int64_t(j % spr) * q.seg;
    ch.s1 = ch.s0 + q.seg < q.S ? ch.s0 + q.seg : q.S;
    return ch;
  }
};

// f(i) for the elements of the chunk this thread takes.
template <bool kColumns, typename F>
__device__ __forceinline__ void for_chunk(const NormGeometry& q, const Chunk& ch, const F& f) {
  if (!ch.valid) return;
  if constexpr (kColumns) {
    for (int64_t r = ch.r0 + threadIdx.x / kLanes; r < ch.r1; r += kRows) f((ch.b * q.R + r) * q.C + ch.c);
  } else {
    // k = (r - r0) * w + (s - s0) runs over the chunk kThreads apart; (r, s) follow k without division
    const int64_t w = ch.s1 - ch.s0, n = (ch.r1 - ch.r0) * w, dr = kThreads / w, ds = kThreads % w;
    int64_t r = ch.r0 + threadIdx.x / w, s = ch.s0 + threadIdx.x % w;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      f(((ch.b * q.R + r) * q.C + ch.c) * q.S + s);
      s += ds;
      r += dr;
      if (s >= ch.s1) {
        s -= w;
        ++r;
      }
    }
  }
}

// weight (1 when absent; inplace_weight in in-place mode) and bias (0 when absent) of channel c.
template <typename T>
__device__ __forceinline__ void weight_bias(const T* w, const T* bias, int64_t c, bool inplace, T& wv, T& bv) {
  wv = w != nullptr ? w[c] : T(1);
  if (inplace) wv = inplace_weight<T>(wv);
  bv = bias != nullptr ? bias[c] : T(0);
}

template <typename T>
struct Params {                    // what the passes read besides the data
  const T *w, *bias, *mean, *var;  // (C,), (C,), (B * C,), (B * C,); w, bias may be null
  double eps, slope;
  bool inplace;
};

// Partial sums of the chunk into part1[g * chunks + j], part2[...]: kStats the shifted sums of x (shift:
// the group's first value), kFromX / kFromY the sums of dz and dz * xhat.
template <typename scalar_t, int kMode, bool kColumns>
__global__ void __launch_bounds__(kThreads)
    sums_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ dy, Params<acc_t<scalar_t>> p,
                acc_t<scalar_t>* __restrict__ part1, acc_t<scalar_t>* __restrict__ part2, NormGeometry q) {
  using T = acc_t<scalar_t>;
  const Chunk ch = Chunk::of<kColumns>(q);
  const int64_t g = ch.b * q.C + ch.c;
  T p1 = 0, p2 = 0;
  if (ch.valid) {
    if constexpr (kMode == kStats) {
      const T shift = stats_shift<T>(T(a[(ch.b * q.R * q.C + ch.c) * q.S]));
      for_chunk<kColumns>(q, ch, [&](int64_t i) {
        const T d = T(a[i]) - shift;
        p1 += d;
        p2 += d * d;
      });
    } else {
      T w, b;
      weight_bias<T>(p.w, p.bias, ch.c, p.inplace, w, b);
      const T mean = p.mean[g], inv = invstd_of<T>(p.var[g], p.eps), sl = T(p.slope), A = w * inv;
      const T inv_w = T(1) / w, inv_sl = kMode == kFromY ? T(1) / sl : T(0);
      for_chunk<kColumns>(q, ch, [&](int64_t i) {
        const T av = T(a[i]);
        T dz, xhat;
        if constexpr (kMode == kFromX) {
          dz = leaky_grad<T>(T(dy[i]), norm_z<T>(av, mean, A, b), sl);
          xhat = (av - mean) * inv;
        } else {
          dz = leaky_grad<T>(T(dy[i]), av, sl);
          xhat = (leaky_inverse<T>(av, inv_sl) - b) * inv_w;
        }
        p1 += dz;
        p2 += dz * xhat;
      });
    }
  }
  if constexpr (kColumns) {  // the kRows partial sums of each channel, added in row order
    __shared__ T sh1[kRows][kLanes], sh2[kRows][kLanes];
    const int lane = threadIdx.x % kLanes, row = threadIdx.x / kLanes;
    sh1[row][lane] = p1;
    sh2[row][lane] = p2;
    __syncthreads();
    if (row != 0 || !ch.valid) return;
    for (int k = 1; k < kRows; ++k) {
      p1 += sh1[k][lane];
      p2 += sh2[k][lane];
    }
    part1[g * q.chunks + ch.j] = p1;
    part2[g * q.chunks + ch.j] = p2;
  } else {
    p1 = block_sum(p1);
    __syncthreads();
    p2 = block_sum(p2);
    if (threadIdx.x == 0) {
      part1[g * q.chunks + ch.j] = p1;
      part2[g * q.chunks + ch.j] = p2;
    }
  }
}

// One thread per group g: the chunk sums added in order; out1, out2 = mean, var (kStats; kGiven: the
// running statistics, stat1/stat2 of channel c) or the sums of dz and dz * xhat (backward); coef[g] =
// (mean, A, b) forward, (mean, A, b, P, Q) backward. The backward reads the forward's mean, var of g in p.
template <typename scalar_t, int kMode>
__global__ void __launch_bounds__(kThreads)
    finish_kernel(const scalar_t* __restrict__ a, Params<acc_t<scalar_t>> p, const acc_t<scalar_t>* __restrict__ part1,
                  const acc_t<scalar_t>* __restrict__ part2, acc_t<scalar_t>* __restrict__ out1,
                  acc_t<scalar_t>* __restrict__ out2, acc_t<scalar_t>* __restrict__ coef, int64_t groups,
                  NormGeometry q, bool batch_stats) {
  using T = acc_t<scalar_t>;
  const int64_t g = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (g >= groups) return;
  const int64_t c = g % q.C, m = q.R * q.S;
  T w, b, s1 = 0, s2 = 0, mean, var;
  weight_bias<T>(p.w, p.bias, c, p.inplace, w, b);
  if constexpr (kMode != kGiven) {
    for (int64_t j = 0; j < q.chunks; ++j) {
      s1 += part1[g * q.chunks + j];
      s2 += part2[g * q.chunks + j];
    }
  }
  if constexpr (kMode == kStats) {
    const T shift = m > 0 ? stats_shift<T>(T(a[((g / q.C) * q.R * q.C + c) * q.S])) : T(0);
    shifted_moments<T>(shift, s1, s2, m, mean, var);
    out1[g] = mean;
    out2[g] = var;
  } else if constexpr (kMode == kGiven) {
    mean = p.mean[c];
    var = p.var[c];
    out1[g] = mean;
    out2[g] = var;
  } else {
    mean = p.mean[g];
    var = p.var[g];
    out1[g] = s1;
    out2[g] = s2;
  }
  const T inv = invstd_of<T>(var, p.eps);
  T* cg = coef + g * (kMode == kStats || kMode == kGiven ? kForwardCoefs : kBackwardCoefs);
  cg[0] = mean;
  cg[1] = w * inv;
  cg[2] = b;
  if constexpr (kMode == kFromX || kMode == kFromY) {
    backward_coefficients<T>(w, inv, s1, s2, m, batch_stats, kMode == kFromY, cg[3], cg[4]);
  }
}

// y = leaky((x - mean) A + b) (kStats), or dx = A dz + du P + Q (norm_dx) with du = x - mean (kFromX)
// or z - b, z = leaky^-1(y) (kFromY).
template <typename scalar_t, int kMode, bool kColumns>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ dy, scalar_t* __restrict__ out,
                 const acc_t<scalar_t>* __restrict__ coef, double slope, bool batch_stats, NormGeometry q) {
  using T = acc_t<scalar_t>;
  const Chunk ch = Chunk::of<kColumns>(q);
  if (!ch.valid) return;
  const int64_t g = ch.b * q.C + ch.c;
  const T sl = T(slope);
  const T* cg = coef + g * (kMode == kStats ? kForwardCoefs : kBackwardCoefs);
  const T mean = cg[0], A = cg[1], b = cg[2];
  if constexpr (kMode == kStats) {
    for_chunk<kColumns>(q, ch, [&](int64_t i) { out[i] = scalar_t(leaky<T>(norm_z<T>(T(a[i]), mean, A, b), sl)); });
  } else {
    const T P = cg[3], Q = cg[4];
    const T inv_sl = kMode == kFromY ? T(1) / sl : T(0);
    for_chunk<kColumns>(q, ch, [&](int64_t i) {
      const T av = T(a[i]);
      if constexpr (kMode == kFromX) {
        out[i] = scalar_t(
            norm_dx<T>(A, leaky_grad<T>(T(dy[i]), norm_z<T>(av, mean, A, b), sl), av - mean, P, Q, batch_stats));
      } else {
        out[i] = scalar_t(
            norm_dx<T>(A, leaky_grad<T>(T(dy[i]), av, sl), leaky_inverse<T>(av, inv_sl) - b, P, Q, batch_stats));
      }
    });
  }
}

// (A tensor or none) in the accumulation dtype, contiguous.
c10::optional<at::Tensor> in_acc(const c10::optional<at::Tensor>& t, at::ScalarType acc) {
  if (!t.has_value()) return c10::nullopt;
  return t->to(acc).contiguous();
}

template <typename T>
const T* ptr(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<T>() : nullptr;
}

// The three kernels of one direction, for x's layout: sums (when batch statistics are computed),
// finish, apply. Returns nothing; writes out1, out2, coef and out.
template <typename scalar_t, int kSumsMode, int kFinishMode, bool kColumns>
void run_passes(const NormLayout& L, const scalar_t* a, const scalar_t* dy, const Params<acc_t<scalar_t>>& p,
                at::Tensor& out1, at::Tensor& out2, at::Tensor& out, bool batch_stats, cudaStream_t stream) {
  using T = acc_t<scalar_t>;
  const NormGeometry q(L, kLanes);
  const int64_t blocks = q.blocks(L), groups = L.groups();
  TORCH_CHECK(blocks < (int64_t(1) << 31), "deepfast: norm_leaky_relu: too many blocks (", blocks, ") for one launch");
  at::Tensor part = at::empty({2, groups * q.chunks}, out1.options());
  at::Tensor coef = at::empty(
      {groups * (kFinishMode == kStats || kFinishMode == kGiven ? kForwardCoefs : kBackwardCoefs)}, out1.options());
  T *part1 = part.mutable_data_ptr<T>(), *part2 = part1 + groups * q.chunks;
  if (kFinishMode != kGiven && blocks > 0) {
    sums_kernel<scalar_t, kSumsMode, kColumns>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a, dy, p, part1, part2, q);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (groups == 0) return;
  finish_kernel<scalar_t, kFinishMode>
      <<<static_cast<unsigned>((groups + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
          a, p, part1, part2, out1.mutable_data_ptr<T>(), out2.mutable_data_ptr<T>(), coef.mutable_data_ptr<T>(),
          groups, q, batch_stats);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (blocks == 0) return;
  constexpr int kApplyMode = kFinishMode == kGiven ? kStats : kFinishMode;
  apply_kernel<scalar_t, kApplyMode, kColumns><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      a, dy, out.mutable_data_ptr<scalar_t>(), coef.const_data_ptr<T>(), p.slope, batch_stats, q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// run_passes for the layout of L (rows of S values, or columns of channels).
template <typename scalar_t, int kSumsMode, int kFinishMode, typename... Args>
void run_layout(const NormLayout& L, Args&&... args) {
  if (L.S == 1) {
    run_passes<scalar_t, kSumsMode, kFinishMode, true>(L, std::forward<Args>(args)...);
  } else {
    run_passes<scalar_t, kSumsMode, kFinishMode, false>(L, std::forward<Args>(args)...);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_leaky_relu_cuda(
    const at::Tensor& x_, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& mean_, const c10::optional<at::Tensor>& var_, bool instance, double eps,
    double slope, bool inplace) {
  const NormLayout L = check_forward(x_, weight, bias, mean_, var_, instance, slope, inplace);
  const bool batch_stats = !mean_.has_value();
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(L.format());
  const at::ScalarType acc = acc_type(x);
  const auto w = in_acc(weight, acc), b = in_acc(bias, acc), rm = in_acc(mean_, acc), rv = in_acc(var_, acc);
  at::Tensor y = at::empty_like(x, L.format());
  at::Tensor mean = at::empty({L.groups()}, x.options().dtype(acc)), var = at::empty_like(mean);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "norm_leaky_relu_cuda", [&] {
    using T = acc_t<scalar_t>;
    const Params<T> p{ptr<T>(w), ptr<T>(b), ptr<T>(rm), ptr<T>(rv), eps, slope, inplace};
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    if (batch_stats) {
      run_layout<scalar_t, kStats, kStats>(L, px, nullptr, p, mean, var, y, true, stream);
    } else {
      run_layout<scalar_t, kStats, kGiven>(L, px, nullptr, p, mean, var, y, false, stream);
    }
  });
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_leaky_relu_backward_cuda(
    const at::Tensor& grad_y_, const at::Tensor& saved_, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& mean_, const at::Tensor& var_, bool batch_stats,
    bool instance, double eps, double slope, bool inplace) {
  const NormLayout L = check_backward(grad_y_, saved_, weight, bias, mean_, var_, instance, slope, inplace);
  const c10::cuda::CUDAGuard guard(saved_.device());
  const at::Tensor saved = saved_.contiguous(L.format()), grad_y = grad_y_.contiguous(L.format());
  const at::ScalarType acc = acc_type(saved);
  const at::Tensor mean = mean_.to(acc).contiguous(), var = var_.to(acc).contiguous();
  const auto w = in_acc(weight, acc), b = in_acc(bias, acc);
  at::Tensor dx = at::empty_like(saved, L.format());
  at::Tensor s1 = at::empty({L.groups()}, saved.options().dtype(acc)), s2 = at::empty_like(s1);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, saved.scalar_type(), "norm_leaky_relu_backward_cuda", [&] {
    using T = acc_t<scalar_t>;
    const Params<T> p{ptr<T>(w), ptr<T>(b), mean.const_data_ptr<T>(), var.const_data_ptr<T>(), eps, slope, inplace};
    const scalar_t *pa = saved.const_data_ptr<scalar_t>(), *pdy = grad_y.const_data_ptr<scalar_t>();
    if (inplace) {
      run_layout<scalar_t, kFromY, kFromY>(L, pa, pdy, p, s1, s2, dx, batch_stats, stream);
    } else {
      run_layout<scalar_t, kFromX, kFromX>(L, pa, pdy, p, s1, s2, dx, batch_stats, stream);
    }
  });
  return {dx, s2.view({L.B, L.C}).sum(0), s1.view({L.B, L.C}).sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CUDA, m) {
  m.impl("norm_leaky_relu", &norm_leaky_relu_cuda);
  m.impl("norm_leaky_relu_backward", &norm_leaky_relu_backward_cuda);
}

}  // namespace deepfast
