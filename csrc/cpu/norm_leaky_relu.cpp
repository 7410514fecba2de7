// CPU kernels of deepfast::norm_leaky_relu and deepfast::norm_leaky_relu_backward (batch / instance norm +
// LeakyReLU). Two passes over the data each way: per-group sums, then one elementwise pass.
// NCHW data is reduced along contiguous rows of S values; channels_last data (S == 1) along
// columns, vectorised across C (S == 0, an empty input, has nothing to reduce). Partial sums, in
// float64 (sum_t), have a fixed size and are added in a fixed order, so results do not depend on the
// thread count; the per-group coefficients are computed in float64 too, then rounded once.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../norm_leaky_relu_args.h"
#include "reduce.h"

namespace deepfast {
namespace {

// Values per partial sum, and per task of the elementwise pass.
constexpr int64_t kChunk = 1 << 12;
constexpr int kLanes = 16;

// The loops below are the DF_CPU_CLONES functions, called from the parallel_for lambdas: a lambda
// is a function of its own, compiled for the baseline target, so it must not hold the loops.
// Each takes the functor f by value: a local copy lives in registers, while the captures of a
// closure behind a reference are memory loads that GCC sinks into one arm of a select, which then
// stays a branch and the loop is not vectorised.

// Adds the kLanes partial sums l1, l2 in order into a1, a2 and clears them.
template <typename T>
inline void flush_lanes(T* l1, T* l2, T& a1, T& a2) {
  for (int l = 0; l < kLanes; ++l) {
    a1 += l1[l];
    a2 += l2[l];
    l1[l] = l2[l] = T(0);
  }
}

// Groups [g0, g1) of a layout with rows of S != 1 contiguous values.
template <typename T, typename F>
DF_CPU_CLONES void row_sums(const NormLayout& L, const F f, int64_t g0, int64_t g1, T* s1, T* s2) {
  const int64_t R = L.R, C = L.C, S = L.S;
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t b = g / C, c = g % C;
    // kLanes partial sums (a vector loop without `omp simd reduction`, which GCC does not
    // vectorise here) over at least kChunk values, whole rows or chunks of a long row, then added
    // in order: short rows (4x4, 8x8 maps) share the lanes instead of each paying for the adds.
    T a1 = 0, a2 = 0, l1[kLanes] = {}, l2[kLanes] = {};
    int64_t filled = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t base = ((b * R + r) * C + c) * S;
      for (int64_t s0 = 0; s0 < S; s0 += kChunk) {
        const int64_t s_end = std::min(S, s0 + kChunk);
        int64_t s = s0;
        for (; s + kLanes <= s_end; s += kLanes) {
#pragma omp simd
          for (int l = 0; l < kLanes; ++l) {
            T u, v;
            f(base + s + l, g, u, v);
            l1[l] += u;
            l2[l] += v;
          }
        }
        for (int l = 0; s < s_end; ++s, ++l) {
          T u, v;
          f(base + s, g, u, v);
          l1[l] += u;
          l2[l] += v;
        }
        filled += s_end - s0;
        if (filled >= kChunk) {
          flush_lanes(l1, l2, a1, a2);
          filled = 0;
        }
      }
    }
    flush_lanes(l1, l2, a1, a2);
    s1[g] = a1;
    s2[g] = a2;
  }
}

// Column sums over rows [r0, r1) of batch b (C contiguous values per row) into p1[C], p2[C].
template <typename T, typename F>
DF_CPU_CLONES void column_sums(const NormLayout& L, const F f, int64_t b, int64_t r0, int64_t r1, T* p1, T* p2) {
  const int64_t C = L.C;
  std::fill(p1, p1 + C, T(0));
  std::fill(p2, p2 + C, T(0));
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t base = (b * L.R + r) * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      T u, v;
      f(base + c, b * C + c, u, v);
      p1[c] += u;
      p2[c] += v;
    }
  }
}

// s1[g], s2[g] = sums over group g of the two values f(i, g, u, v) gives for element i.
template <typename T, typename F>
void group_sums(const NormLayout& L, const F& f, T* s1, T* s2) {
  const int64_t B = L.B, R = L.R, C = L.C;
  if (L.S != 1) {
    at::parallel_for(0, L.groups(), 1, [&](int64_t g0, int64_t g1) { row_sums<T>(L, f, g0, g1, s1, s2); });
    return;
  }
  // partial sums over fixed chunks of rows, added in order
  const int64_t rows = std::max<int64_t>(1, kChunk / std::max<int64_t>(C, 1));
  const int64_t chunks = (R + rows - 1) / rows;
  std::vector<T> part1(B * chunks * C), part2(B * chunks * C);
  at::parallel_for(0, B * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = (t % chunks) * rows;
      column_sums<T>(L, f, t / chunks, r0, std::min(R, r0 + rows), part1.data() + t * C, part2.data() + t * C);
    }
  });
  std::fill(s1, s1 + L.groups(), T(0));
  std::fill(s2, s2 + L.groups(), T(0));
  for (int64_t t = 0; t < B * chunks; ++t) {
    for (int64_t c = 0; c < C; ++c) {
      s1[(t / chunks) * C + c] += part1[t * C + c];
      s2[(t / chunks) * C + c] += part2[t * C + c];
    }
  }
}

