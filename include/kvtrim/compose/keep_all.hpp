#pragma once
// The `full` method's roles: no scoring work and every token kept, so `full` runs the same
// plumbing as every other method and leaves the engine's memory untouched.
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

struct no_scores {
  template <class T>
  token_scores score(int, const layer_kv<T>& in, const std::vector<int>&, const model_shape&) const {
    token_scores s;  // scores of zero candidates: nothing to rank
    s.kv_heads = in.kv_heads();
    s.kv_head_offset = in.kv_head_offset;
    s.candidates = in.prompt_length() - in.window();
    s.window = in.window();
    s.values.assign(static_cast<size_t>(s.rows() * s.candidates), 0.0f);
    return s;
  }
};

struct keep_all {
  static constexpr bool keeps_all = true;  // the compressor lets a prompt shorter than the window through
  struct state {
    index_t prompt = 0;
  };
  state begin(const model_shape&, index_t, index_t prompt, index_t) const { return {prompt}; }
  index_t layer_budget(const state& st, int) const { return st.prompt; }
  std::vector<index_t> head_budgets(state&, int, const token_scores& s) const {
    return std::vector<index_t>(static_cast<size_t>(s.kv_heads), s.prompt_length());
  }
};

}  // namespace kvtrim
