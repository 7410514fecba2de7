// CUDA kernels of deepfast::norm_act and deepfast::norm_act_backward (batch / instance norm +
// LeakyReLU). sums_kernel: one block per (b, tile of channels) reduces its groups in a fixed
// order (deterministic); apply_kernel: the elementwise pass (y forward, dx backward), grid-stride.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../norm_act_args.h"
#include "launch.cuh"

namespace deepfast {
namespace {

enum Mode { kStats = 0, kFromX = 1, kFromY = 2 };

// The values of group g the kernels use (weight and bias are per group, group_params).
template <typename T>
struct Group {
  T w, b, mean, inv, A, B;
  __device__ Group(const T* pw, const T* pb, const T* pmean, const T* pvar, int64_t g, double eps) {
    w = pw[g];
    b = pb[g];
    mean = pmean[g];
    inv = invstd_of<T>(pvar[g], eps);
    forward_coefficients<T>(w, b, mean, inv, A, B);
  }
};

// Block (kThreads / TC rows of TC threads): block (b, tile) reduces the groups b * C + c of its
// TC channels. kStats writes mean and biased var (shifted sums, shift = first value of the group);
// kFromX / kFromY write the sums of dz and dz * xhat.
template <typename scalar_t, int kMode, int TC>
__global__ void sums_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ dy,
                            const acc_t<scalar_t>* __restrict__ w, const acc_t<scalar_t>* __restrict__ bias,
                            const acc_t<scalar_t>* __restrict__ mean, const acc_t<scalar_t>* __restrict__ var,
                            acc_t<scalar_t>* __restrict__ out1, acc_t<scalar_t>* __restrict__ out2, int64_t R,
                            int64_t C, int64_t S, double eps, double slope) {
  using T = acc_t<scalar_t>;
  constexpr int TK = kThreads / TC;
  __shared__ T sh1[TK][TC], sh2[TK][TC];
  const int tx = threadIdx.x % TC, ty = threadIdx.x / TC;
  const int64_t b = blockIdx.x, c = int64_t(blockIdx.y) * TC + tx, g = b * C + c, M = R * S;
  const bool valid = c < C;
  const T sl = T(slope), inv_sl = kMode == kFromY ? T(1) / T(slope) : T(0);
  T shift = 0;
  T p1 = 0, p2 = 0;
  if (valid) {
    if constexpr (kMode == kStats) {
      if (M > 0) shift = T(a[(b * R * C + c) * S]);
      for (int64_t k = ty; k < M; k += TK) {
        const T d = T(a[((b * R + k / S) * C + c) * S + k % S]) - shift;
        p1 += d;
        p2 += d * d;
      }
    } else {
      const Group<T> q(w, bias, mean, var, g, eps);
      const T inv_w = T(1) / q.w;
      for (int64_t k = ty; k < M; k += TK) {
        const int64_t i = ((b * R + k / S) * C + c) * S + k % S;
        const T av = T(a[i]);
        T dz, xhat;
        if constexpr (kMode == kFromX) {
          dz = leaky_grad<T>(T(dy[i]), av * q.A + q.B, sl);
          xhat = (av - q.mean) * q.inv;
        } else {
          dz = leaky_grad<T>(T(dy[i]), av, sl);
          xhat = (leaky_inverse<T>(av, inv_sl) - q.b) * inv_w;
        }
        p1 += dz;
        p2 += dz * xhat;
      }
    }
  }
  sh1[ty][tx] = p1;
  sh2[ty][tx] = p2;
  __syncthreads();
  if (ty != 0 || !valid) return;
  for (int k = 1; k < TK; ++k) {
    p1 += sh1[k][tx];
    p2 += sh2[k][tx];
  }
  if constexpr (kMode == kStats) {
    shifted_moments<T>(shift, p1, p2, M, out1[g], out2[g]);
  } else {
    out1[g] = p1;
    out2[g] = p2;
  }
}

// Forward (kStats): y = leaky(x A + B). Backward: dx = K dz + u P + Q from x (kFromX) or y (kFromY).
template <typename scalar_t, int kMode>
__global__ void apply_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ dy,
                             scalar_t* __restrict__ out, const acc_t<scalar_t>* __restrict__ w,
                             const acc_t<scalar_t>* __restrict__ bias, const acc_t<scalar_t>* __restrict__ mean,
                             const acc_t<scalar_t>* __restrict__ var, const acc_t<scalar_t>* __restrict__ s1,
                             const acc_t<scalar_t>* __restrict__ s2, int64_t n, int64_t R, int64_t C, int64_t S,
                             double eps, double slope, bool batch_stats) {
  using T = acc_t<scalar_t>;
  const T sl = T(slope), inv_sl = kMode == kFromY ? T(1) / T(slope) : T(0);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / S, c = t % C, g = (t / (R * C)) * C + c;
    const Group<T> q(w, bias, mean, var, g, eps);
    const T av = T(a[i]);
    if constexpr (kMode == kStats) {
      out[i] = scalar_t(leaky<T>(av * q.A + q.B, sl));
    } else {
      T K, P, Q;
      backward_coefficients<T>(q.w, q.b, q.mean, q.inv, s1[g], s2[g], R * S, batch_stats, kMode == kFromY, K, P, Q);
      if constexpr (kMode == kFromX) {
        out[i] = scalar_t(K * leaky_grad<T>(T(dy[i]), av * q.A + q.B, sl) + av * P + Q);
      } else {
        out[i] = scalar_t(K * leaky_grad<T>(T(dy[i]), av, sl) + leaky_inverse<T>(av, inv_sl) * P + Q);
      }
    }
  }
}

