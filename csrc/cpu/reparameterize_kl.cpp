// CPU kernels of deepfast::reparameterize_kl and deepfast::reparameterize_kl_backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../reparameterize_kl.h"
#include "../reparameterize_kl_args.h"
#include "reduce.h"

namespace deepfast {
namespace {

template <typename scalar_t, bool kReduce>
DF_CPU_CLONES sum_t forward_range(const scalar_t* mu, const scalar_t* logvar, const scalar_t* eps, scalar_t* z,
                                  scalar_t* kl, int64_t begin, int64_t end) {
  using T = acc_t<scalar_t>;
  sum_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = begin; i < end; ++i) {
    T zi, kli;
    reparameterize_kl_forward<T>(T(mu[i]), T(logvar[i]), T(eps[i]), zi, kli);
    z[i] = scalar_t(zi);
    if constexpr (kReduce) {
      sum += kli;
    } else {
      kl[i] = scalar_t(kli);
    }
  }
  return sum;
}

template <typename scalar_t, bool kReduced>
DF_CPU_CLONES void backward_range(const scalar_t* gz, const scalar_t* gkl, acc_t<scalar_t> gkl_scalar,
                                  const scalar_t* mu, const scalar_t* logvar, const scalar_t* eps, scalar_t* dmu,
                                  scalar_t* dlogvar, int64_t begin, int64_t end) {
  using T = acc_t<scalar_t>;
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    T dmui, dlvi;
    reparameterize_kl_backward<T>(T(gz[i]), kReduced ? gkl_scalar : T(gkl[i]), T(mu[i]), T(logvar[i]), T(eps[i]), dmui,
                                  dlvi);
    dmu[i] = scalar_t(dmui);
    dlogvar[i] = scalar_t(dlvi);
  }
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_cpu(const at::Tensor& mu_, const at::Tensor& logvar_,
                                                         const at::Tensor& eps_, bool reduce, double scale) {
  const ReparamKLForward a(mu_, logvar_, eps_, reduce);
  const at::Tensor &mu = a.mu, &logvar = a.logvar, &eps = a.eps, &z = a.z, &kl = a.kl;
  const int64_t n = mu.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_kl_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t *pm = mu.const_data_ptr<scalar_t>(), *pl = logvar.const_data_ptr<scalar_t>(),
                   *pe = eps.const_data_ptr<scalar_t>();
    scalar_t* pz = z.mutable_data_ptr<scalar_t>();
    if (!reduce) {
      scalar_t* pk = kl.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, n, kBlock,
                       [&](int64_t b, int64_t e) { forward_range<scalar_t, false>(pm, pl, pe, pz, pk, b, e); });
      return;
    }
    const sum_t sum = deterministic_sum<sum_t>(
        n, [&](int64_t b, int64_t e) { return forward_range<scalar_t, true>(pm, pl, pe, pz, nullptr, b, e); });
    *kl.mutable_data_ptr<scalar_t>() = scalar_t(sum * scale);  // rounded as IEEE does (inf beyond the range)
  });
  return {z, kl};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cpu(const at::Tensor& grad_z_, const at::Tensor& grad_kl_,
                                                                  const at::Tensor& mu_, const at::Tensor& logvar_,
                                                                  const at::Tensor& eps_, double scale) {
  const ReparamKLBackward a(grad_z_, grad_kl_, mu_, logvar_, eps_);
  const at::Tensor &mu = a.mu, &logvar = a.logvar, &eps = a.eps, &gz = a.grad_z, &gkl = a.grad_kl, &dmu = a.grad_mu,
                   &dlogvar = a.grad_logvar;
  const bool reduced = a.reduced;
  const int64_t n = mu.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparameterize_kl_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t *pg = gz.const_data_ptr<scalar_t>(), *pk = gkl.const_data_ptr<scalar_t>(),
                   *pm = mu.const_data_ptr<scalar_t>(), *pl = logvar.const_data_ptr<scalar_t>(),
                   *pe = eps.const_data_ptr<scalar_t>();
    scalar_t *pdm = dmu.mutable_data_ptr<scalar_t>(), *pdl = dlogvar.mutable_data_ptr<scalar_t>();
    if (reduced) {
      const T gkl_scalar = static_cast<T>(static_cast<double>(T(pk[0])) * scale);
      at::parallel_for(0, n, kBlock, [&](int64_t b, int64_t e) {
        backward_range<scalar_t, true>(pg, nullptr, gkl_scalar, pm, pl, pe, pdm, pdl, b, e);
      });
    } else {
      at::parallel_for(0, n, kBlock, [&](int64_t b, int64_t e) {
        backward_range<scalar_t, false>(pg, pk, T(0), pm, pl, pe, pdm, pdl, b, e);
      });
    }
  });
  return {dmu, dlogvar};
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CPU, m) {
  m.impl("reparameterize_kl", &reparameterize_kl_cpu);
  m.impl("reparameterize_kl_backward", &reparameterize_kl_backward_cpu);
}

}  // namespace deepfast
