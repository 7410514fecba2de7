// CUDA kernels of deepfast::reparameterize_kl and deepfast::reparameterize_kl_backward.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../reparameterize_kl.h"
#include "../reparameterize_kl_args.h"
#include "launch.cuh"

namespace deepfast {
namespace {

// One pass: writes z and either kl per element or one partial sum of kl per block.
template <typename scalar_t, bool kReduce>
__global__ void __launch_bounds__(kThreads)
    reparameterize_kl_forward_kernel(const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                                     const scalar_t* __restrict__ eps, scalar_t* __restrict__ z,
                                     scalar_t* __restrict__ kl, acc_t<scalar_t>* __restrict__ partial, int64_t n) {
  using T = acc_t<scalar_t>;
  T sum = 0;
#pragma unroll 1  // unrolled, the double kernel spills
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T zi, kli;
    reparameterize_kl_forward<T>(T(mu[i]), T(logvar[i]), T(eps[i]), zi, kli);
    z[i] = scalar_t(zi);
    if constexpr (kReduce) {
      sum += kli;
    } else {
      kl[i] = scalar_t(kli);
    }
  }
  if constexpr (kReduce) {
    sum = block_sum(sum);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
  }
}

template <typename scalar_t, bool kReduced>
__global__ void __launch_bounds__(kThreads)
    reparameterize_kl_backward_kernel(const scalar_t* __restrict__ gz, const scalar_t* __restrict__ gkl, double scale,
                                      const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                                      const scalar_t* __restrict__ eps, scalar_t* __restrict__ dmu,
                                      scalar_t* __restrict__ dlogvar, int64_t n) {
  using T = acc_t<scalar_t>;
  const T gkl_scalar = kReduced ? T(double(T(gkl[0])) * scale) : T(0);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    T dmui, dlvi;
    reparameterize_kl_backward<T>(T(gz[i]), kReduced ? gkl_scalar : T(gkl[i]), T(mu[i]), T(logvar[i]), T(eps[i]), dmui,
                                  dlvi);
    dmu[i] = scalar_t(dmui);
    dlogvar[i] = scalar_t(dlvi);
  }
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_cuda(const at::Tensor& mu_, const at::Tensor& logvar_,
                                                          const at::Tensor& eps_, bool reduce, double scale) {
  const c10::cuda::CUDAGuard guard(mu_.device());
  const ReparamKLForward a(mu_, logvar_, eps_, reduce);
  const at::Tensor &mu = a.mu, &logvar = a.logvar, &eps = a.eps, &z = a.z, &kl = a.kl;
  const int64_t n = mu.numel();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_kl_cuda", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t *pm = mu.const_data_ptr<scalar_t>(), *pl = logvar.const_data_ptr<scalar_t>(),
                   *pe = eps.const_data_ptr<scalar_t>();
    scalar_t* pz = z.mutable_data_ptr<scalar_t>();
    if (!reduce) {
      if (n == 0) return;
      reparameterize_kl_forward_kernel<scalar_t, false>
          <<<grid_size<reparameterize_kl_forward_kernel<scalar_t, false>>(n), kThreads, 0, stream>>>(
              pm, pl, pe, pz, kl.mutable_data_ptr<scalar_t>(), nullptr, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const int blocks = grid_size<reparameterize_kl_forward_kernel<scalar_t, true>>(n);
    at::Tensor partial = at::empty({blocks}, mu.options().dtype(c10::CppTypeToScalarType<T>::value));
    reparameterize_kl_forward_kernel<scalar_t, true>
        <<<blocks, kThreads, 0, stream>>>(pm, pl, pe, pz, nullptr, partial.mutable_data_ptr<T>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_sum<scalar_t>
        <<<1, kThreads, 0, stream>>>(partial.const_data_ptr<T>(), blocks, scale, kl.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {z, kl};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cuda(const at::Tensor& grad_z_,
                                                                   const at::Tensor& grad_kl_, const at::Tensor& mu_,
                                                                   const at::Tensor& logvar_, const at::Tensor& eps_,
                                                                   double scale) {
  const c10::cuda::CUDAGuard guard(mu_.device());
  const ReparamKLBackward a(grad_z_, grad_kl_, mu_, logvar_, eps_);
  const at::Tensor &mu = a.mu, &logvar = a.logvar, &eps = a.eps, &gz = a.grad_z, &gkl = a.grad_kl, &dmu = a.grad_mu,
                   &dlogvar = a.grad_logvar;
  const bool reduced = a.reduced;
  const int64_t n = mu.numel();
  if (n == 0) return {dmu, dlogvar};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_kl_backward_cuda", [&] {
    const scalar_t *pg = gz.const_data_ptr<scalar_t>(), *pk = gkl.const_data_ptr<scalar_t>(),
                   *pm = mu.const_data_ptr<scalar_t>(), *pl = logvar.const_data_ptr<scalar_t>(),
                   *pe = eps.const_data_ptr<scalar_t>();
    scalar_t *pdm = dmu.mutable_data_ptr<scalar_t>(), *pdl = dlogvar.mutable_data_ptr<scalar_t>();
    if (reduced) {
      reparameterize_kl_backward_kernel<scalar_t, true>
          <<<grid_size<reparameterize_kl_backward_kernel<scalar_t, true>>(n), kThreads, 0, stream>>>(
              pg, pk, scale, pm, pl, pe, pdm, pdl, n);
    } else {
      reparameterize_kl_backward_kernel<scalar_t, false>
          <<<grid_size<reparameterize_kl_backward_kernel<scalar_t, false>>(n), kThreads, 0, stream>>>(
              pg, pk, scale, pm, pl, pe, pdm, pdl, n);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dmu, dlogvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CUDA, m) {
  m.impl("reparameterize_kl", &reparameterize_kl_cuda);
  m.impl("reparameterize_kl_backward", &reparameterize_kl_backward_cuda);
}

}  // namespace deepfast
