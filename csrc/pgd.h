// Per-element math of the PGD projection step, shared by every compiled backend. Per sample s
// (step = step_size[s], eps = eps[s]; [lo, hi] the box, (-inf, inf) for none):
//   Linf:  x' = clip(min(max(x + step * sign(g), x0 - eps), x0 + eps), lo, hi)     sign(0) = 0
//   L2:    ginv   = 1 / (||g||_2 + 1e-10)                   (pass 1: sum of g^2 over the sample)
//          d      = x + step * g * ginv - x0                 (pass 2: sum of d^2 over the sample)
//          factor = ||d|| > eps ? eps / ||d|| : 1
//          x'     = clip(x0 + d * factor, lo, hi)            (pass 3: d recomputed, scaled, clipped)
// Branch-free selects, so that the CPU loops vectorise. Non-finite values behave as in torch: min, max
// and clamp propagate NaN, and sign(NaN) = 0 (torch.sign).
#pragma once

#include "common.h"

namespace deepfast {

// max(a, b) and min(a, b) that return NaN when either is NaN (torch.maximum / torch.minimum). Two
// selects, not `a > b || a != a`: GCC vectorises neither clone of the CPU loop with the short circuit.
template <typename T>
DF_HD T max_nan(T a, T b) {
  const T m = a > b ? a : b;  // b where either is NaN
  return a != a ? a : m;
}

template <typename T>
DF_HD T min_nan(T a, T b) {
  const T m = a < b ? a : b;
  return a != a ? a : m;
}

template <typename T>
DF_HD T clip(T v, T lo, T hi) {
  return min_nan(max_nan(v, lo), hi);
}

// torch.sign: -1, 0 or 1; 0 for NaN.
template <typename T>
DF_HD T sign_of(T g) {
  return T(g > T(0)) - T(g < T(0));
}

template <typename T>
DF_HD T pgd_linf(T x, T g, T x0, T step, T eps, T lo, T hi) {
  return clip(clip(x + step * sign_of(g), x0 - eps, x0 + eps), lo, hi);
}

// 1 / (||g|| + 1e-10) from the sum of g^2 over the sample.
template <typename T>
DF_HD T pgd_l2_grad_inv(T grad_sumsq) {
  return T(1) / (sqrt_acc(grad_sumsq) + T(1e-10));
}

template <typename T>
DF_HD T pgd_l2_delta(T x, T g, T x0, T step, T ginv) {
  return x + step * (g * ginv) - x0;
}

// eps / ||d|| where ||d|| > eps, else 1 (no 0/0 when eps = 0 or d = 0), from the sum of d^2.
template <typename T>
DF_HD T pgd_l2_factor(T delta_sumsq, T eps) {
  const T norm = sqrt_acc(delta_sumsq);
  return norm > eps ? eps / norm : T(1);
}

template <typename T>
DF_HD T pgd_l2_out(T x0, T d, T factor, T lo, T hi) {
  return clip(x0 + d * factor, lo, hi);
}

}  // namespace deepfast
