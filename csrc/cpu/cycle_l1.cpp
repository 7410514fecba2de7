// CPU kernels of deepfast::cycle_l1 and deepfast::cycle_l1_backward.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../cycle_l1.h"
#include "../cycle_l1_args.h"
#include "reduce.h"

namespace deepfast {
namespace {

template <typename scalar_t>
DF_CPU_CLONES sum_t abs_diff_sum(const scalar_t* rec, const scalar_t* orig, int64_t begin, int64_t end) {
  using T = acc_t<scalar_t>;
  sum_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = begin; i < end; ++i) sum += cycle_l1_abs_diff<T>(T(rec[i]), T(orig[i]));
  return sum;
}

template <typename scalar_t, bool kRec, bool kOrig>
DF_CPU_CLONES void grad_range(const scalar_t* rec, const scalar_t* orig, acc_t<scalar_t> c, scalar_t* grad_rec,
                              scalar_t* grad_orig, int64_t begin, int64_t end) {
  using T = acc_t<scalar_t>;
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const T g = cycle_l1_grad<T>(T(rec[i]), T(orig[i]), c);
    if constexpr (kRec) grad_rec[i] = scalar_t(g);
    if constexpr (kOrig) grad_orig[i] = scalar_t(-g);
  }
}

at::Tensor cycle_l1_cpu(const at::Tensor& rec_, const at::Tensor& orig_, double scale) {
  at::Tensor rec, orig;
  std::tie(rec, orig) = cycle_l1_inputs(rec_, orig_);
  at::Tensor loss = at::empty({}, rec.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rec.scalar_type(), "cycle_l1_cpu", [&] {
    const scalar_t *pr = rec.const_data_ptr<scalar_t>(), *po = orig.const_data_ptr<scalar_t>();
    const sum_t sum =
        deterministic_sum<sum_t>(rec.numel(), [&](int64_t b, int64_t e) { return abs_diff_sum(pr, po, b, e); });
    *loss.mutable_data_ptr<scalar_t>() = scalar_t(sum * scale);  // rounded as IEEE does (inf beyond the range)
  });
  return loss;
}

CycleGrads cycle_l1_backward_cpu(const at::Tensor& grad, const at::Tensor& rec_, const at::Tensor& orig_, double scale,
                                 std::array<bool, 2> output_mask) {
  at::Tensor rec, orig;
  std::tie(rec, orig) = cycle_l1_inputs(rec_, orig_);
  check_cycle_l1_grad(grad, rec);
  CycleGrads grads = cycle_l1_grads(rec, output_mask);
  const int64_t n = rec.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rec.scalar_type(), "cycle_l1_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const T c = static_cast<T>(static_cast<double>(T(grad.const_data_ptr<scalar_t>()[0])) * scale);
    const scalar_t *pr = rec.const_data_ptr<scalar_t>(), *po = orig.const_data_ptr<scalar_t>();
    with_grads<scalar_t>(grads, [&](auto kRec, auto kOrig, scalar_t* grad_rec, scalar_t* grad_orig) {
      at::parallel_for(0, n, kBlock, [&](int64_t b, int64_t e) {
        grad_range<scalar_t, decltype(kRec)::value, decltype(kOrig)::value>(pr, po, c, grad_rec, grad_orig, b, e);
      });
    });
  });
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(deepfast, CPU, m) {
  m.impl("cycle_l1", &cycle_l1_cpu);
  m.impl("cycle_l1_backward", &cycle_l1_backward_cpu);
}

}  // namespace deepfast
