#pragma once
// Uniform budgets (SnapKV, StreamingLLM, random): every layer and every KV head keeps B tokens,
// window included. Clipped per head to [min(w, n), n] (see plan.hpp): B >= n keeps the whole
// prompt, B < w keeps only the window; otherwise the total is exactly L * H_kv * B.
#include <vector>

#include "kvtrim/allocate/budget_allocator.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

struct uniform {
  struct state : budget_frame {};

  state begin(const model_shape& shape, index_t budget, index_t prompt, index_t window) const {
    return state{detail::make_budget_frame(shape, budget, prompt, window, "uniform")};
  }

  std::vector<index_t> head_budgets(state& st, int layer, const token_scores& scores) const {
    detail::check_layer_index(st, layer, "uniform");
    detail::check_scores_for_frame(st, scores, "uniform");
    return detail::same_for_every_head(st, scores, st.budget);
  }

  index_t layer_budget(const state& st, int layer) const {
    detail::check_layer_index(st, layer, "uniform");
    return st.clip(st.budget);
  }
};

}  // namespace kvtrim
