#pragma once
// A method is a composition of the four roles, fixed at compile time:
//
//   compressor<HeadSelector, TokenScorer, BudgetAllocator, Executor>
//
// The per-layer step is split so an engine can step in between:
//   plan p = c.begin(n);                          // once per sequence: budgets for every layer
//   token_scores s = c.score(p, layer, kv);       // reads q_window and K (w x n per scoring head)
//   ...engine may all-reduce s across tensor-parallel ranks (token_scores::accumulate)...
//   selection sel = c.select(p, layer, s);        // per-head budgets + top-k
//   lengths = c.evict(sel, kv);                   // moves kept rows in the engine's memory
// or all at once: lengths = c.compress_layer(p, layer, kv)  (cascading allocators: (p, layer, kv,
// store), which also re-trims earlier layers through the host's layer_store).
//
// Each role's contract is written in its own header (select/head_selector.hpp,
// score/token_scorer.hpp, allocate/budget_allocator.hpp, evict/executor.hpp) and checked here.
//
// The compressor itself is immutable; all per-sequence state lives in the plan, so different
// sequences (and, for allocators without a cascade, different layers) can be compressed from
// different threads.
#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/allocate/budget_allocator.hpp"
#include "kvtrim/compose/layer_store.hpp"
#include "kvtrim/core/budget.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/evict/compact_in_place.hpp"
#include "kvtrim/evict/executor.hpp"
#include "kvtrim/evict/top_k.hpp"
#include "kvtrim/score/token_scorer.hpp"
#include "kvtrim/select/head_selector.hpp"

namespace kvtrim {

struct compress_options {
  budget target = budget::tokens(64);  // B, window included
  index_t window = 8;                  // w: the last w prompt tokens, always kept
};

namespace detail {
// Allocators that keep every token (keep_all) say so with `static constexpr bool keeps_all`.
template <class A, class = void>
struct keeps_all_tokens : std::false_type {};
template <class A>
struct keeps_all_tokens<A, std::void_t<decltype(A::keeps_all)>> : std::bool_constant<A::keeps_all> {};

// Scorers whose ranking depends on each head's budget (CriticalKV's two stages) provide
//   token_scores rank(const token_scores& s, const std::vector<index_t>& budgets) const;
// select() calls it between the allocator and select_top (the allocator sees the raw scores).
template <class S, class = void>
struct ranks_by_budget : std::false_type {};
template <class S>
struct ranks_by_budget<S, std::void_t<decltype(std::declval<const S&>().rank(
                              std::declval<const token_scores&>(),
                              std::declval<const std::vector<index_t>&>()))>> : std::true_type {};
}  // namespace detail

template <class HeadSelector, class TokenScorer, class BudgetAllocator,
          class Executor = compact_in_place>
class compressor {
  static_assert(is_head_selector_v<HeadSelector>,
                "HeadSelector must provide std::vector<int> heads(int layer, const model_shape&) "
                "const (select/head_selector.hpp)");
  static_assert(is_token_scorer_v<TokenScorer>,
                "TokenScorer must provide template <class T> token_scores score(int layer, const "
                "layer_kv<T>&, const std::vector<int>& heads, const model_shape&) const for float, "
                "half and bfloat16 (score/token_scorer.hpp)");
  static_assert(is_budget_allocator_v<BudgetAllocator>,
                "BudgetAllocator must provide struct state, state begin(shape, B, n, w) const, "
                "std::vector<index_t> head_budgets(state&, int, const token_scores&) const and "
                "index_t layer_budget(const state&, int) const (allocate/budget_allocator.hpp)");
  static_assert(is_executor_v<Executor>,
                "Executor must provide template <class T> std::vector<index_t> apply(const "
                "selection&, const layer_kv<T>&) const (evict/executor.hpp)");

 public:
  using allocator_state = typename BudgetAllocator::state;
  static constexpr bool cascades = has_cascade<BudgetAllocator>::value;

  // Per-sequence state.
  struct plan {
    index_t prompt_length = 0;
    index_t window = 0;
    index_t budget = 0;  // B resolved for this prompt
    allocator_state alloc{};
    // For cascading allocators only: per layer, per local KV head, the scores of the rows kept
    // (in kept order, window rows last) and the current lengths.
    std::vector<std::vector<std::vector<float>>> kept_scores;
    std::vector<std::vector<index_t>> lengths;
  };

  compressor(model_shape shape, compress_options opt, HeadSelector sel = {}, TokenScorer scorer = {},
             BudgetAllocator alloc = {}, Executor exec = {})
      : shape_(shape), opt_(opt), sel_(std::move(sel)), scorer_(std::move(scorer)),
        alloc_(std::move(alloc)), exec_(std::move(exec)) {
    shape_.validate();
    detail::require(opt_.window >= 1, "window ", opt_.window, " must be >= 1");
  }

  const model_shape& shape() const { return shape_; }
  const compress_options& options() const { return opt_; }
  const HeadSelector& head_selector() const { return sel_; }
  const TokenScorer& token_scorer() const { return scorer_; }
  const BudgetAllocator& allocator() const { return alloc_; }

