#pragma once
// The integer arithmetic every budget allocator shares, in one place so that all of them round
// and break ties the same way:
//   round_half_even   numpy's np.round / torch.round (what the reference implementations call);
//   floor_quotient    Python's float floor division a // b;
//   settle_by_passes  moves a vector of integers to an exact total one unit per item per pass, in
//                     a caller-given priority order (CompressKV's Algorithm 1 loop, and the
//                     remainder step of the largest-remainder method below);
//   apportion         splits an integer total in proportion to real quotas, within per-item caps
//                     (largest remainder, caps water-filled, deterministic ties).
// Equal priorities are ordered by index (tie_order below), never by a sort's stability or the
// platform, so every result is deterministic.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {
namespace detail {

// Round to nearest, ties to even: equal to std::nearbyint under FE_TONEAREST, but independent of
// the caller's floating-point rounding mode (a host may have changed it).
inline double round_half_even(double x) {
  const double f = std::floor(x);
  const double d = x - f;  // exact: x and floor(x) share the exponent range
  if (d > 0.5) return f + 1.0;
  if (d < 0.5) return f;
  return std::fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

inline index_t round_half_even_index(double x) {
  require(std::isfinite(x), "round_half_even: value ", x, " is not finite");
  return static_cast<index_t>(round_half_even(x));
}

// floor(a / b) of the exact quotient of two doubles, b > 0: Python's `a // b`, which the
// reference code uses on float betas (HeadKV: `base_capacity // beta`). Plain std::floor(a / b)
// differs when the rounded quotient lands on an integer: 101 // 1.01 is 99 (1.01 is stored
// slightly above 1.01), std::floor(101 / 1.01) is 100.
inline double floor_quotient(double a, double b) {
  double q = std::floor(a / b);
  if (std::fma(-q, b, a) < 0.0)  // a - q*b, rounded once: its sign is exact
    q -= 1.0;
  else if (std::fma(-(q + 1.0), b, a) >= 0.0)
    q += 1.0;
  return q;
}

// How settle_by_passes orders items of equal priority.
enum class tie_order {
  lower_first,  // the lower index moves first, adding or removing (CompressKV's passes)
  favour_lower  // the lower index gains first and loses last (largest remainder: the result
                // is the same whether one starts from rounded-down or rounded-up values)
};

// Moves `v` towards sum(v) == total: while the sum differs, one pass visits the items that can
// still move (v < hi when adding, v > lo when removing) and moves each by one until the sum is
// exact. The order within a pass: decreasing priority(i) when adding, increasing when removing,
// equal priorities as `ties` says; priority is re-read at the start of every pass. Stops early
// when no item can move (the caller asked for a total outside [sum lo, sum hi]).
template <class Priority>
void settle_by_passes(std::vector<index_t>& v, index_t total, const std::vector<index_t>& lo,
                      const std::vector<index_t>& hi, Priority priority,
                      tie_order ties = tie_order::lower_first) {
  const size_t k = v.size();
  index_t diff = total - std::accumulate(v.begin(), v.end(), index_t{0});
  std::vector<size_t> order;
  std::vector<double> key(k);
  while (diff != 0) {
    const bool add = diff > 0;
    order.clear();
    for (size_t i = 0; i < k; ++i)
      if (add ? v[i] < hi[i] : v[i] > lo[i]) order.push_back(i);
    if (order.empty()) return;
    if (!add && ties == tie_order::favour_lower) std::reverse(order.begin(), order.end());
    for (size_t i : order) key[i] = priority(i);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return add ? key[a] > key[b] : key[a] < key[b];
    });
    for (size_t i : order) {
      v[i] += add ? 1 : -1;
      diff += add ? -1 : 1;
      if (diff == 0) return;
    }
  }
}

// Splits `total` into integers c_i in [0, hi_i] with sum c = min(total, sum hi), in proportion to
// the quotas q_i >= 0 (which should add up to `total`; rounding absorbs small differences):
//  1. caps: an item whose quota exceeds its cap is fixed at the cap and the remaining total is
//     re-split over the others in proportion to their quotas (water-filling; repeated until no
//     quota exceeds its cap). Quotas are used unscaled when nothing is capped, so a quota that is
//     exactly x.5 stays x.5;
//  2. rounding: c_i = round_half_even(q_i);
//  3. remainder: settle_by_passes with priority q_i - c_i (the most under-served item gains first,
//     the most over-served loses first; on equal remainders the lower index gains first and loses
//     last) — the largest-remainder method: floor every quota, then one more to each of the
//     items with the largest fractional parts, lower index first among equals.
// The one difference from textbook largest remainder: when the half-to-even rounded quotas
// already add up to `total`, that rounding is the result ({2.5, 3.5} -> {2, 4}, not {3, 3}), so an
// allocator's exact mode agrees with its published round() formula whenever that one is exact.
inline std::vector<index_t> apportion(const std::vector<double>& quota, index_t total,
                                      const std::vector<index_t>& hi) {
  const size_t k = quota.size();
  require(hi.size() == k, "apportion: ", hi.size(), " caps for ", k, " quotas");
  require(total >= 0, "apportion: total ", total, " must be >= 0");
  for (size_t i = 0; i < k; ++i) {
    require(std::isfinite(quota[i]) && quota[i] >= 0.0, "apportion: quota ", quota[i], " of item ",
            i, " must be finite and >= 0");
    require(hi[i] >= 0, "apportion: cap ", hi[i], " of item ", i, " must be >= 0");
  }
  if (std::accumulate(hi.begin(), hi.end(), index_t{0}) <= total) return hi;

  std::vector<double> q = quota;
  std::vector<char> fixed(k, 0);
  for (bool scaled = false;; scaled = true) {
    if (scaled) {  // re-split what the capped items left over the others
      index_t left = total;
      double sum = 0.0;
      size_t free_items = 0;
      for (size_t i = 0; i < k; ++i) {
        if (fixed[i]) {
          left -= hi[i];
        } else {
          sum += quota[i];
          ++free_items;
        }
      }
      for (size_t i = 0; i < k; ++i)
        if (!fixed[i])
          q[i] = sum > 0.0 ? quota[i] * static_cast<double>(left) / sum
                           : static_cast<double>(left) / static_cast<double>(free_items);
    }
    bool capped = false;
    for (size_t i = 0; i < k; ++i)
      if (!fixed[i] && q[i] > static_cast<double>(hi[i])) {
        fixed[i] = 1;
        q[i] = static_cast<double>(hi[i]);
        capped = true;
      }
    if (!capped) break;
  }

  std::vector<index_t> c(k);
  for (size_t i = 0; i < k; ++i)
    c[i] = std::min(hi[i], std::max<index_t>(0, round_half_even_index(q[i])));
  settle_by_passes(c, total, std::vector<index_t>(k, 0), hi,
                   [&](size_t i) { return q[i] - static_cast<double>(c[i]); },
                   tie_order::favour_lower);
  return c;
}

}  // namespace detail
}  // namespace kvtrim
