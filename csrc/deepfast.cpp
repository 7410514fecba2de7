// deepfast._C: the op schemas (dispatcher) and the pybind11 module that reports build information.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#ifndef DEEPFAST_VERSION
#define DEEPFAST_VERSION "unknown"
#endif
#ifndef DEEPFAST_CUDA_ARCHS
#define DEEPFAST_CUDA_ARCHS ""
#endif
#ifndef DEEPFAST_TORCH_VERSION
#define DEEPFAST_TORCH_VERSION "unknown"
#endif

// Schemas of every compiled op. Implementations: csrc/cpu/*.cpp (CPU), csrc/cuda/*.cu (CUDA).
// Fake kernels and autograd are registered from Python (deepfast/ops).
TORCH_LIBRARY(deepfast, m) {
  // z = mu + eps * exp(logvar/2); kl = -1/2 (1 + logvar - mu^2 - exp(logvar)), per element,
  // or scale * sum(kl) as a 0-dim tensor when reduce.
  m.def("reparam_kl(Tensor mu, Tensor logvar, Tensor eps, bool reduce, float scale) -> (Tensor, Tensor)");
  // grad_kl is 0-dim (then multiplied by scale) when the forward reduced, else shaped like mu.
  m.def(
      "reparam_kl_backward(Tensor grad_z, Tensor grad_kl, Tensor mu, Tensor logvar, Tensor eps, float scale)"
      " -> (Tensor, Tensor)");
  // scale * sum(|rec - orig|) as a 0-dim tensor (scale = weight / numel for a mean, weight for a sum).
  m.def("cycle_l1(Tensor rec, Tensor orig, float scale) -> Tensor");
  // grad_rec = grad * scale * sign(rec - orig), grad_orig = -grad_rec; only those output_mask asks for.
  m.def(
      "cycle_l1_backward(Tensor grad, Tensor rec, Tensor orig, float scale, bool[2] output_mask)"
      " -> (Tensor?, Tensor?)");
  // Batch / instance norm + LeakyReLU (csrc/norm_act.h). Batch statistics when mean and var are
  // None (returned, biased var, float32 or float64, one per group), else those (running) ones.
  // y = leaky(w (x - mean) / sqrt(var + eps) + b); instance: statistics per (n, c).
  m.def(
      "norm_act(Tensor x, Tensor? weight, Tensor? bias, Tensor? mean, Tensor? var, bool instance, float eps,"
      " float slope, bool inplace) -> (Tensor, Tensor, Tensor)");
  // (grad_x, grad_weight, grad_bias); saved is x, or y in in-place mode.
  m.def(
      "norm_act_backward(Tensor grad_y, Tensor saved, Tensor? weight, Tensor? bias, Tensor mean, Tensor var,"
      " bool batch_stats, bool instance, float eps, float slope, bool inplace) -> (Tensor, Tensor, Tensor)");
  // One PGD step on each sample s of x_adv (N, ...), step_size and eps of shape (N,) (csrc/pgd.h):
  // "inf": x_adv + step_size[s] * sign(grad), clipped to the eps[s] box around x_orig, then to [lo, hi];
  // "2": x_adv + step_size[s] * grad / ||grad||, its difference to x_orig scaled into the eps[s] ball,
  // then clipped to [lo, hi]. pgd_step_ writes the result into x_adv.
  m.def(
      "pgd_step(Tensor x_adv, Tensor grad, Tensor x_orig, Tensor step_size, Tensor eps, str norm, float lo,"
      " float hi) -> Tensor");
  m.def(
      "pgd_step_(Tensor(a!) x_adv, Tensor grad, Tensor x_orig, Tensor step_size, Tensor eps, str norm, float lo,"
      " float hi) -> ()");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "deepfast compiled kernels: build information (the ops live in torch.ops.deepfast)";
  m.attr("version") = DEEPFAST_VERSION;
#ifdef DEEPFAST_WITH_CUDA
  m.attr("backends") = pybind11::make_tuple("cpp", "cuda");
  m.attr("cuda_archs") = DEEPFAST_CUDA_ARCHS;
#else
  m.attr("backends") = pybind11::make_tuple("cpp");
  m.attr("cuda_archs") = "";
#endif
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.attr("torch_version") = DEEPFAST_TORCH_VERSION;  // the torch it was built against
#ifdef DEEPFAST_NO_AVX512
  m.attr("cpu_clones") = pybind11::make_tuple("x86-64-v3", "default");  // the versions of the CPU loops
#else
  m.attr("cpu_clones") = pybind11::make_tuple("x86-64-v4", "x86-64-v3", "default");
#endif
  m.def("num_threads", &at::get_num_threads, "Intra-op threads the CPU kernels use (at::get_num_threads()).");
}
