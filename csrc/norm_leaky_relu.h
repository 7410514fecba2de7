// Per-element and per-group math of the fused normalization + LeakyReLU ops (batch norm and
// instance norm), shared by the CPU and CUDA kernels.
//
// The data is viewed as [B][R][C][S] (contiguous in that order) with one statistics group per
// (b, c), reduced over r and s (M = R * S values):
//   NCHW batch norm      B = 1, R = N,     S = H*W       (groups = channels)
//   NCHW instance norm   B = N, R = 1,     S = H*W       (groups = (n, c))
//   NHWC batch norm      B = 1, R = N*H*W, S = 1         (column layout: C contiguous)
//   NHWC instance norm   B = N, R = H*W,   S = 1
// Group g = b * C + c uses weight[c], bias[c].
//
// Forward:   xhat = (x - mean) * invstd,  invstd = 1 / sqrt(var + eps)   (biased var)
//            z = xhat * w + b,            y = z > 0 ? z : slope * z
//            computed as z = (x - mean) * A + b with A = w * invstd (norm_z): x - mean is exact where
//            they are close, so a constant channel gives z = b exactly, and an infinite weight the
//            infinities torch gives.
// Backward:  dz = y > 0 ? dy : slope * dy            (z and y have the same sign)
//            sums per group: Sdz = sum dz, Sdzx = sum dz * xhat
//            dweight[c] = sum_b Sdzx,  dbias[c] = sum_b Sdz
//            dx = w * invstd * (dz - Sdz / M - xhat * Sdzx / M)     (batch statistics)
//            dx = w * invstd * dz                                    (running statistics)
//            computed as dx = K * dz + (u - u0) * P + Q (norm_dx): u - u0 = x - mean (from x) or
//            z - b (in-place mode, from y), K = A.
// In-place mode keeps only y: z = y > 0 ? y : y / slope (slope > 0) and xhat = (z - b) / w, with
// w replaced by sign(w) * max(|w|, 1e-5) (sign(0) = +1) in forward and backward.
#pragma once

#include "common.h"

namespace deepfast {

// In-place mode uses sign(w) * max(|w|, kInplaceMinWeight) for w (norm_leaky_relu_args.h: group_params).
constexpr double kInplaceMinWeight = 1e-5;

// Branch-free: a product with a selected factor (the values of torch's leaky_relu and its grad).
template <typename T>
DF_HD T leaky(T z, T slope) {
  return z * (z > T(0) ? T(1) : slope);
}

// z from y = leaky(z), for slope > 0.
template <typename T>
DF_HD T leaky_inverse(T y, T inv_slope) {
  return y * (y > T(0) ? T(1) : inv_slope);
}

// dz from dy and anything of the sign of z (z itself, or y).
template <typename T>
DF_HD T leaky_grad(T dy, T z, T slope) {
  return dy * (z > T(0) ? T(1) : slope);
}

// The shift of the shifted sums: the group's first value, or 0 where that is not finite (an infinite
// shift would turn every difference into NaN: the mean of a group holding +inf must be +inf, as torch's).
template <typename T>
DF_HD T stats_shift(T first) {
  return first - first == T(0) ? first : T(0);
}

// Mean and biased variance of M values from the sums of (x - shift) and (x - shift)^2. Rounding can
// make the variance negative: it is then 0; a NaN stays NaN (as torch's).
template <typename T>
DF_HD void shifted_moments(T shift, T s1, T s2, int64_t m, T& mean, T& var) {
  const T d = s1 / T(m);
  mean = shift + d;
  const T v = s2 / T(m) - d * d;
  var = v < T(0) ? T(0) : v;
}

// The weight in-place mode divides by: sign(w) * max(|w|, kInplaceMinWeight), sign(0) = +1.
template <typename T>
DF_HD T inplace_weight(T w) {
  const T m = T(kInplaceMinWeight);
  return w >= T(0) ? (w < m ? m : w) : (w > -m ? -m : w);
}

template <typename T>
DF_HD T invstd_of(T var, double eps) {
#if defined(__CUDA_ARCH__)
  return T(1) / sqrt(var + T(eps));
#else
  return T(1) / std::sqrt(var + T(eps));
#endif
}

// z = (x - mean) * A + b, A = w * invstd.
template <typename T>
DF_HD T norm_z(T x, T mean, T A, T b) {
  return (x - mean) * A + b;
}

// P and Q of dx = K * dz + (u - u0) * P + Q, K = w * invstd; u - u0 = x - mean (from_y false) or
// z - b (from_y true). batch_stats: the statistics were computed from this batch (training), so they
// depend on x; else P = Q = 0.
template <typename T>
DF_HD void backward_coefficients(T w, T invstd, T sum_dz, T sum_dz_xhat, int64_t m, bool batch_stats, bool from_y, T& P,
                                 T& Q) {
  if (!batch_stats) {
    P = T(0);
    Q = T(0);
    return;
  }
  const T K = w * invstd;
  const T a = K * sum_dz_xhat / T(m);  // dx = K dz - a * xhat - K Sdz / M
  P = from_y ? -a / w : -a * invstd;   // xhat = (z - b) / w, or (x - mean) * invstd
  Q = -K * sum_dz / T(m);
}

// dx = K dz + du P + Q, du = u - u0; with running statistics (not batch_stats: P = Q = 0) it is K dz
// alone, so that a non-finite x does not turn dx into NaN (torch's eval backward never reads x).
template <typename T>
DF_HD T norm_dx(T K, T dz, T du, T P, T Q, bool batch_stats) {
  return batch_stats ? K * dz + du * P + Q : K * dz;
}

}  // namespace deepfast
