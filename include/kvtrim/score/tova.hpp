#pragma once
// TOVA's scorer (Oren et al., "Transformers are Multi-State RNNs", 2024, arXiv:2401.06104): the
// attention of the LAST prompt token, averaged over the layer's query heads, ranks the tokens;
// every KV head of the layer keeps the same set (the paper drops, per step, the token the last
// query attends to least, with scores averaged across heads).
//
// Reference: kvpress TOVAPress (presses/tova_press.py): softmax of the last query over all keys
// in float, mean over heads, expanded to every KV head. Differences: kvtrim sums instead of
// averaging (the same order, and shards add up), applies it once at the end of prefill as kvpress
// does, and keeps the observation window like every kvtrim method (the budget counts it).
#include <vector>

#include "kvtrim/score/token_scorer.hpp"

namespace kvtrim {

struct tova {
  template <class T>
  token_scores score(int layer, const layer_kv<T>& kv, const std::vector<int>& heads,
                     const model_shape& shape) const {
    check_scoring_input(layer, kv, heads, shape);
    token_scores out = make_scores(kv, aggregation::shared);
    const index_t c = out.candidates;
    if (c == 0) return out;
    // The last query alone: a window of one, whose candidates are every earlier key.
    layer_kv<T> last = kv;
    last.queries = kv.queries.token_range(kv.window() - 1, 1);
    const head_groups groups = group_heads(last, heads, shape, aggregation::shared);
    std::vector<float> raw;
    window_attention_pass(last, groups, false, [](float sum, float) { return sum; }, raw, nullptr);
    const index_t c_last = last.prompt_length() - 1;
    float* row = out.row(0);
    for (index_t i = 0; i < groups.count(); ++i)
      for (index_t j = 0; j < c; ++j) row[j] += raw[static_cast<size_t>(i * c_last + j)];
    return out;
  }
};

}  // namespace kvtrim
