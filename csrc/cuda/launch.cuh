// Launch geometry and deterministic block reductions shared by the CUDA kernels.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>

#include <algorithm>
#include <array>
#include <atomic>

namespace deepfast {

// Threads of every block; each kernel declares __launch_bounds__(kThreads).
constexpr int kThreads = 256;

// Blocks of Kernel (kThreads threads, no dynamic shared memory) that are resident on the current
// device at once: the occupancy API times the SM count, computed once per kernel and device.
template <auto Kernel>
int64_t resident_blocks() {
  static std::array<std::atomic<int64_t>, 64> cache{};  // per device index; 0: not computed yet
  const int device = c10::cuda::current_device();
  std::atomic<int64_t>& slot = cache.at(static_cast<size_t>(device));
  int64_t blocks = slot.load(std::memory_order_relaxed);
  if (blocks == 0) {
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, kThreads, 0));
    blocks = int64_t(std::max(per_sm, 1)) * at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
    slot.store(blocks, std::memory_order_relaxed);
  }
  return blocks;
}

// Grid of Kernel for a grid-stride loop over n elements: enough blocks to fill the device, no more.
template <auto Kernel>
int grid_size(int64_t n) {
  const int64_t needed = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, resident_blocks<Kernel>())));
}

// Sum over the threads of a block (blockDim.x == kThreads); the result is valid in thread 0.
// The order of additions is fixed, so the result is the same bits every run. A block that calls it
// again must __syncthreads() first (the shared memory is reused).
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
__global__ void __launch_bounds__(kThreads)
    finish_sum(const T* __restrict__ partial, int count, double scale, scalar_t* __restrict__ out) {
  T v = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) v += partial[i];
  v = block_sum(v);
  if (threadIdx.x == 0) out[0] = scalar_t(double(v) * scale);
}

}  // namespace deepfast