  plan begin(index_t prompt_length) const {
    detail::require(prompt_length > 0, "empty prompt (0 tokens)");
    detail::require(shape_.context <= 0 || prompt_length <= shape_.context, "prompt of ",
                    prompt_length, " tokens exceeds the model's context of ", shape_.context);
    // An allocator that keeps every token (`full`) needs no window: a shorter prompt is its window.
    constexpr bool keeps_all = detail::keeps_all_tokens<BudgetAllocator>::value;
    detail::require(keeps_all || opt_.window <= prompt_length, "window ", opt_.window,
                    " is larger than the prompt (", prompt_length, " tokens)");
    plan p;
    p.prompt_length = prompt_length;
    p.window = std::min(opt_.window, prompt_length);
    p.budget = opt_.target.resolve(prompt_length);
    p.alloc = alloc_.begin(shape_, p.budget, prompt_length, p.window);
    if constexpr (cascades) {
      p.kept_scores.resize(static_cast<size_t>(shape_.layers));
      p.lengths.resize(static_cast<size_t>(shape_.layers));
    }
    return p;
  }

  // Per layer, per KV head retained tokens (window included) for a prompt of n tokens, as the
  // allocator plans them before any data is seen. Data-dependent allocators see neutral scores:
  // Ada-KV then splits each layer evenly and CAKE's layer preferences are all equal, so for those
  // two this is the shape of the budget, not what a real prompt gets.
  std::vector<std::vector<index_t>> planned_budgets(index_t n) const {
    plan p = begin(n);
    std::vector<std::vector<index_t>> out;
    for (int l = 0; l < shape_.layers; ++l) {
      token_scores s = token_scores::make(true, shape_.kv_heads, 0, n, p.window);
      s.entropy_sum = s.variance_sum = s.stat_heads = 1.0;
      out.push_back(alloc_.head_budgets(p.alloc, l, s));
    }
    if constexpr (cascades) {
      const std::vector<index_t> now = alloc_.current_layer_budgets(p.alloc);
      for (size_t l = 0; l < out.size(); ++l)
        for (auto& b : out[l]) b = std::max(now[l], p.window);
    }
    return out;
  }

  template <class T>
  token_scores score(const plan& p, int layer, const layer_kv<T>& kv) const {
    check(p, layer, kv);
    return scorer_.score(layer, kv, sel_.heads(layer, shape_), shape_);
  }

  selection select(plan& p, int layer, const token_scores& s) const {
    check_layer_index(layer);
    detail::require(s.prompt_length() == p.prompt_length && s.window == p.window,
                    "scores for a prompt of ", s.prompt_length(), " tokens (window ", s.window,
                    ") do not match the plan's ", p.prompt_length, " (window ", p.window, ")");
    const std::vector<index_t> budgets = alloc_.head_budgets(p.alloc, layer, s);
    selection sel;
    if constexpr (detail::ranks_by_budget<TokenScorer>::value)
      sel = select_top(scorer_.rank(s, budgets), budgets);
    else
      sel = select_top(s, budgets);
    if constexpr (cascades) remember(p, layer, s, sel);
    return sel;
  }

  template <class T>
  std::vector<index_t> evict(const selection& sel, const layer_kv<T>& kv) const {
    return exec_.apply(sel, kv);
  }

  template <class T>
  std::vector<index_t> compress_layer(plan& p, int layer, const layer_kv<T>& kv) const {
    static_assert(!cascades,
                  "this allocator re-trims earlier layers: call compress_layer(plan, layer, kv, "
                  "store) with a kvtrim::layer_store (compose/layer_store.hpp)");
    const token_scores s = score(p, layer, kv);
    return evict(select(p, layer, s), kv);
  }

  // The whole step for any allocator: compresses `layer`, then re-trims, through `store`, every
  // earlier layer whose budget the cascade shrank (none for other allocators).
  template <class T>
  std::vector<index_t> compress_layer(plan& p, int layer, const layer_kv<T>& kv,
                                      layer_store<T>& store) const {
    const token_scores s = score(p, layer, kv);
    std::vector<index_t> lengths = evict(select(p, layer, s), kv);
    if constexpr (cascades) {
      for (int r : pending_retrims(p)) {
        std::vector<index_t> now = p.lengths[static_cast<size_t>(r)];
        for (index_t h = 0; h < static_cast<index_t>(now.size());) {
          layer_kv<T> v = store.compacted(r, h);
          detail::require(v.kv_head_offset == h && v.kv_heads() >= 1, "layer_store: compacted(",
                          r, ", ", h, ") returned KV heads from ", v.kv_head_offset, " (",
                          v.kv_heads(), " heads)");
          const std::vector<index_t> got = retrim(p, r, v);
          std::copy(got.begin(), got.end(), now.begin() + h);
          h += static_cast<index_t>(got.size());
        }
        store.resized(r, now);
      }
    } else {
      (void)store;
    }
    return lengths;
  }

