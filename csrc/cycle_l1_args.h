// Arguments and outputs of deepfast::cycle_l1 and cycle_l1_backward, shared by the CPU and CUDA
// implementations (host code only).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <array>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "checks.h"

namespace deepfast {

using CycleGrads = std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>>;

// rec and orig, checked, in one dense memory layout, so that flat index i is the same element of
// both: rec's own when rec is non-overlapping and dense (NCHW, channels_last, a transpose...), else
// that of at::empty_like(rec). A tensor not in that layout is copied into it.
inline std::pair<at::Tensor, at::Tensor> cycle_l1_inputs(const at::Tensor& rec, const at::Tensor& orig) {
  check_float(rec, "rec");
  check_like(orig, "orig", rec, "rec");
  at::Tensor r = rec.is_non_overlapping_and_dense() ? rec : at::empty_like(rec).copy_(rec);
  at::Tensor o = orig.strides() == r.strides() ? orig : at::empty_like(r).copy_(orig);
  return {r, o};
}

inline void check_cycle_l1_grad(const at::Tensor& grad, const at::Tensor& rec) {
  TORCH_CHECK(grad.dim() == 0, "deepfast: grad must be a 0-dim tensor (the gradient of the loss), got shape ",
              grad.sizes());
  TORCH_CHECK(grad.scalar_type() == rec.scalar_type() && grad.device() == rec.device(),
              "deepfast: grad must have the dtype and device of rec (", rec.scalar_type(), ", ", rec.device(),
              "), got ", grad.scalar_type(), ", ", grad.device());
}

// The gradients that output_mask asks for (of rec, of orig), in the layout of r from cycle_l1_inputs.
inline CycleGrads cycle_l1_grads(const at::Tensor& r, std::array<bool, 2> output_mask) {
  CycleGrads grads;
  if (output_mask[0]) std::get<0>(grads) = at::empty_like(r);
  if (output_mask[1]) std::get<1>(grads) = at::empty_like(r);
  return grads;
}

// f(std::bool_constant<has rec grad>{}, std::bool_constant<has orig grad>{}, grad_rec data, grad_orig
// data): which gradients to write as compile-time flags, and where (nullptr for a gradient not
// asked for). Nothing when no gradient is asked for.
template <typename scalar_t, typename F>
void with_grads(const CycleGrads& grads, const F& f) {
  const auto& [grad_rec, grad_orig] = grads;
  scalar_t* rec_data = grad_rec ? grad_rec->mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* orig_data = grad_orig ? grad_orig->mutable_data_ptr<scalar_t>() : nullptr;
  if (grad_rec && grad_orig) {
    f(std::true_type{}, std::true_type{}, rec_data, orig_data);
  } else if (grad_rec) {
    f(std::true_type{}, std::false_type{}, rec_data, orig_data);
  } else if (grad_orig) {
    f(std::false_type{}, std::true_type{}, rec_data, orig_data);
  }
}

}  // namespace deepfast
