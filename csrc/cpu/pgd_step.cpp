// CPU kernels of deepfast::pgd_step and deepfast::pgd_step_.
//
// Linf: one pass over all elements. L2: three passes per sample (sum of g^2; sum of d^2 with d
// recomputed; d recomputed, scaled, clipped and written), each sum made of fixed chunks of kBlock
// elements added in order, so the result is the same bits for any thread count. With at least as
// many samples as threads, each thread runs all three passes over one sample before the next, so that
// passes 2 and 3 find the sample in cache; with fewer, the chunks of each sample run in parallel.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>

#include "../pgd_step.h"
#include "../pgd_step_args.h"
#include "reduce.h"

namespace deepfast {
namespace {

// The pointers of a kernel are those of element 0 of one sample, or of a chunk of it.
template <typename scalar_t>
struct Ptrs {
  const scalar_t *x, *g, *x0;
  scalar_t* out;
  Ptrs at(int64_t offset) const { return {x + offset, g + offset, x0 + offset, out + offset}; }
};

template <typename scalar_t>
DF_CPU_CLONES void linf_run(Ptrs<scalar_t> p, acc_t<scalar_t> step, acc_t<scalar_t> eps, acc_t<scalar_t> lo,
                            acc_t<scalar_t> hi, int64_t n) {
  using T = acc_t<scalar_t>;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) p.out[i] = scalar_t(pgd_linf<T>(T(p.x[i]), T(p.g[i]), T(p.x0[i]), step, eps, lo, hi));
}

template <typename scalar_t>
DF_CPU_CLONES sum_t grad_sumsq(Ptrs<scalar_t> p, int64_t n) {
  sum_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += sum_t(p.g[i]) * sum_t(p.g[i]);
  return sum;
}

template <typename scalar_t>
DF_CPU_CLONES sum_t delta_sumsq(Ptrs<scalar_t> p, acc_t<scalar_t> step, acc_t<scalar_t> ginv, int64_t n) {
  using T = acc_t<scalar_t>;
  sum_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    const sum_t d = pgd_l2_delta<T>(T(p.x[i]), T(p.g[i]), T(p.x0[i]), step, ginv);
    sum += d * d;
  }
  return sum;
}

template <typename scalar_t>
DF_CPU_CLONES void l2_write(Ptrs<scalar_t> p, acc_t<scalar_t> step, acc_t<scalar_t> ginv, acc_t<scalar_t> factor,
                            acc_t<scalar_t> lo, acc_t<scalar_t> hi, int64_t n) {
  using T = acc_t<scalar_t>;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T x0 = T(p.x0[i]);
    p.out[i] = scalar_t(pgd_l2_out<T>(x0, pgd_l2_delta<T>(T(p.x[i]), T(p.g[i]), x0, step, ginv), factor, lo, hi));
  }
}

// What the loops over samples read: per-sample step and eps, the box, and the elements per sample.
template <typename T>
struct Samples {
  const T *step, *eps;
  T lo, hi;
  int64_t n, per_sample;
  explicit Samples(const PgdProblem& pr)
      : step(pr.step.const_data_ptr<T>()),
        eps(pr.eps.const_data_ptr<T>()),
        lo(T(pr.lo)),
        hi(T(pr.hi)),
        n(pr.samples),
        per_sample(pr.per_sample) {}
};

// Sum of chunk_sum(begin, end) over the chunks [c * kBlock, min(n, (c + 1) * kBlock)) of [0, n), in
// order, in this thread: the same bits as deterministic_sum(n, chunk_sum).
template <typename T, typename F>
T serial_sum(int64_t n, const F& chunk_sum) {
  T sum = 0;
  for (int64_t b = 0; b < n; b += kBlock) sum += chunk_sum(b, std::min(n, b + kBlock));
  return sum;
}

template <typename scalar_t>
void pgd_linf_cpu(const Samples<acc_t<scalar_t>>& sa, Ptrs<scalar_t> p) {
  const int64_t m = sa.per_sample;
  at::parallel_for(0, sa.n * m, kBlock, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {  // the runs of [begin, end) within one sample
      const int64_t s = i / m, run_end = std::min(end, (s + 1) * m);
      linf_run<scalar_t>(p.at(i), sa.step[s], sa.eps[s], sa.lo, sa.hi, run_end - i);
      i = run_end;
    }
  });
}

template <typename scalar_t>
void pgd_l2_cpu(const Samples<acc_t<scalar_t>>& sa, Ptrs<scalar_t> p) {
  using T = acc_t<scalar_t>;
  const int64_t m = sa.per_sample;
  // The three passes over sample s; `sum` is serial_sum or deterministic_sum, `for_chunks` runs the
  // write pass over the chunks of the sample.
  auto sample = [&](int64_t s, const auto& sum, const auto& for_chunks) {
    const Ptrs<scalar_t> q = p.at(s * m);
    const T step = sa.step[s];
    const T ginv = T(pgd_l2_grad_inv<sum_t>(sum(m, [&](int64_t b, int64_t e) { return grad_sumsq(q.at(b), e - b); })));
    const sum_t dsum = sum(m, [&](int64_t b, int64_t e) { return delta_sumsq(q.at(b), step, ginv, e - b); });
    const T factor = T(pgd_l2_factor<sum_t>(dsum, sa.eps[s]));
    for_chunks(m, [&](int64_t b, int64_t e) { l2_write(q.at(b), step, ginv, factor, sa.lo, sa.hi, e - b); });
  };
  auto serial = [](int64_t n, const auto& f) { return serial_sum<sum_t>(n, f); };
  if (sa.n >= at::get_num_threads()) {
    auto serial_chunks = [](int64_t n, const auto& f) { f(int64_t(0), n); };
    at::parallel_for(0, sa.n, std::max<int64_t>(1, kBlock / m), [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) sample(s, serial, serial_chunks);
    });
  } else {
    auto parallel = [](int64_t n, const auto& f) { return deterministic_sum<sum_t>(n, f); };
    auto parallel_chunks = [](int64_t n, const auto& f) { at::parallel_for(0, n, kBlock, f); };
    for (int64_t s = 0; s < sa.n; ++s) sample(s, parallel, parallel_chunks);
  }
}

void pgd_cpu(const PgdProblem& pr) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pr.x.scalar_type(), "pgd_step_cpu", [&] {
    const Ptrs<scalar_t> p{pr.x.const_data_ptr<scalar_t>(), pr.grad.const_data_ptr<scalar_t>(),
                           pr.x0.const_data_ptr<scalar_t>(), pr.out.mutable_data_ptr<scalar_t>()};
    const Samples<acc_t<scalar_t>> sa(pr);
    if (pr.l2) {
      pgd_l2_cpu<scalar_t>(sa, p);
    } else {
      pgd_linf_cpu<scalar_t>(sa, p);
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CPU, m) {
  m.impl("pgd_step", &pgd_step_op<pgd_cpu>);
  m.impl("pgd_step_", &pgd_step_inplace_op<pgd_cpu>);
}

}  // namespace deepfast
