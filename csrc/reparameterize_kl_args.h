// Arguments and outputs of deepfast::reparameterize_kl and reparameterize_kl_backward, shared by the CPU and CUDA
// implementations (host code only): checked, made contiguous, outputs allocated.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "checks.h"

namespace deepfast {

inline void check_reparameterize_kl_inputs(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps) {
  check_float(mu, "mu");
  check_like(logvar, "logvar", mu, "mu");
  check_like(eps, "eps", mu, "mu");
}

// Forward: contiguous inputs; z, and kl (0-dim when reduce, else per element).
struct ReparamKLForward {
  at::Tensor mu, logvar, eps, z, kl;

  ReparamKLForward(const at::Tensor& mu_, const at::Tensor& logvar_, const at::Tensor& eps_, bool reduce) {
    check_reparameterize_kl_inputs(mu_, logvar_, eps_);
    mu = mu_.contiguous(), logvar = logvar_.contiguous(), eps = eps_.contiguous();
    z = at::empty_like(mu, at::MemoryFormat::Contiguous);
    kl = reduce ? at::empty({}, mu.options()) : at::empty_like(z);
  }
};

// Backward: contiguous inputs and gradients; grad_kl 0-dim (reduced) or per element; dmu, dlogvar.
struct ReparamKLBackward {
  at::Tensor grad_z, grad_kl, mu, logvar, eps, grad_mu, grad_logvar;
  bool reduced;

  ReparamKLBackward(const at::Tensor& grad_z_, const at::Tensor& grad_kl_, const at::Tensor& mu_,
                    const at::Tensor& logvar_, const at::Tensor& eps_) {
    check_reparameterize_kl_inputs(mu_, logvar_, eps_);
    check_like(grad_z_, "grad_z", mu_, "mu");
    reduced = check_grad_kl(grad_kl_, mu_);
    mu = mu_.contiguous(), logvar = logvar_.contiguous(), eps = eps_.contiguous();
    grad_z = grad_z_.contiguous(), grad_kl = grad_kl_.contiguous();
    grad_mu = at::empty_like(mu, at::MemoryFormat::Contiguous);
    grad_logvar = at::empty_like(grad_mu);
  }
};

}  // namespace deepfast
