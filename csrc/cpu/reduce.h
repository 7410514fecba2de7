// Deterministic parallel sums of the CPU kernels: fixed blocks, partial sums added in block order.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace deepfast {

// The CPU kernels add their reductions up in float64, whatever the input dtype: they are memory-bound,
// so it costs nothing measurable, and sums of squares of float32 values beyond 1.8e19 stay finite.
using sum_t = double;

// Elements per partial sum (and the grain of the elementwise loops). Fixed, so that a reduced value
// does not depend on the thread count.
constexpr int64_t kBlock = 1 << 14;

// Sum of block_sum(begin, end) over the blocks [b * kBlock, min(n, (b + 1) * kBlock)) of [0, n): the
// blocks run in parallel, their partial sums are added in block order, so the result is the same
// bits for any number of threads. block_sum may also write elementwise outputs of its range.
template <typename T, typename F>
T deterministic_sum(int64_t n, const F& block_sum) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<T> partial(blocks);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) partial[b] = block_sum(b * kBlock, std::min(n, (b + 1) * kBlock));
  });
  T sum = 0;
  for (T p : partial) sum += p;
  return sum;
}

}  // namespace deepfast
