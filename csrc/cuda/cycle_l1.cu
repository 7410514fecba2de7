// CUDA kernels of deepfast::cycle_l1 and deepfast::cycle_l1_backward.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../cycle_l1.h"
#include "../cycle_l1_args.h"
#include "launch.cuh"

namespace deepfast {
namespace {

// One partial sum of |rec - orig| per block; finish_sum adds them in a fixed order.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    cycle_l1_forward_kernel(const scalar_t* __restrict__ rec, const scalar_t* __restrict__ orig,
                            acc_t<scalar_t>* __restrict__ partial, int64_t n) {
  using T = acc_t<scalar_t>;
  T sum = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    sum += cycle_l1_abs_diff<T>(T(rec[i]), T(orig[i]));
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

template <typename scalar_t, bool kRec, bool kOrig>
__global__ void __launch_bounds__(kThreads)
    cycle_l1_backward_kernel(const scalar_t* __restrict__ grad, double scale, const scalar_t* __restrict__ rec,
                             const scalar_t* __restrict__ orig, scalar_t* __restrict__ grad_rec,
                             scalar_t* __restrict__ grad_orig, int64_t n) {
  using T = acc_t<scalar_t>;
  const T c = T(double(T(grad[0])) * scale);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const T g = cycle_l1_grad<T>(T(rec[i]), T(orig[i]), c);
    if constexpr (kRec) grad_rec[i] = scalar_t(g);
    if constexpr (kOrig) grad_orig[i] = scalar_t(-g);
  }
}

at::Tensor cycle_l1_cuda(const at::Tensor& rec_, const at::Tensor& orig_, double scale) {
  const c10::cuda::CUDAGuard guard(rec_.device());
  at::Tensor rec, orig;
  std::tie(rec, orig) = cycle_l1_inputs(rec_, orig_);
  at::Tensor loss = at::empty({}, rec.options());
  const int64_t n = rec.numel();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rec.scalar_type(), "cycle_l1_cuda", [&] {
    using T = acc_t<scalar_t>;
    const int blocks = grid_size<cycle_l1_forward_kernel<scalar_t>>(n);
    at::Tensor partial = at::empty({blocks}, rec.options().dtype(c10::CppTypeToScalarType<T>::value));
    cycle_l1_forward_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        rec.const_data_ptr<scalar_t>(), orig.const_data_ptr<scalar_t>(), partial.mutable_data_ptr<T>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_sum<scalar_t>
        <<<1, kThreads, 0, stream>>>(partial.const_data_ptr<T>(), blocks, scale, loss.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return loss;
}

CycleGrads cycle_l1_backward_cuda(const at::Tensor& grad, const at::Tensor& rec_, const at::Tensor& orig_, double scale,
                                  std::array<bool, 2> output_mask) {
  const c10::cuda::CUDAGuard guard(rec_.device());
  at::Tensor rec, orig;
  std::tie(rec, orig) = cycle_l1_inputs(rec_, orig_);
  check_cycle_l1_grad(grad, rec);
  CycleGrads grads = cycle_l1_grads(rec, output_mask);
  const int64_t n = rec.numel();
  if (n == 0) return grads;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rec.scalar_type(), "cycle_l1_backward_cuda", [&] {
    const scalar_t *pg = grad.const_data_ptr<scalar_t>(), *pr = rec.const_data_ptr<scalar_t>(),
                   *po = orig.const_data_ptr<scalar_t>();
    with_grads<scalar_t>(grads, [&](auto kRec, auto kOrig, scalar_t* grad_rec, scalar_t* grad_orig) {
      constexpr auto kernel = cycle_l1_backward_kernel<scalar_t, decltype(kRec)::value, decltype(kOrig)::value>;
      kernel<<<grid_size<kernel>(n), kThreads, 0, stream>>>(pg, scale, pr, po, grad_rec, grad_orig, n);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CUDA, m) {
  m.impl("cycle_l1", &cycle_l1_cuda);
  m.impl("cycle_l1_backward", &cycle_l1_backward_cuda);
}

}  // namespace deepfast
