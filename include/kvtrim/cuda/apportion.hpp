#pragma once
// allocate/apportion.hpp's apportion() for a few items (<= max_items), in fixed arrays, callable
// from host and device code alike (one thread of a kernel runs it for Ada-KV's head split). The
// same steps in the same order and the same f64 arithmetic as the host's, so the result is
// identical: water-filled caps, round half to even, then settle_by_passes with the
// largest-remainder priority (favour_lower ties, stable order). Plain C++: the host test suite
// checks it against the host's apportion() without a GPU.
#include <cmath>
#include <cstdint>

#include "kvtrim/core/host_device.hpp"

namespace kvtrim {
namespace cuda {
namespace detail {

constexpr int apportion_max_items = 64;

KVTRIM_HD inline double round_half_even_hd(double x) {
  const double f = floor(x);
  const double d = x - f;
  if (d > 0.5) return f + 1.0;
  if (d < 0.5) return f;
  return fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

// out[i] in [0, hi[i]], sum = min(total, sum hi), k <= apportion_max_items, quotas finite >= 0.
KVTRIM_HD inline void apportion_small(const double* quota, int k, std::int64_t total,
                                      const std::int64_t* hi, std::int64_t* out) {
  std::int64_t hsum = 0;
  for (int i = 0; i < k; ++i) hsum += hi[i];
  if (hsum <= total) {
    for (int i = 0; i < k; ++i) out[i] = hi[i];
    return;
  }
  double q[apportion_max_items];
  bool fixed[apportion_max_items];
  for (int i = 0; i < k; ++i) {
    q[i] = quota[i];
    fixed[i] = false;
  }
  for (bool scaled = false;; scaled = true) {
    if (scaled) {
      std::int64_t left = total;
      double sum = 0.0;
      int free_items = 0;
      for (int i = 0; i < k; ++i) {
        if (fixed[i]) {
          left -= hi[i];
        } else {
          sum += quota[i];
          ++free_items;
        }
      }
      for (int i = 0; i < k; ++i)
        if (!fixed[i])
          q[i] = sum > 0.0 ? quota[i] * static_cast<double>(left) / sum
                           : static_cast<double>(left) / static_cast<double>(free_items);
    }
    bool capped = false;
    for (int i = 0; i < k; ++i)
      if (!fixed[i] && q[i] > static_cast<double>(hi[i])) {
        fixed[i] = true;
        q[i] = static_cast<double>(hi[i]);
        capped = true;
      }
    if (!capped) break;
  }
  for (int i = 0; i < k; ++i) {
    std::int64_t r = static_cast<std::int64_t>(round_half_even_hd(q[i]));
    if (r < 0) r = 0;
    out[i] = r < hi[i] ? r : hi[i];
  }
  // settle_by_passes(out, total, lo = 0, hi, priority q - out, tie_order::favour_lower)
  std::int64_t diff = total;
  for (int i = 0; i < k; ++i) diff -= out[i];
  int order[apportion_max_items];
  double key[apportion_max_items];
  while (diff != 0) {
    const bool add = diff > 0;
    int m = 0;
    for (int i = 0; i < k; ++i)
      if (add ? out[i] < hi[i] : out[i] > 0) order[m++] = i;
    if (m == 0) return;
    if (!add)
      for (int a = 0, b = m - 1; a < b; ++a, --b) {
        const int t = order[a];
        order[a] = order[b];
        order[b] = t;
      }
    for (int a = 0; a < m; ++a) key[order[a]] = q[order[a]] - static_cast<double>(out[order[a]]);
    for (int a = 1; a < m; ++a) {  // stable insertion sort
      const int x = order[a];
      int b = a;
      while (b > 0 && (add ? key[x] > key[order[b - 1]] : key[x] < key[order[b - 1]])) {
        order[b] = order[b - 1];
        --b;
      }
      order[b] = x;
    }
    for (int a = 0; a < m; ++a) {
      out[order[a]] += add ? 1 : -1;
      diff += add ? -1 : 1;
      if (diff == 0) return;
    }
  }
}

}  // namespace detail
}  // namespace cuda
}  // namespace kvtrim