template <typename scalar_t, int kMode>
void launch_sums(const NormLayout& L, const scalar_t* a, const scalar_t* dy, const at::Tensor& w,
                 const at::Tensor& b, const at::Tensor& mean, const at::Tensor& var, at::Tensor& out1,
                 at::Tensor& out2, double eps, double slope, cudaStream_t stream) {
  using T = acc_t<scalar_t>;
  if (L.groups() == 0) return;
  const T *pw = w.const_data_ptr<T>(), *pb = b.const_data_ptr<T>();
  const T *pm = kMode == kStats ? nullptr : mean.const_data_ptr<T>();
  const T *pv = kMode == kStats ? nullptr : var.const_data_ptr<T>();
  T *o1 = out1.mutable_data_ptr<T>(), *o2 = out2.mutable_data_ptr<T>();
  if (L.S > 1) {  // rows of S contiguous values: one group per block
    sums_kernel<scalar_t, kMode, 1><<<dim3(L.B, L.C), kThreads, 0, stream>>>(a, dy, pw, pb, pm, pv, o1, o2, L.R,
                                                                             L.C, L.S, eps, slope);
  } else {  // channels contiguous: 32 per block
    sums_kernel<scalar_t, kMode, 32><<<dim3(L.B, (L.C + 31) / 32), kThreads, 0, stream>>>(
        a, dy, pw, pb, pm, pv, o1, o2, L.R, L.C, L.S, eps, slope);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_cuda(const at::Tensor& x_,
                                                             const c10::optional<at::Tensor>& weight,
                                                             const c10::optional<at::Tensor>& bias,
                                                             const c10::optional<at::Tensor>& mean_,
                                                             const c10::optional<at::Tensor>& var_, bool instance,
                                                             double eps, double slope, bool inplace) {
  const NormLayout L = check_forward(x_, weight, bias, mean_, var_, instance, slope, inplace);
  const bool batch_stats = !mean_.has_value();
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(L.format());
  const at::ScalarType acc = acc_type(x);
  auto [w, b] = group_params(weight, bias, L, acc, x, inplace);
  at::Tensor y = at::empty_like(x, L.format());
  at::Tensor mean = stats_output(mean_, L, x);
  at::Tensor var = stats_output(var_, L, x);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "norm_act_cuda", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    if (batch_stats) launch_sums<scalar_t, kStats>(L, px, nullptr, w, b, mean, var, mean, var, eps, slope, stream);
    if (n == 0) return;
    apply_kernel<scalar_t, kStats><<<grid_size(n), kThreads, 0, stream>>>(
        px, nullptr, y.mutable_data_ptr<scalar_t>(), w.const_data_ptr<T>(), b.const_data_ptr<T>(),
        mean.const_data_ptr<T>(), var.const_data_ptr<T>(), nullptr, nullptr, n, L.R, L.C, L.S, eps, slope, false);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_backward_cuda(
    const at::Tensor& grad_y_, const at::Tensor& saved_, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& mean_, const at::Tensor& var_, bool batch_stats,
    bool instance, double eps, double slope, bool inplace) {
  const NormLayout L = check_backward(grad_y_, saved_, weight, bias, mean_, var_, instance, slope, inplace);
  const c10::cuda::CUDAGuard guard(saved_.device());
  const at::Tensor saved = saved_.contiguous(L.format()), grad_y = grad_y_.contiguous(L.format());
  const at::ScalarType acc = acc_type(saved);
  const at::Tensor mean = mean_.to(acc).contiguous(), var = var_.to(acc).contiguous();
  auto [w, b] = group_params(weight, bias, L, acc, saved, inplace);
  at::Tensor dx = at::empty_like(saved, L.format());
  at::Tensor s1 = at::empty({L.groups()}, saved.options().dtype(acc)), s2 = at::empty_like(s1);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t n = saved.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, saved.scalar_type(), "norm_act_backward_cuda", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t *pa = saved.const_data_ptr<scalar_t>(), *pdy = grad_y.const_data_ptr<scalar_t>();
    if (inplace) {
      launch_sums<scalar_t, kFromY>(L, pa, pdy, w, b, mean, var, s1, s2, eps, slope, stream);
    } else {
      launch_sums<scalar_t, kFromX>(L, pa, pdy, w, b, mean, var, s1, s2, eps, slope, stream);
    }
    if (n == 0) return;
    auto kernel = inplace ? apply_kernel<scalar_t, kFromY> : apply_kernel<scalar_t, kFromX>;
    kernel<<<grid_size(n), kThreads, 0, stream>>>(pa, pdy, dx.mutable_data_ptr<scalar_t>(), w.const_data_ptr<T>(),
                                                  b.const_data_ptr<T>(), mean.const_data_ptr<T>(),
                                                  var.const_data_ptr<T>(), s1.const_data_ptr<T>(),
                                                  s2.const_data_ptr<T>(), n, L.R, L.C, L.S, eps, slope, batch_stats);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {dx, s2.view({L.B, L.C}).sum(0), s1.view({L.B, L.C}).sum(0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CUDA, m) {
  m.impl("norm_act", &norm_act_cuda);
  m.impl("norm_act_backward", &norm_act_backward_cuda);
}

}  // namespace deepfast
