// Argument checks shared by the CPU and CUDA op implementations (host code only).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace deepfast {

inline void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "deepfast: ", name, " must be a floating-point tensor, got ",
              t.scalar_type());
}

// `t` must match `ref` in shape, dtype and device.
inline void check_like(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(t.sizes() == ref.sizes(), "deepfast: ", name, " must have the shape of ", ref_name, " ", ref.sizes(),
              ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "deepfast: ", name, " must have the dtype of ", ref_name, " (",
              ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), "deepfast: ", name, " must be on the device of ", ref_name, " (",
              ref.device(), "), got ", t.device());
}

// grad_kl is either a 0-dim tensor (reduced kl) or has the shape of mu (reduction "none").
inline bool check_grad_kl(const at::Tensor& grad_kl, const at::Tensor& mu) {
  if (grad_kl.dim() == 0 && mu.dim() != 0) {
    TORCH_CHECK(grad_kl.scalar_type() == mu.scalar_type() && grad_kl.device() == mu.device(),
                "deepfast: grad_kl must have the dtype and device of mu");
    return true;
  }
  check_like(grad_kl, "grad_kl", mu, "mu");
  return false;
}

}  // namespace deepfast
