#pragma once
// 1-D pooling of one head's per-candidate scores (SnapKV, PyramidKV, CAKE): kernel k (odd),
// stride 1, "same" padding k/2, so each token is credited with its neighbours' attention and
// selection keeps contiguous spans rather than isolated tokens.
//
// Semantics match PyTorch as SnapKV calls it (FasterDecoding/SnapKV snapkv_utils.py,
// F.avg_pool1d / F.max_pool1d(kernel_size=k, padding=k//2, stride=1)):
//   avg: out[j] = (1/k) * sum_{t=j-p}^{j+p} x[t], padded positions count as 0 and are counted
//        in the divisor (count_include_pad=True, PyTorch's default), so edges are damped;
//   max: out[j] = max over the in-range part of [j-p, j+p] (padding never wins);
//   none: out = x.
#include <algorithm>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/view.hpp"
#include "kvtrim/score/aggregation.hpp"

namespace kvtrim {

enum class pooling { avg, max, none };

inline const char* to_string(pooling p) {
  return p == pooling::avg ? "avg" : p == pooling::max ? "max" : "none";
}

namespace detail {

inline void check_kernel(int kernel) {
  detail::require(kernel >= 1 && kernel % 2 == 1, "pooling: kernel ", kernel,
          " must be odd and >= 1 (same padding needs a centre)");
}

}  // namespace detail

// out[j - j0] for j in [j0, j1) from x[0, c). O((j1 - j0) + k) for avg (running sum in double,
// restarted per call so rounding cannot drift across a long row), O((j1 - j0) * k) for max.
inline void pool1d(const float* x, index_t c, pooling mode, int kernel, index_t j0, index_t j1,
                   float* out) {
  const index_t p = kernel / 2;
  if (mode == pooling::none || kernel == 1) {
    std::copy(x + j0, x + j1, out);
    return;
  }
  if (mode == pooling::avg) {
    double s = 0.0;
    for (index_t t = std::max<index_t>(0, j0 - p); t <= std::min(c - 1, j0 + p); ++t) s += x[t];
    const double inv = 1.0 / kernel;
    for (index_t j = j0; j < j1; ++j) {
      out[j - j0] = static_cast<float>(s * inv);
      if (j + 1 + p < c) s += x[j + 1 + p];
      if (j - p >= 0) s -= x[j - p];
    }
    return;
  }
  for (index_t j = j0; j < j1; ++j) {
    const index_t a = std::max<index_t>(0, j - p), b = std::min(c - 1, j + p);
    float m = x[a];
    for (index_t t = a + 1; t <= b; ++t) m = std::max(m, x[t]);
    out[j - j0] = m;
  }
}

// Pools each contributing head's raw row (raw[i * c .. ], i = index into plan.local) and sums
// the pooled rows into the row of token_scores they belong to. Pooling happens per query head,
// before aggregation, as in SnapKV / CAKE (it matters for max pooling). Heads are added in
// ascending order, so the result does not depend on the thread count.
inline void pool_and_aggregate(const std::vector<float>& raw, const head_groups& plan, pooling mode,
                               int kernel, token_scores& out) {
  const index_t c = out.candidates;
  if (c == 0) return;
  constexpr index_t block = 2048;
  const index_t blocks = (c + block - 1) / block;
  const index_t tasks = out.rows() * blocks;
#if defined(_OPENMP)
#pragma omp parallel if (tasks > 1 && c * plan.count() >= (1 << 16))
#endif
  {
    std::vector<float> tmp(static_cast<size_t>(std::min(block, c)));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_t task = 0; task < tasks; ++task) {
      const index_t r = task / blocks, j0 = (task % blocks) * block;
      const index_t j1 = std::min(c, j0 + block);
      float* dst = out.row(r);
      std::fill(dst + j0, dst + j1, 0.0f);
      for (index_t i = plan.begin(r); i < plan.end(r); ++i) {
        pool1d(raw.data() + i * c, c, mode, kernel, j0, j1, tmp.data());
        for (index_t j = j0; j < j1; ++j) dst[j] += tmp[static_cast<size_t>(j - j0)];
      }
    }
  }
}

}  // namespace kvtrim
