#pragma once
// A sequence's budget frame: the numbers every budget allocator's state starts with (B, n, w and
// the model's head counts), the clipping rule they share, and their common checks. The role's
// contract itself is in budget_allocator.hpp.
//
// Clipping, common to every allocator: a head keeps at most n tokens (the whole prompt) and at
// least min(w, n) (the window is always kept). So
//   B >= n      every head keeps all n tokens: total L * H_kv * n;
//   w <= B < n  the total is exactly L * H_kv * B (each allocator's header says how);
//   B < w       every head keeps its min(w, n) window tokens: total L * H_kv * min(w, n) > L*H_kv*B.
#include <algorithm>
#include <vector>

#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

struct budget_frame {
  int layers = 0;        // L
  int q_heads = 0;       // query heads per layer
  int kv_heads = 0;      // H_kv: the model's KV heads per layer (all shards)
  index_t budget = 0;    // B as requested, window included
  index_t prompt = 0;    // n
  index_t window = 0;    // min(w, n)

  // Per-head tokens clipped to [min(w, n), n].
  index_t clip(index_t tokens) const { return std::clamp(tokens, window, prompt); }
  // Candidate tokens (before the window) a head may keep: n - min(w, n).
  index_t candidates() const { return prompt - window; }
  // B - w, the candidate budget of an average head, clipped to [0, n - w].
  index_t candidate_budget() const { return std::clamp(budget - window, index_t{0}, candidates()); }
  int group() const { return q_heads / kv_heads; }
};

namespace detail {

inline budget_frame make_budget_frame(const model_shape& shape, index_t budget, index_t prompt,
                                    index_t window, const char* who) {
  shape.validate();
  require(budget > 0, who, ": budget ", budget, " tokens must be > 0");
  require(prompt > 0, who, ": prompt of ", prompt, " tokens (an empty prompt) must be > 0");
  require(shape.context <= 0 || prompt <= shape.context, who, ": prompt of ", prompt,
          " tokens exceeds the model's context of ", shape.context);
  require(window >= 0, who, ": window ", window, " must be >= 0");
  budget_frame p;
  p.layers = shape.layers;
  p.q_heads = shape.q_heads;
  p.kv_heads = shape.kv_heads;
  p.budget = budget;
  p.prompt = prompt;
  p.window = std::min(window, prompt);
  return p;
}

inline void check_layer_index(const budget_frame& p, int layer, const char* who) {
  require(layer >= 0 && layer < p.layers, who, ": layer ", layer, " outside [0, ", p.layers, ")");
}

// The scores must describe the planned prompt and a shard of the model's KV heads.
inline void check_scores_for_frame(const budget_frame& p, const token_scores& s, const char* who) {
  require(s.prompt_length() == p.prompt && s.window == p.window, who, ": scores for a prompt of ",
          s.prompt_length(), " tokens (window ", s.window, ") but the plan is for ", p.prompt,
          " tokens (window ", p.window, ")");
  require(s.kv_heads >= 1 && s.kv_head_offset >= 0 && s.kv_head_offset + s.kv_heads <= p.kv_heads,
          who, ": scores for KV heads [", s.kv_head_offset, ", ", s.kv_head_offset + s.kv_heads,
          ") outside the model's [0, ", p.kv_heads, ")");
  require(s.candidates >= 0 &&
              s.values.size() == static_cast<size_t>(s.rows()) * static_cast<size_t>(s.candidates),
          who, ": scores hold ", s.values.size(), " values, expected ", s.rows(), " x ",
          s.candidates);
}

// A layer-level allocator's answer: the same clipped budget for every local KV head.
inline std::vector<index_t> same_for_every_head(const budget_frame& p, const token_scores& s,
                                                index_t tokens) {
  return std::vector<index_t>(static_cast<size_t>(s.kv_heads), p.clip(tokens));
}

}  // namespace detail
}  // namespace kvtrim
