// CUDA kernels of deepfast::pgd_step and deepfast::pgd_step_.
//
// The elements of each sample are cut into tiles (the last one of a sample shorter), numbered
// sample-major; blocks loop over tiles, so a block's per-sample values are loaded once per tile and
// no element index is divided. The tile size (a power of 2 in [kMinTile, kMaxTile]) is the largest
// that still gives every SM several tiles. Linf: one kernel. L2: three, each tile writing one partial
// sum (sum of g^2, then of d^2) with a fixed-order block reduction; the per-sample norms add the
// partial sums of the sample in a fixed order (the first warp of each block), so the result is the
// same bits on every run on one GPU.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../pgd_step.h"
#include "../pgd_step_args.h"
#include "launch.cuh"

namespace deepfast {
namespace {

constexpr int64_t kMinTile = 1024, kMaxTile = 8192;

// What every kernel gets. out may be x (in place): no __restrict__ on those two.
template <typename scalar_t>
struct PgdArgs {
  const scalar_t* x;
  const scalar_t* g;
  const scalar_t* x0;
  scalar_t* out;
  const acc_t<scalar_t>* step;
  const acc_t<scalar_t>* eps;
  acc_t<scalar_t> lo, hi;
  int64_t per_sample, tile, tiles_per_sample, tiles;
};

struct Tile { int64_t sample, begin, end; };

template <typename scalar_t>
__device__ __forceinline__ Tile tile_at(const PgdArgs<scalar_t>& a, int64_t t) {
  const int64_t s = t / a.tiles_per_sample;
  const int64_t begin = s * a.per_sample + (t - s * a.tiles_per_sample) * a.tile;
  const int64_t sample_end = (s + 1) * a.per_sample;
  return {s, begin, begin + a.tile < sample_end ? begin + a.tile : sample_end};
}

// The partial sums of sample s added in a fixed order by the first warp (lane-strided, then a
// shuffle tree); the result is valid in thread 0.
template <typename T>
__device__ T sample_sum(const T* __restrict__ partial, int64_t s, int64_t tiles_per_sample) {
  T sum = 0;
  for (int64_t c = threadIdx.x; c < tiles_per_sample; c += 32) sum += partial[s * tiles_per_sample + c];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  return sum;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) pgd_linf_kernel(PgdArgs<scalar_t> a) {
  using T = acc_t<scalar_t>;
  for (int64_t t = blockIdx.x; t < a.tiles; t += gridDim.x) {
    const Tile tile = tile_at(a, t);
    const T step = a.step[tile.sample], eps = a.eps[tile.sample];
    for (int64_t i = tile.begin + threadIdx.x; i < tile.end; i += blockDim.x) {
      a.out[i] = scalar_t(pgd_linf<T>(T(a.x[i]), T(a.g[i]), T(a.x0[i]), step, eps, a.lo, a.hi));
    }
  }
}

// Pass 1: gpartial[t] = sum of g^2 over tile t.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    pgd_grad_sumsq_kernel(PgdArgs<scalar_t> a, acc_t<scalar_t>* __restrict__ gpartial) {
  using T = acc_t<scalar_t>;
  for (int64_t t = blockIdx.x; t < a.tiles; t += gridDim.x) {
    const Tile tile = tile_at(a, t);
    T sum = 0;
    for (int64_t i = tile.begin + threadIdx.x; i < tile.end; i += blockDim.x) {
      const T g = T(a.g[i]);
      sum += g * g;
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) gpartial[t] = sum;
    __syncthreads();  // block_sum's shared memory is reused by the next tile
  }
}

// Pass 2: dpartial[t] = sum of d^2 over tile t; pass 3 (kWrite): the output of tile t.
template <typename scalar_t, bool kWrite>
__global__ void __launch_bounds__(kThreads)
    pgd_l2_kernel(PgdArgs<scalar_t> a, const acc_t<scalar_t>* __restrict__ gpartial,
                  acc_t<scalar_t>* __restrict__ dpartial) {
  using T = acc_t<scalar_t>;
  __shared__ T ginv_factor[2];  // of the tile's sample, computed by the first warp
  for (int64_t t = blockIdx.x; t < a.tiles; t += gridDim.x) {
    const Tile tile = tile_at(a, t);
    if (threadIdx.x < 32) {
      const T gsum = sample_sum(gpartial, tile.sample, a.tiles_per_sample);
      if (threadIdx.x == 0) ginv_factor[0] = pgd_l2_grad_inv<T>(gsum);
      if constexpr (kWrite) {
        const T dsum = sample_sum(dpartial, tile.sample, a.tiles_per_sample);
        if (threadIdx.x == 0) ginv_factor[1] = pgd_l2_factor<T>(dsum, a.eps[tile.sample]);
      }
    }
    __syncthreads();
    const T step = a.step[tile.sample], ginv = ginv_factor[0];
    if constexpr (kWrite) {
      const T factor = ginv_factor[1];
      for (int64_t i = tile.begin + threadIdx.x; i < tile.end; i += blockDim.x) {
        const T x0 = T(a.x0[i]);
        a.out[i] =
            scalar_t(pgd_l2_out<T>(x0, pgd_l2_delta<T>(T(a.x[i]), T(a.g[i]), x0, step, ginv), factor, a.lo, a.hi));
      }
    } else {
      T sum = 0;
      for (int64_t i = tile.begin + threadIdx.x; i < tile.end; i += blockDim.x) {
        const T d = pgd_l2_delta<T>(T(a.x[i]), T(a.g[i]), T(a.x0[i]), step, ginv);
        sum += d * d;
      }
      sum = block_sum(sum);
      if (threadIdx.x == 0) dpartial[t] = sum;
    }
    __syncthreads();  // ginv_factor and block_sum's shared memory are reused by the next tile
  }
}

void pgd_cuda(const PgdProblem& pr) {
  const c10::cuda::CUDAGuard guard(pr.x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pr.x.scalar_type(), "pgd_step_cuda", [&] {
    using T = acc_t<scalar_t>;
    // one grid for the three L2 passes: the one with the fewest resident blocks sizes it
    const int64_t resident = pr.l2 ? std::min({resident_blocks<pgd_grad_sumsq_kernel<scalar_t>>(),
                                               resident_blocks<pgd_l2_kernel<scalar_t, false>>(),
                                               resident_blocks<pgd_l2_kernel<scalar_t, true>>()})
                                   : resident_blocks<pgd_linf_kernel<scalar_t>>();
    int64_t tile = kMaxTile;
    while (tile > kMinTile && pr.samples * ((pr.per_sample + tile - 1) / tile) < 4 * resident) tile /= 2;
    const int64_t tiles_per_sample = (pr.per_sample + tile - 1) / tile;
    const PgdArgs<scalar_t> a{pr.x.const_data_ptr<scalar_t>(),
                              pr.grad.const_data_ptr<scalar_t>(),
                              pr.x0.const_data_ptr<scalar_t>(),
                              pr.out.mutable_data_ptr<scalar_t>(),
                              pr.step.const_data_ptr<T>(),
                              pr.eps.const_data_ptr<T>(),
                              T(pr.lo),
                              T(pr.hi),
                              pr.per_sample,
                              tile,
                              tiles_per_sample,
                              pr.samples * tiles_per_sample};
    const int blocks = static_cast<int>(std::min(a.tiles, resident));  // grid-stride over the tiles
    if (!pr.l2) {
      pgd_linf_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(a);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    at::Tensor partial = at::empty({2, a.tiles}, pr.x.options().dtype(c10::CppTypeToScalarType<T>::value));
    T* gpartial = partial.mutable_data_ptr<T>();
    T* dpartial = gpartial + a.tiles;
    pgd_grad_sumsq_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(a, gpartial);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    pgd_l2_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(a, gpartial, dpartial);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    pgd_l2_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(a, gpartial, dpartial);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CUDA, m) {
  m.impl("pgd_step", &pgd_step_op<pgd_cuda>);
  m.impl("pgd_step_", &pgd_step_inplace_op<pgd_cuda>);
}

}  // namespace deepfast
