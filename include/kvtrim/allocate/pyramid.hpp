#pragma once
// PyramidKV's layer budgets (Cai et al., "PyramidKV: Dynamic KV Cache Compression based on
// Pyramidal Information Funneling", arXiv:2406.02069): lower layers keep more, the budget falls
// linearly with depth.
//
// The formula of the reference code (Zefan-Cai/KVCache-Factory pyramidkv/pyramidkv_utils.py,
// PyramidKVCluster.update_kv; the same in FFY0/AdaKV and FYYFU/HeadKV's pyram_mode), with
// b = B - w the candidate budget of an average layer and integer (floor) division:
//   min = b // beta,  max = 2b - min;
//   if max >= n - w:  max = n - w,  min = 2b - max      (the top layer can't exceed the prompt)
//   steps = (max - min) // (L - 1)
//   layer l keeps  max - l * steps  candidates, plus the w window tokens.
// (max + min) / 2 = b, but the floor in `steps` leaves r = (max - min) - steps * (L - 1) and the
// reference keeps E = L * r / 2 tokens more than L * b in total (for L = 1 it divides by zero).
//
// kvtrim makes the total exact and keeps the pyramid non-increasing: every layer gives back
// E / L tokens (integer division) and the LAST E % L layers (the top of the pyramid, which the
// method wants smallest anyway) one more. No layer goes below `min`, so no further clipping is
// needed. L = 1 keeps b. Then, as everywhere (plan.hpp): B >= n keeps the whole prompt (the
// reference also returns early for q_len < B), B < w keeps only the window, and otherwise the
// total is exactly L * H_kv * B.
//
// beta (default 20, the reference's default) is an integer >= 1; beta = 1 gives uniform budgets.
#include <vector>

#include "kvtrim/allocate/budget_allocator.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"

namespace kvtrim {

class pyramid {
 public:
  struct state : budget_frame {
    std::vector<index_t> layer_tokens;  // per layer, window included, clipped
  };

  explicit pyramid(index_t beta = 20) : beta_(beta) {
    detail::require(beta_ >= 1, "pyramid: beta ", beta_, " must be an integer >= 1");
  }
  index_t beta() const { return beta_; }

  state begin(const model_shape& shape, index_t budget, index_t prompt, index_t window) const {
    state st{detail::make_budget_frame(shape, budget, prompt, window, "pyramid"), {}};
    const index_t L = st.layers;
    const auto Ls = static_cast<size_t>(L);
    if (st.budget >= st.prompt) {
      st.layer_tokens.assign(Ls, st.prompt);
      return st;
    }
    const index_t b = st.budget > st.window ? st.budget - st.window : 0;  // B < w: window only
    const index_t room = st.candidates();                                // n - w > b here
    index_t lo = b / beta_;
    index_t hi = 2 * b - lo;
    if (hi >= room) {
      hi = room;
      lo = 2 * b - hi;
    }
    const index_t steps = L > 1 ? (hi - lo) / (L - 1) : 0;
    std::vector<index_t> cand(Ls);
    index_t sum = 0;
    for (index_t l = 0; l < L; ++l) {
      cand[static_cast<size_t>(l)] = hi - l * steps;
      sum += hi - l * steps;
    }
    const index_t excess = sum - L * b;  // = L * r / 2 >= 0
    for (index_t l = 0; l < L; ++l)
      cand[static_cast<size_t>(l)] -= excess / L + (l >= L - excess % L ? 1 : 0);
    st.layer_tokens.resize(Ls);
    for (size_t l = 0; l < Ls; ++l) st.layer_tokens[l] = st.clip(cand[l] + st.window);
    return st;
  }

  std::vector<index_t> head_budgets(state& st, int layer, const token_scores& scores) const {
    detail::check_layer_index(st, layer, "pyramid");
    detail::check_scores_for_frame(st, scores, "pyramid");
    return detail::same_for_every_head(st, scores, st.layer_tokens[static_cast<size_t>(layer)]);
  }

  index_t layer_budget(const state& st, int layer) const {
    detail::check_layer_index(st, layer, "pyramid");
    return st.layer_tokens[static_cast<size_t>(layer)];
  }

 private:
  index_t beta_;
};

}  // namespace kvtrim
