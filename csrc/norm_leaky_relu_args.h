// Host-side argument checks, memory layout and per-group parameters of the normalization +
// LeakyReLU ops, shared by the CPU and CUDA implementations (see norm_leaky_relu.h for the layout).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <algorithm>

#include "checks.h"
#include "norm_leaky_relu.h"

namespace deepfast {

struct NormLayout {
  int64_t B, R, C, S;
  bool channels_last;  // memory format of the input and of every output shaped like it
  int64_t groups() const { return B * C; }
  int64_t count() const { return R * S; }  // values per statistics group
  at::MemoryFormat format() const {
    return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  }
};

// How the CUDA passes cut [B][R][C][S] into chunks, one block each (a function of the sizes only, so
// the same on every device): rows [r0, r0 + rows) by values [s0, s0 + seg) of one channel when S > 1,
// or rows [r0, r0 + rows) of `lanes` channels side by side when S == 1 (channels contiguous).
struct NormGeometry {
  static constexpr int64_t kChunk = 16384;          // values per block (about)
  int64_t R, C, S, rows, seg, spr, chunks, ctiles;  // spr: segments per row
  NormGeometry(const NormLayout& L, int64_t lanes) : R(L.R), C(L.C), S(L.S) {
    if (S == 1) {
      ctiles = (C + lanes - 1) / lanes;
      seg = 1;
      rows = std::max<int64_t>(1, kChunk / lanes);
    } else {
      ctiles = C;
      seg = std::max<int64_t>(1, std::min(S, kChunk));  // long rows are cut into segments
      rows = std::max<int64_t>(1, kChunk / std::max<int64_t>(S, 1));
    }
    spr = (S + seg - 1) / seg;
    chunks = R * S == 0 ? 0 : ((R + rows - 1) / rows) * spr;
  }
  int64_t blocks(const NormLayout& L) const { return L.B * ctiles * chunks; }
};

inline at::ScalarType acc_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// 4-d tensors that are channels_last (and not also NCHW-contiguous) keep that layout; anything
// else is made NCHW-contiguous.
inline NormLayout norm_layout(const at::Tensor& x, bool instance) {
  TORCH_CHECK(x.dim() >= 2, "deepfast: x must have shape (N, C, *), got ", x.sizes());
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t spatial = N * C == 0 ? 0 : x.numel() / (N * C);
  const bool cl = x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t B = instance ? N : 1;
  if (cl) return {B, instance ? spatial : N * spatial, C, 1, true};
  return {B, instance ? 1 : N, C, spatial, false};
}

inline void check_channels(const c10::optional<at::Tensor>& t, const char* name, const at::Tensor& x) {
  if (!t.has_value()) return;
  check_float(*t, name);
  TORCH_CHECK(t->dim() == 1 && t->size(0) == x.size(1), "deepfast: ", name, " must have shape (C,) = (", x.size(1),
              ",) for x of shape ", x.sizes(), ", got ", t->sizes());
  TORCH_CHECK(t->device() == x.device(), "deepfast: ", name, " must be on the device of x (", x.device(), "), got ",
              t->device());
}

inline void check_norm_args(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                            const c10::optional<at::Tensor>& bias, double slope, bool inplace) {
  check_float(x, "x");
  TORCH_CHECK(x.dim() >= 2, "deepfast: x must have shape (N, C, *), got ", x.sizes());
  check_channels(weight, "weight", x);
  check_channels(bias, "bias", x);
  TORCH_CHECK(slope >= 0, "deepfast: negative_slope must be >= 0, got ", slope);
  TORCH_CHECK(!inplace || slope > 0, "deepfast: inplace needs negative_slope > 0 (ReLU cannot be inverted)");
}

// Checks the arguments of norm_leaky_relu; returns the layout of x.
inline NormLayout check_forward(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mean,
                                const c10::optional<at::Tensor>& var, bool instance, double slope, bool inplace) {
  check_norm_args(x, weight, bias, slope, inplace);
  TORCH_CHECK(mean.has_value() == var.has_value(), "deepfast: running_mean and running_var must be given together");
  TORCH_CHECK(!mean.has_value() || !instance, "deepfast: instance norm always uses the statistics of its input");
  check_channels(mean, "running_mean", x);
  check_channels(var, "running_var", x);
  return norm_layout(x, instance);
}

// Checks the arguments of norm_leaky_relu_backward; returns the layout of saved.
inline NormLayout check_backward(const at::Tensor& grad_y, const at::Tensor& saved,
                                 const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
                                 const at::Tensor& mean, const at::Tensor& var, bool instance, double slope,
                                 bool inplace) {
  check_norm_args(saved, weight, bias, slope, inplace);
  check_like(grad_y, "grad_y", saved, inplace ? "y" : "x");
  const NormLayout L = norm_layout(saved, instance);
  TORCH_CHECK(mean.numel() == L.groups() && var.numel() == L.groups(), "deepfast: mean and var must have ", L.groups(),
              " values (one per statistics group), got ", mean.numel(), " and ", var.numel());
  return L;
}

// The mean or var output of norm_leaky_relu: a copy of the given statistics in the accumulation dtype, or a
// new tensor for the batch statistics.
inline at::Tensor stats_output(const c10::optional<at::Tensor>& given, const NormLayout& L, const at::Tensor& x) {
  const at::ScalarType acc = acc_type(x);
  return given.has_value() ? given->to(acc, false, true).contiguous() : at::empty({L.groups()}, x.options().dtype(acc));
}

// Per-group copies (B * C values, accumulation dtype) of weight (1 when absent; sign
// (w) * max(|w|, 1e-5) in in-place mode) and bias (0 when absent).
inline std::pair<at::Tensor, at::Tensor> group_params(const c10::optional<at::Tensor>& weight,
                                                      const c10::optional<at::Tensor>& bias, const NormLayout& L,
                                                      at::ScalarType acc, const at::Tensor& x, bool inplace) {
  const auto opts = x.options().dtype(acc);
  at::Tensor w = weight.has_value() ? weight->to(acc) : at::ones({L.C}, opts);
  at::Tensor b = bias.has_value() ? bias->to(acc) : at::zeros({L.C}, opts);
  if (inplace) {
    const double m = kInplaceMinWeight;
    w = w.clamp_min(m).where(w.ge(0), w.clamp_max(-m));
  }
  return {w.repeat({L.B}).contiguous(), b.repeat({L.B}).contiguous()};
}

}  // namespace deepfast
