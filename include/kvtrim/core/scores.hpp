#pragma once
// What a token scorer hands to selection: one score per (row, candidate token), where a row is a
// KV head or one shared set for the whole layer. Candidates are the prompt tokens before the
// observation window; the window's tokens are always kept and need no score.
//
// Scores are SUMS over contributing query heads (not means): only their order matters, and sums
// let a tensor-parallel engine all-reduce the partial scores of its ranks by plain addition.
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

struct token_scores {
  bool shared = false;         // one row for every KV head of the layer (CompressKV)
  index_t kv_heads = 0;        // KV heads these scores decide for (local to a shard)
  index_t kv_head_offset = 0;  // global index of the first of them
  index_t candidates = 0;      // n - w
  index_t window = 0;          // w
  std::vector<float> values;   // rows() x candidates, row-major
  // Second-stage weights of two-stage scorers (CriticalKV's projected value norms), rows() x
  // candidates like `values`, summed the same way; empty for every other scorer.
  std::vector<float> weights;
  double weight_epsilon = 0.0;  // stage two ranks by (value + weight_epsilon) x weight; the same
                                // on every rank (accumulate leaves it)

  // Layer statistics for CAKE's layer preference, summed over contributing query heads
  // (reducible by addition, like the scores).
  double entropy_sum = 0.0;
  double variance_sum = 0.0;
  double stat_heads = 0.0;

  index_t rows() const { return shared ? 1 : kv_heads; }
  index_t prompt_length() const { return candidates + window; }
  float* row(index_t r) { return values.data() + r * candidates; }
  const float* row(index_t r) const { return values.data() + r * candidates; }
  // The row deciding for local KV head h.
  const float* row_for_head(index_t h) const { return row(shared ? 0 : h); }

  static token_scores make(bool shared, index_t kv_heads, index_t kv_head_offset, index_t n,
                           index_t w) {
    detail::require(w >= 1 && w <= n, "token_scores: window ", w, " must be in [1, ", n, "]");
    token_scores s;
    s.shared = shared;
    s.kv_heads = kv_heads;
    s.kv_head_offset = kv_head_offset;
    s.candidates = n - w;
    s.window = w;
    s.values.assign(static_cast<size_t>(s.rows() * s.candidates), 0.0f);
    return s;
  }

  // Adds another shard's partial scores of the same rows (the all-reduce of a TP engine).
  void accumulate(const token_scores& o) {
    detail::require(o.shared == shared && o.candidates == candidates && o.window == window &&
                        o.values.size() == values.size() && o.weights.size() == weights.size(),
                    "token_scores::accumulate: shapes differ");
    for (size_t i = 0; i < values.size(); ++i) values[i] += o.values[i];
    for (size_t i = 0; i < weights.size(); ++i) weights[i] += o.weights[i];
    entropy_sum += o.entropy_sum;
    variance_sum += o.variance_sum;
    stat_heads += o.stat_heads;
  }
};

// What each KV head keeps: ascending token indices (window included) of the layer's prompt.
struct selection {
  std::vector<std::vector<index_t>> keep;  // [local kv head] -> sorted token indices

  std::vector<index_t> lengths() const {
    std::vector<index_t> l(keep.size());
    for (size_t h = 0; h < keep.size(); ++h) l[h] = static_cast<index_t>(keep[h].size());
    return l;
  }
  index_t total() const {
    index_t t = 0;
    for (const auto& k : keep) t += static_cast<index_t>(k.size());
    return t;
  }
};

}  // namespace kvtrim
