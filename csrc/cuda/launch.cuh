// Launch geometry and deterministic block reductions shared by the CUDA kernels.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>

namespace deepfast {

constexpr int kThreads = 256;

// Blocks of kThreads that fill every SM of the current device.
inline int64_t resident_blocks() {
  return int64_t(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 8;
}

// Grid for a grid-stride loop over n elements: enough blocks to fill every SM, no more.
inline int grid_size(int64_t n) {
  const int64_t needed = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, resident_blocks())));
}

// Sum over the threads of a block (blockDim.x == kThreads); the result is valid in thread 0.
// The order of additions is fixed, so the result is the same bits every run.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T warp_sums[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : T(0);
  if (warp == 0) {
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// out[0] = scale * sum(partial[0:count]), in one block, in a fixed order.
template <typename scalar_t, typename T>
__global__ void finish_sum(const T* __restrict__ partial, int count, double scale, scalar_t* __restrict__ out) {
  T v = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) v += partial[i];
  v = block_sum(v);
  if (threadIdx.x == 0) out[0] = scalar_t(double(v) * scale);
}

}  // namespace deepfast
