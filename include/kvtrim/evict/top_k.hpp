#pragma once
// Top-k selection: from a scorer's token_scores and an allocator's per-head budgets to the
// selection the executors apply. Each local KV head keeps its top-(b - w) candidates by score
// (ties to the LOWER token index, so results are deterministic and favour earlier tokens) plus
// the w window tokens [n - w, n), in ascending token order.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

namespace detail {

// Appends to `out`, ascending, the indices of the k highest of row[0, c) (ties to the lower
// index). O(c): nth_element on a copy finds the k-th largest value t; one ascending scan then
// takes every value > t and the first (k - #{> t}) values == t, so no sort is needed.
// `scratch` is reused between heads to avoid an allocation per head.
inline void top_k_ascending(const float* row, index_t c, index_t k, std::vector<float>& scratch,
                            std::vector<index_t>& out) {
  if (k <= 0) return;
  if (k >= c) {
    for (index_t i = 0; i < c; ++i) out.push_back(i);
    return;
  }
  scratch.assign(row, row + c);
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<>());
  const float t = scratch[static_cast<size_t>(k - 1)];
  index_t above = 0;
  for (index_t i = 0; i < c; ++i) above += row[i] > t ? 1 : 0;
  index_t ties = k - above;  // >= 1: t itself is among the top k
  for (index_t i = 0; i < c; ++i) {
    const float v = row[i];
    if (v > t) {
      out.push_back(i);
    } else if (v == t && ties > 0) {
      out.push_back(i);
      --ties;
    }
  }
}

inline bool has_nan(const float* row, index_t c) {
  for (index_t i = 0; i < c; ++i)
    if (std::isnan(row[i])) return true;
  return false;
}

}  // namespace detail

// Per local KV head h: b = clip(head_budgets[h], w, n) tokens kept, the top (b - w) candidates
// of scores.row_for_head(h) and the window [n - w, n). Throws kvtrim::error (and returns
// nothing) on a budget count other than scores.kv_heads, a budget < 1, malformed scores or a
// NaN score. +-inf scores are valid (a scorer may pin tokens with +inf).
inline selection select_top(const token_scores& s, const std::vector<index_t>& head_budgets) {
  detail::require(s.kv_heads >= 1, "select_top: scores for ", s.kv_heads,
                  " KV heads, need >= 1");
  detail::require(s.window >= 1 && s.candidates >= 0, "select_top: window ", s.window,
                  " must be >= 1 and candidates ", s.candidates, " >= 0");
  detail::require(s.values.size() == static_cast<size_t>(s.rows() * s.candidates),
                  "select_top: ", s.values.size(), " score values, expected rows ", s.rows(),
                  " x candidates ", s.candidates, " = ", s.rows() * s.candidates);
  detail::require(head_budgets.size() == static_cast<size_t>(s.kv_heads), "select_top: ",
                  head_budgets.size(), " head budgets for ", s.kv_heads, " KV heads");
  for (size_t h = 0; h < head_budgets.size(); ++h)
    detail::require(head_budgets[h] >= 1, "select_top: budget ", head_budgets[h], " of KV head ",
                    h, " must be >= 1");
  // A NaN would break nth_element's ordering; reject it before any work is done.
  for (index_t r = 0; r < s.rows(); ++r)
    if (detail::has_nan(s.row(r), s.candidates))
      detail::fail("select_top: NaN score in row ", r, " (scores must be numbers, +-inf allowed)");

  const index_t w = s.window, n = s.prompt_length(), c = s.candidates;
  const index_t heads = s.kv_heads;
  // Threads (one head each) only above ~64k scores in all: below, waking them costs more.
  selection out;
  out.keep.resize(static_cast<size_t>(heads));
  std::vector<index_t> b(static_cast<size_t>(heads));
  for (index_t h = 0; h < heads; ++h)
    b[static_cast<size_t>(h)] = std::min(std::max(head_budgets[static_cast<size_t>(h)], w), n);
  // With one shared row (CompressKV) heads of equal budget keep the same tokens: compute each
  // distinct budget once (its first head, the "leader") and copy it to the others.
  std::vector<index_t> leader(static_cast<size_t>(heads));
  for (index_t h = 0; h < heads; ++h) {
    leader[static_cast<size_t>(h)] = h;
    if (s.shared)
      for (index_t o = 0; o < h; ++o)
        if (b[static_cast<size_t>(o)] == b[static_cast<size_t>(h)]) {
          leader[static_cast<size_t>(h)] = o;
          break;
        }
  }

#if defined(_OPENMP)
#pragma omp parallel if (heads > 1 && heads * c >= (index_t(1) << 16))
#endif
  {
    std::vector<float> scratch;
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (index_t h = 0; h < heads; ++h) {
      if (leader[static_cast<size_t>(h)] != h) continue;
      const index_t bh = b[static_cast<size_t>(h)];
      std::vector<index_t>& keep = out.keep[static_cast<size_t>(h)];
      keep.reserve(static_cast<size_t>(bh));
      detail::top_k_ascending(s.row_for_head(h), c, bh - w, scratch, keep);
      for (index_t t = n - w; t < n; ++t) keep.push_back(t);
    }
  }
  for (index_t h = 0; h < heads; ++h)
    if (leader[static_cast<size_t>(h)] != h)
      out.keep[static_cast<size_t>(h)] = out.keep[static_cast<size_t>(leader[static_cast<size_t>(h)])];
  return out;
}

}  // namespace kvtrim