  // Cascading allocators: the earlier layers whose budget shrank since they were compressed.
  std::vector<int> pending_retrims(const plan& p) const {
    std::vector<int> out;
    if constexpr (cascades) {
      const std::vector<index_t> now = alloc_.current_layer_budgets(p.alloc);
      for (size_t l = 0; l < now.size() && l < p.lengths.size(); ++l)
        for (index_t len : p.lengths[l])
          if (len > std::max(now[l], p.window)) {
            out.push_back(static_cast<int>(l));
            break;
          }
    }
    return out;
  }

  // Re-trims an already compacted layer (rows [0, length) of each head hold the kept tokens in
  // order) to its current, smaller budget, keeping the highest-scored rows and the window. The
  // views may cover any run of the layer's KV heads (kv.kv_head_offset), so a host whose heads
  // live in separate allocations re-trims one head at a time.
  template <class T>
  std::vector<index_t> retrim(plan& p, int layer, const layer_kv<T>& kv) const {
    static_assert(cascades, "retrim is only needed with a cascading allocator (cake_layers)");
    check_layer_index(layer);
    const auto l = static_cast<size_t>(layer);
    detail::require(!p.lengths[l].empty(), "retrim: layer ", layer, " was not compressed yet");
    const index_t target = std::max(alloc_.current_layer_budgets(p.alloc)[l], p.window);
    const index_t off = kv.kv_head_offset, heads = kv.keys.heads();
    detail::require(off >= 0 && off + heads <= static_cast<index_t>(p.lengths[l].size()),
                    "retrim: KV heads [", off, ", ", off + heads, ") outside the layer's ",
                    p.lengths[l].size());
    // Heads of one layer share the layer's budget under a cascading allocator, so the compacted
    // heads are a prompt of one common length whose last w rows are the window.
    layer_kv<T> cur = kv;
    cur.length = p.lengths[l][static_cast<size_t>(off)];
    for (index_t h = 0; h < heads; ++h)
      detail::require(p.lengths[l][static_cast<size_t>(off + h)] == cur.length, "retrim: heads of layer ",
                      layer, " have different lengths");
    selection sel;
    std::vector<std::vector<float>> kept(static_cast<size_t>(heads));
    for (index_t h = 0; h < heads; ++h) {
      const auto& scores = p.kept_scores[l][static_cast<size_t>(off + h)];
      token_scores s = token_scores::make(false, 1, 0, cur.length, std::min(p.window, cur.length));
      std::copy_n(scores.begin(), s.candidates, s.values.begin());
      selection one = select_top(s, {std::min(target, cur.length)});
      for (index_t i : one.keep[0]) kept[static_cast<size_t>(h)].push_back(scores[static_cast<size_t>(i)]);
      sel.keep.push_back(std::move(one.keep[0]));
    }
    std::vector<index_t> lengths = exec_.apply(sel, cur);  // validates before writing
    for (index_t h = 0; h < heads; ++h) {
      p.kept_scores[l][static_cast<size_t>(off + h)] = std::move(kept[static_cast<size_t>(h)]);
      p.lengths[l][static_cast<size_t>(off + h)] = lengths[static_cast<size_t>(h)];
    }
    return lengths;
  }

 private:
  template <class T>
  void check(const plan& p, int layer, const layer_kv<T>& kv) const {
    check_layer_index(layer);
    detail::check_layer(kv, shape_.kv_heads);
    detail::require(kv.prompt_length() == p.prompt_length, "layer ", layer, " holds ",
                    kv.prompt_length(), " tokens, the plan was made for ", p.prompt_length);
    detail::require(kv.window() == p.window, "layer ", layer, " has a window of ", kv.window(),
                    " queries, the plan expects ", p.window);
    detail::require(kv.keys.dim() == shape_.head_dim, "head_dim ", kv.keys.dim(),
                    " differs from the model's ", shape_.head_dim);
    detail::require(kv.group() == shape_.group(), "query heads per KV head ", kv.group(),
                    " differs from the model's G = ", shape_.group());
  }
  void check_layer_index(int layer) const {
    detail::require(layer >= 0 && layer < shape_.layers, "layer ", layer, " outside [0, ",
                    shape_.layers, ")");
  }

  void remember(plan& p, int layer, const token_scores& s, const selection& sel) const {
    const auto l = static_cast<size_t>(layer);
    p.kept_scores[l].assign(sel.keep.size(), {});
    p.lengths[l] = sel.lengths();
    for (size_t h = 0; h < sel.keep.size(); ++h) {
      const float* row = s.row_for_head(static_cast<index_t>(h));
      auto& out = p.kept_scores[l][h];
      out.reserve(sel.keep[h].size());
      // Window rows get +inf-like priority by construction of select_top; store them as max.
      for (index_t t : sel.keep[h])
        out.push_back(t < s.candidates ? row[t] : std::numeric_limits<float>::max());
    }
  }

  model_shape shape_;
  compress_options opt_;
  HeadSelector sel_{};
  TokenScorer scorer_{};
  BudgetAllocator alloc_{};
  Executor exec_{};
};

}  // namespace kvtrim
