// Shared by the CPU (.cpp) and CUDA (.cu) kernels: the inline math every backend runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__CUDACC__)
#define DF_HD __host__ __device__ __forceinline__
#else
#define DF_HD inline __attribute__((always_inline))
#endif

// The loops are compiled for AVX-512, AVX2 and baseline x86-64; the loader picks the best the CPU has.
// DEEPFAST_NO_AVX512 (setup.py: DEEPFAST_CPU_ISA=avx2) leaves the AVX-512 clone out: what an AVX2-only
// CPU runs, measurable on an AVX-512 one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(DEEPFAST_NO_AVX512)
#define DF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DF_CPU_CLONES
#endif

namespace deepfast {

// Accumulation type: float for float/half/bfloat16, double for double.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

// exp(x) in float32. On the device: the CUDA math library. On the host: a branch-free
// Cody-Waite range reduction (x = n ln2 + r, |r| <= ln2/2) and a degree-7 Taylor polynomial
// for e^r (relative error < 1e-8 before rounding), so that `omp simd` loops vectorise it.
// Results below FLT_MIN flush to 0; overflow gives +inf; NaN propagates.
DF_HD float exp_f32(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;  // ln2 with its low 12 bits cleared: n * kLn2Hi is exact
  const float kLn2Lo = 1.42860682030941723e-6f;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float t = x * kLog2e;
  t = t < -126.0f ? -126.0f : (t > 127.0f ? 127.0f : t);
  const float n = (t + kRound) - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n as a float
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  float y = p * scale;
  y = x < -87.33654f ? 0.0f : y;
  y = x > 88.72283f ? std::numeric_limits<float>::infinity() : y;
  return x != x ? x : y;
#endif
}

DF_HD float exp_acc(float x) { return exp_f32(x); }
DF_HD double exp_acc(double x) { return exp(x); }

DF_HD float sqrt_acc(float x) { return sqrtf(x); }
DF_HD double sqrt_acc(double x) { return sqrt(x); }

}  // namespace deepfast