// f(i, g) for the elements of rows [r0, r1): rows of S values (S != 1), or of C values (S == 1).
template <typename F>
DF_CPU_CLONES void apply_rows(const NormLayout& L, const F f, int64_t r0, int64_t r1) {
  const int64_t R = L.R, C = L.C, S = L.S;
  if (S != 1) {
    // row = (b * R + r) * C + c, group b * C + c: c and b followed from row to row (no divisions)
    int64_t c = r0 % C, r = (r0 / C) % R, b = r0 / (R * C);
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t g = b * C + c, base = row * S;
#pragma omp simd
      for (int64_t s = 0; s < S; ++s) f(base + s, g);
      if (++c == C) {
        c = 0;
        if (++r == R) {
          r = 0;
          ++b;
        }
      }
    }
    return;
  }
  for (int64_t row = r0; row < r1; ++row) {
    const int64_t gb = (row / R) * C, base = row * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) f(base + c, gb + c);
  }
}

// f(i, g) for every element i, g its group.
template <typename F>
void for_each_element(const NormLayout& L, const F& f) {
  const int64_t len = L.S != 1 ? L.S : L.C, rows = L.S != 1 ? L.B * L.R * L.C : L.B * L.R;
  at::parallel_for(0, rows, std::max<int64_t>(1, kChunk / std::max<int64_t>(len, 1)),
                   [&](int64_t r0, int64_t r1) { apply_rows(L, f, r0, r1); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_leaky_relu_cpu(const at::Tensor& x_,
                                                                   const c10::optional<at::Tensor>& weight,
                                                                   const c10::optional<at::Tensor>& bias,
                                                                   const c10::optional<at::Tensor>& mean_,
                                                                   const c10::optional<at::Tensor>& var_, bool instance,
                                                                   double eps, double slope, bool inplace) {
  const NormLayout L = check_forward(x_, weight, bias, mean_, var_, instance, slope, inplace);
  const bool batch_stats = !mean_.has_value();
  const at::Tensor x = x_.contiguous(L.format());
  const at::ScalarType acc = acc_type(x);
  auto [wg, bg] = group_params(weight, bias, L, acc, x, inplace);
  at::Tensor y = at::empty_like(x, L.format());
  at::Tensor mean = stats_output(mean_, L, x);
  at::Tensor var = stats_output(var_, L, x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "norm_leaky_relu_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const int64_t G = L.groups(), M = L.count();
    T* pm = mean.mutable_data_ptr<T>();
    T* pv = var.mutable_data_ptr<T>();
    std::vector<sum_t> mean64(G), var64(G);
    if (batch_stats) {
      // shifted sums, shift = the first value of the group: stable while it is within a few
      // standard deviations of the mean
      std::vector<sum_t> shift(G), s1(G), s2(G);
      for (int64_t g = 0; g < G; ++g) {
        shift[g] = M ? stats_shift<sum_t>(sum_t(px[((g / L.C) * L.R * L.C + g % L.C) * L.S])) : 0.0;
      }
      const sum_t* sh = shift.data();
      group_sums<sum_t>(
          L,
          [=](int64_t i, int64_t g, sum_t& u, sum_t& v) {
            const sum_t d = sum_t(px[i]) - sh[g];
            u = d;
            v = d * d;
          },
          s1.data(), s2.data());
      for (int64_t g = 0; g < G; ++g) {
        shifted_moments<sum_t>(shift[g], s1[g], s2[g], M, mean64[g], var64[g]);
        pm[g] = T(mean64[g]);
        pv[g] = T(var64[g]);
      }
    } else {
      std::copy(pm, pm + G, mean64.begin());
      std::copy(pv, pv + G, var64.begin());
    }
    std::vector<T> A(G), mg(G);
    const T *pw = wg.const_data_ptr<T>(), *pb = bg.const_data_ptr<T>();
    for (int64_t g = 0; g < G; ++g) {
      A[g] = T(sum_t(pw[g]) * invstd_of<sum_t>(var64[g], eps));
      mg[g] = T(mean64[g]);
    }
    const T *pa = A.data(), *pmg = mg.data(), sl = T(slope);
    scalar_t* py = y.mutable_data_ptr<scalar_t>();
    for_each_element(
        L, [=](int64_t i, int64_t g) { py[i] = scalar_t(leaky<T>(norm_z<T>(T(px[i]), pmg[g], pa[g], pb[g]), sl)); });
  });
  return {y, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_leaky_relu_backward_cpu(
    const at::Tensor& grad_y_, const at::Tensor& saved_, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const at::Tensor& mean_, const at::Tensor& var_, bool batch_stats,
    bool instance, double eps, double slope, bool inplace) {
  const NormLayout L = check_backward(grad_y_, saved_, weight, bias, mean_, var_, instance, slope, inplace);
  const at::Tensor saved = saved_.contiguous(L.format()), grad_y = grad_y_.contiguous(L.format());
  const at::ScalarType acc = acc_type(saved);
  TORCH_CHECK(mean_.numel() == L.groups() && var_.numel() == L.groups(), "deepfast: mean and var must have ",
              L.groups(), " values (one per statistics group), got ", mean_.numel(), " and ", var_.numel());
  const at::Tensor mean = mean_.to(acc).contiguous(), var = var_.to(acc).contiguous();
  auto [wg, bg] = group_params(weight, bias, L, acc, saved, inplace);
  at::Tensor dx = at::empty_like(saved, L.format());
  at::Tensor dweight = at::empty({L.C}, saved.options().dtype(acc));
  at::Tensor dbias = at::empty({L.C}, saved.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, saved.scalar_type(), "norm_leaky_relu_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const int64_t G = L.groups(), M = L.count();
    const scalar_t *pdy = grad_y.const_data_ptr<scalar_t>(), *ps = saved.const_data_ptr<scalar_t>();
    const T *pw = wg.const_data_ptr<T>(), *pb = bg.const_data_ptr<T>();
    const T *pmean = mean.const_data_ptr<T>(), *pvar = var.const_data_ptr<T>();
    // per group, computed in float64 and rounded for the elementwise passes: K = A = w invstd, mean,
    // invstd, and 1 / w (xhat = (z - b) / w in in-place mode)
    std::vector<T> A(G), mg(G), inv(G), winv(G);
    std::vector<sum_t> inv64(G), s1(G), s2(G);
    for (int64_t g = 0; g < G; ++g) {
      inv64[g] = invstd_of<sum_t>(pvar[g], eps);
      A[g] = T(sum_t(pw[g]) * inv64[g]);
      mg[g] = pmean[g];
      inv[g] = T(inv64[g]);
      winv[g] = T(1.0 / sum_t(pw[g]));
    }
    const T *pa = A.data(), *pmg = mg.data(), *pinv = inv.data(), *pwinv = winv.data();
    const T sl = T(slope), inv_sl = inplace ? T(1) / T(slope) : T(0);
    if (inplace) {
      group_sums<sum_t>(
          L,
          [=](int64_t i, int64_t g, sum_t& u, sum_t& v) {
            const T yv = T(ps[i]);
            const T dz = leaky_grad<T>(T(pdy[i]), yv, sl);
            u = dz;
            v = dz * (leaky_inverse<T>(yv, inv_sl) - pb[g]) * pwinv[g];
          },
          s1.data(), s2.data());
    } else {
      group_sums<sum_t>(
          L,
          [=](int64_t i, int64_t g, sum_t& u, sum_t& v) {
            const T xv = T(ps[i]);
            const T dz = leaky_grad<T>(T(pdy[i]), norm_z<T>(xv, pmg[g], pa[g], pb[g]), sl);
            u = dz;
            v = dz * (xv - pmg[g]) * pinv[g];
          },
          s1.data(), s2.data());
    }
    T *pdw = dweight.mutable_data_ptr<T>(), *pdb = dbias.mutable_data_ptr<T>();
    std::vector<sum_t> dw(L.C), db(L.C);
    std::vector<T> P(G), Q(G);
    for (int64_t g = 0; g < G; ++g) {
      db[g % L.C] += s1[g];
      dw[g % L.C] += s2[g];
      sum_t p, q;
      backward_coefficients<sum_t>(pw[g], inv64[g], s1[g], s2[g], M, batch_stats, inplace, p, q);
      P[g] = T(p);
      Q[g] = T(q);
    }
    for (int64_t c = 0; c < L.C; ++c) {
      pdw[c] = T(dw[c]);
      pdb[c] = T(db[c]);
    }
    const T *pp = P.data(), *pq = Q.data();
    scalar_t* pdx = dx.mutable_data_ptr<scalar_t>();
    if (inplace) {
      for_each_element(L, [=](int64_t i, int64_t g) {
        const T yv = T(ps[i]);
        const T dz = leaky_grad<T>(T(pdy[i]), yv, sl);
        pdx[i] = scalar_t(norm_dx<T>(pa[g], dz, leaky_inverse<T>(yv, inv_sl) - pb[g], pp[g], pq[g], batch_stats));
      });
    } else {
      for_each_element(L, [=](int64_t i, int64_t g) {
        const T xv = T(ps[i]);
        const T dz = leaky_grad<T>(T(pdy[i]), norm_z<T>(xv, pmg[g], pa[g], pb[g]), sl);
        pdx[i] = scalar_t(norm_dx<T>(pa[g], dz, xv - pmg[g], pp[g], pq[g], batch_stats));
      });
    }
  });
  return {dx, dweight, dbias};
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CPU, m) {
  m.impl("norm_leaky_relu", &norm_leaky_relu_cpu);
  m.impl("norm_leaky_relu_backward", &norm_leaky_relu_backward_cpu);
}

}  // namespace deepfast
