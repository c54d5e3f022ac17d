#pragma once
// A reproduction of a defect, never a default: the GQA grouping of the SnapKV and PyramidKV
// baselines in CompressKV's release (methods/snapkv/snapkv_utils.py,
// methods/pyramidkv/snapkv_utils.py, adapted from KVCache-Factory). Their window attention is
// right (K repeated to every query head, HF repeat_kv order: query head h reads KV head h / G),
// but the pooled per-query-head scores [H][n] are then reshaped to [G][KV][n] and averaged over
// G, so KV head j is scored by query heads j, j + KV, j + 2 KV, ... instead of its own group
// j G ... j G + G - 1. With G > 1 and KV > 1 each KV head keeps tokens other groups' queries
// wanted. `misgrouped_window_attention` does exactly that (sums instead of means: a per-row
// factor never changes a row's top-k); the registry's snapkv-paper / pyramidkv-paper use it to
// reproduce the paper's baselines. kvtrim's snapkv groups correctly (group_heads).
#include <algorithm>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/score/aggregation.hpp"
#include "kvtrim/score/pooling.hpp"
#include "kvtrim/score/window_softmax.hpp"

namespace kvtrim {

// The row the defect adds query head h into: h mod KV (the right one is h / G).
inline index_t misgrouped_row(index_t q_head, index_t kv_heads) { return q_head % kv_heads; }

struct misgrouped_window_attention {
  pooling pool = pooling::avg;  // the release's default, avgpool
  int kernel = 5;

  void validate() const { detail::check_kernel(kernel); }

  template <class T>
  token_scores score(int layer, const layer_kv<T>& in, const std::vector<int>& heads,
                     const model_shape& shape) const {
    detail::check_kernel(kernel);
    check_scoring_input(layer, in, heads, shape);
    // The wrong rows cross KV heads, so a shard's queries would score another shard's rows.
    detail::require(in.kv_head_offset == 0 && in.kv_heads() == shape.kv_heads,
                    "misgrouped_window_attention: needs every KV head of the layer (no tensor-parallel shards)");
    const head_groups groups = group_heads(in, {}, shape, aggregation::per_kv_head);  // every head, h = 0..H-1
    token_scores out = make_scores(in, aggregation::per_kv_head);
    std::vector<float> raw;
    window_attention_pass(in, groups, false, [](float sum, float) { return sum; }, raw, nullptr);
    const index_t c = out.candidates, kv = in.kv_heads();
    if (c == 0) return out;
    for (index_t r = 0; r < out.rows(); ++r) std::fill(out.row(r), out.row(r) + c, 0.0f);
    std::vector<float> tmp(static_cast<size_t>(c));
    for (index_t i = 0; i < groups.count(); ++i) {  // ascending heads: thread-count independent
      pool1d(raw.data() + i * c, c, pool, kernel, 0, c, tmp.data());
      float* dst = out.row(misgrouped_row(groups.local[static_cast<size_t>(i)], kv));
      for (index_t j = 0; j < c; ++j) dst[j] += tmp[static_cast<size_t>(j)];
    }
    return out;
  }
};

}  // namespace kvtrim
