// Arguments of deepfast::pgd_step and deepfast::pgd_step_, shared by the CPU and CUDA implementations
// (host code only): checks, memory layout, the output, and the in-place write-back.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include "checks.h"

namespace deepfast {

// One PGD step as the kernels see it. x, grad, x0 and out are contiguous in one memory format, that
// suggested by x_adv (NCHW or channels_last memory: both sample-major), so sample s is the run of
// elements [s * per_sample, (s + 1) * per_sample). out is x itself for the in-place op.
struct PgdProblem {
  at::Tensor x, grad, x0, out;
  at::Tensor step, eps;  // (N,) contiguous, in the accumulation type (float32; float64 for float64)
  int64_t samples, per_sample;
  bool l2;
  double lo, hi;  // the box; -inf, inf for none
};

inline void check_per_sample(const at::Tensor& t, const char* name, const at::Tensor& x_adv) {
  check_float(t, name);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == x_adv.size(0), "deepfast: ", name, " must have shape (N,) = (",
              x_adv.size(0), ",) for x_adv of shape ", x_adv.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.device() == x_adv.device(), "deepfast: ", name, " must be on the device of x_adv (", x_adv.device(),
              "), got ", t.device());
}

using PgdKernel = void (*)(const PgdProblem&);

// pgd_step (inplace false: the result in a new tensor, in the memory format x_adv suggests) and
// pgd_step_ (inplace true: the result written into x_adv, which is returned): checks the arguments,
// lays them out for `kernel` and runs it. The values of step_size and eps (finite, >= 0) are checked
// by the Python wrapper, not here: on a GPU that would cost a sync.
inline at::Tensor pgd_run(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x_orig,
                          const at::Tensor& step_size, const at::Tensor& eps, c10::string_view norm, double lo,
                          double hi, bool inplace, PgdKernel kernel) {
  check_float(x_adv, "x_adv");
  TORCH_CHECK(x_adv.dim() >= 1, "deepfast: x_adv must have a batch dimension (N, ...), got a 0-dim tensor");
  check_like(grad, "grad", x_adv, "x_adv");
  check_like(x_orig, "x_orig", x_adv, "x_adv");
  check_per_sample(step_size, "step_size", x_adv);
  check_per_sample(eps, "eps", x_adv);
  TORCH_CHECK(norm == "inf" || norm == "2", "deepfast: norm must be 'inf' or '2', got '", norm, "'");
  TORCH_CHECK(lo <= hi, "deepfast: clamp must have lo <= hi, got lo = ", lo, ", hi = ", hi);
  if (inplace) {  // as torch's in-place ops: x_adv is written while grad and x_orig are read
    at::assert_no_internal_overlap(x_adv);
    at::assert_no_partial_overlap(x_adv, grad);
    at::assert_no_partial_overlap(x_adv, x_orig);
  }
  const at::MemoryFormat format = x_adv.suggest_memory_format();
  const at::ScalarType acc = x_adv.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  PgdProblem p;
  p.x = x_adv.contiguous(format);  // x_adv itself when it is laid out so
  p.grad = grad.contiguous(format);
  p.x0 = x_orig.contiguous(format);
  p.out = inplace ? p.x : at::empty_like(x_adv, {}, format);
  p.step = step_size.to(acc).contiguous();
  p.eps = eps.to(acc).contiguous();
  p.samples = x_adv.size(0);
  p.per_sample = p.samples ? x_adv.numel() / p.samples : 0;
  p.l2 = norm == "2";
  p.lo = lo;
  p.hi = hi;
  if (x_adv.numel() > 0) kernel(p);
  if (inplace && !p.out.is_same(x_adv)) x_adv.copy_(p.out);
  return inplace ? x_adv : p.out;
}

// The implementations of the schemas pgd_step and pgd_step_ for the device that Kernel runs on.
template <PgdKernel Kernel>
at::Tensor pgd_step_op(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x_orig,
                       const at::Tensor& step_size, const at::Tensor& eps, c10::string_view norm, double lo,
                       double hi) {
  return pgd_run(x_adv, grad, x_orig, step_size, eps, norm, lo, hi, false, Kernel);
}

template <PgdKernel Kernel>
void pgd_step_inplace_op(at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x_orig,
                         const at::Tensor& step_size, const at::Tensor& eps, c10::string_view norm, double lo,
                         double hi) {
  pgd_run(x_adv, grad, x_orig, step_size, eps, norm, lo, hi, true, Kernel);
}

}  // namespace deepfast
