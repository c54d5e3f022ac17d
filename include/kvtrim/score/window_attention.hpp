#pragma once
// Observation-window attention scorer (SnapKV; also PyramidKV, Ada-KV, HeadKV, CompressKV):
// how much the last w prompt queries attend to each earlier token.
//
//   score_h[j] = sum_{i<w} softmax_j(q_{h,i} . K^T / sqrt(d))   (causal inside the window)
//   pooled_h   = pool(score_h)                                   (avg | max | none, kernel k)
//   row        = sum of pooled_h over the row's contributing query heads
//
// per_kv_head: one row per KV head from its selected query heads (all G if none is selected);
// shared: one row for the layer from every selected head (CompressKV). Rows are sums, so the
// partial rows of tensor-parallel shards add up to the single-rank row (token_scores::accumulate).
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/score/token_scorer.hpp"
#include "kvtrim/score/pooling.hpp"
#include "kvtrim/score/window_softmax.hpp"

namespace kvtrim {

// The body every window-attention scorer shares (SnapKV's and CAKE's): the window pass over the
// heads `heads` selects, key_score(sum, variance) per (query head, candidate), pooling per query
// head, then the GQA / shared row sums. Fills CAKE's layer statistics when `layer_stats`.
template <class T, class KeyScore>
token_scores pooled_window_scores(int layer, const layer_kv<T>& in, const std::vector<int>& heads,
                                  const model_shape& shape, aggregation aggregate, pooling pool,
                                  int kernel, bool need_variance, KeyScore key_score,
                                  bool layer_stats) {
  detail::check_kernel(kernel);
  check_scoring_input(layer, in, heads, shape);
  const head_groups groups = group_heads(in, heads, shape, aggregate);
  token_scores out = make_scores(in, aggregate);
  std::vector<float> raw;
  window_stats st;
  window_attention_pass(in, groups, need_variance, key_score, raw, layer_stats ? &st : nullptr);
  pool_and_aggregate(raw, groups, pool, kernel, out);
  if (layer_stats) {
    out.entropy_sum = st.entropy_sum;
    out.variance_sum = st.variance_sum;
    out.stat_heads = st.heads;
  }
  return out;
}

struct window_attention {
  pooling pool = pooling::avg;  // SnapKV's default 'avgpool'
  int kernel = 5;               // odd, >= 1 (SnapKV default 5)
  aggregation aggregate = aggregation::per_kv_head;
  bool layer_stats = false;  // also fill CAKE's entropy / variance sums (costs a log per weight)

  void validate() const { detail::check_kernel(kernel); }

  template <class T>
  token_scores score(int layer, const layer_kv<T>& in, const std::vector<int>& heads,
                     const model_shape& shape) const {
    return pooled_window_scores(
        layer, in, heads, shape, aggregate, pool, kernel, false,
        [](float sum, float) { return sum; }, layer_stats);
  }
};

}  // namespace kvtrim
