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
#include "kvtrim/score/aggregation.hpp"
#include "kvtrim/score/pooling.hpp"
#include "kvtrim/score/window_softmax.hpp"

namespace kvtrim {

struct window_attention {
  pooling pool = pooling::avg;  // SnapKV's default 'avgpool'
  int kernel = 5;               // odd, >= 1 (SnapKV default 5)
  aggregation aggregate = aggregation::per_kv_head;
  bool layer_stats = false;  // also fill CAKE's entropy / variance sums (costs a log per weight)

  void validate() const { detail::check_kernel(kernel); }

  template <class T>
  token_scores score(int layer, const layer_kv<T>& in, const std::vector<int>& heads,
                     const model_shape& shape) const {
    validate();
    detail::check_scoring_input(layer, in, heads, shape);
    const detail::head_plan plan = detail::plan_heads(in, heads, shape, aggregate);
    token_scores out = token_scores::make(aggregate == aggregation::shared, in.kv_heads(),
                                          in.kv_head_offset, in.prompt_length(), in.window());
    std::vector<float> raw;
    detail::window_stats st;
    detail::window_attention_pass(
        in, plan, false, [](float sum, float) { return sum; }, raw, layer_stats ? &st : nullptr);
    detail::pool_and_aggregate(raw, plan, pool, kernel, out);
    if (layer_stats) {
      out.entropy_sum = st.entropy_sum;
      out.variance_sum = st.variance_sum;
      out.stat_heads = st.heads;
    }
    return out;
  }
};

}  // namespace kvtrim
