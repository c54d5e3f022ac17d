#pragma once
// The runtime front: a method name and its parameters -> a compressor, for tools and bindings.
// Each named method is one compile-time composition of the four roles (methods table in
// docs/METHODS.md); this header only erases the types so a tool can choose at run time.
//
//   auto m = kvtrim::make_method(cfg, shape);      // validates cfg against the model
//   auto seq = m.begin(prompt_len);                // one per sequence
//   for each layer: new_lengths = seq->compress_layer(layer, kv);
//                   for (int l : seq->pending_retrims()) seq->retrim(l, kv_of_layer_l);  // CAKE
#include <memory>
#include <string>
#include <vector>

#include "kvtrim/allocate/cake_layers.hpp"
#include "kvtrim/allocate/error_aware.hpp"
#include "kvtrim/allocate/head_adaptive.hpp"
#include "kvtrim/allocate/head_pool.hpp"
#include "kvtrim/allocate/pyramid.hpp"
#include "kvtrim/allocate/uniform.hpp"
#include "kvtrim/compose/compressor.hpp"
#include "kvtrim/compose/keep_all.hpp"
#include "kvtrim/profile/profile.hpp"
#include "kvtrim/score/cake.hpp"
#include "kvtrim/score/random.hpp"
#include "kvtrim/score/streaming.hpp"
#include "kvtrim/score/window_attention.hpp"
#include "kvtrim/select/all_heads.hpp"
#include "kvtrim/select/retrieval_heads.hpp"

namespace kvtrim {

struct method_config {
  std::string name = "snapkv";
  budget target = budget::tokens(64);
  index_t window = 8;
  // Window-score pooling of every window-scoring method (CAKE's too, for equal conditions): max,
  // kernel 7 -- the setting of KVCache-Factory, whose code the CompressKV, HeadKV and CAKE
  // evaluations run (SnapKV's own default, avg 5, keeps fewer whole spans; docs/RESULTS.md).
  pooling pool = pooling::max;
  int kernel = 7;
  int retrieval_heads = 4;        // compresskv: semantic retrieval heads per layer
  index_t min_layer_tokens = 32;  // compresskv: m of the error-aware allocator
  double pyramid_beta = 20;       // pyramidkv
  double headkv_beta = 1.01;      // headkv
  bool headkv_exact = true;       // headkv: exact L*H*B total (equal bytes) instead of the formula's
  double adakv_alpha = 0.2;       // adakv
  index_t sinks = 4;              // streaming
  std::uint64_t seed = 0;         // random
  double cake_gamma = 200.0, cake_tau1 = 1.0, cake_tau2 = 1.0;
  const profile* prof = nullptr;  // compresskv, compresskv-uniform, headkv
};

// Every name make_method accepts, in the order the docs list them.
inline const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names = {
      "full",   "random", "streaming", "snapkv",   "pyramidkv",         "adakv",
      "cake",   "headkv", "compresskv", "compresskv-uniform", "adakv-compresskv"};
  return names;
}

// One sequence's compression state, type-erased over the composition.
class sequence_compressor {
 public:
  virtual ~sequence_compressor() = default;

  virtual index_t prompt_length() const = 0;
  virtual index_t budget_tokens() const = 0;  // B resolved for this prompt
  // The window rows of queries each layer's call passes: the method's window, or for `full`
  // (which keeps every token) the prompt when it is shorter.
  virtual index_t window() const = 0;

  virtual token_scores score(int layer, const layer_kv<float>& kv) const = 0;
  virtual token_scores score(int layer, const layer_kv<half>& kv) const = 0;
  virtual token_scores score(int layer, const layer_kv<bfloat16>& kv) const = 0;
  virtual selection select(int layer, const token_scores& s) = 0;
  virtual std::vector<index_t> evict(const selection& sel, const layer_kv<float>& kv) const = 0;
  virtual std::vector<index_t> evict(const selection& sel, const layer_kv<half>& kv) const = 0;
  virtual std::vector<index_t> evict(const selection& sel, const layer_kv<bfloat16>& kv) const = 0;

  template <class T>
  std::vector<index_t> compress_layer(int layer, const layer_kv<T>& kv) {
    return evict(select(layer, score(layer, kv)), kv);
  }

  // CAKE only (empty otherwise): earlier layers whose budget shrank, and their re-trim.
  virtual std::vector<int> pending_retrims() const = 0;
  virtual std::vector<index_t> retrim(int layer, const layer_kv<float>& kv) = 0;
  virtual std::vector<index_t> retrim(int layer, const layer_kv<half>& kv) = 0;
  virtual std::vector<index_t> retrim(int layer, const layer_kv<bfloat16>& kv) = 0;
};

namespace detail {

template <class C>
class erased_sequence final : public sequence_compressor {
 public:
  erased_sequence(std::shared_ptr<const C> c, index_t n) : c_(std::move(c)), plan_(c_->begin(n)) {}

  index_t prompt_length() const override { return plan_.prompt_length; }
  index_t budget_tokens() const override { return plan_.budget; }
  index_t window() const override { return plan_.window; }
  token_scores score(int l, const layer_kv<float>& kv) const override { return c_->score(plan_, l, kv); }
  token_scores score(int l, const layer_kv<half>& kv) const override { return c_->score(plan_, l, kv); }
  token_scores score(int l, const layer_kv<bfloat16>& kv) const override {
    return c_->score(plan_, l, kv);
  }
  selection select(int l, const token_scores& s) override { return c_->select(plan_, l, s); }
  std::vector<index_t> evict(const selection& s, const layer_kv<float>& kv) const override {
    return c_->evict(s, kv);
  }
  std::vector<index_t> evict(const selection& s, const layer_kv<half>& kv) const override {
    return c_->evict(s, kv);
  }
  std::vector<index_t> evict(const selection& s, const layer_kv<bfloat16>& kv) const override {
    return c_->evict(s, kv);
  }
  std::vector<int> pending_retrims() const override { return c_->pending_retrims(plan_); }
  std::vector<index_t> retrim(int l, const layer_kv<float>& kv) override { return retrim_any(l, kv); }
  std::vector<index_t> retrim(int l, const layer_kv<half>& kv) override { return retrim_any(l, kv); }
  std::vector<index_t> retrim(int l, const layer_kv<bfloat16>& kv) override {
    return retrim_any(l, kv);
  }

 private:
  template <class T>
  std::vector<index_t> retrim_any(int l, const layer_kv<T>& kv) {
    if constexpr (C::cascades) {
      return c_->retrim(plan_, l, kv);
    } else {
      fail("retrim: this method never shrinks a compressed layer (layer ", l, ")");
    }
  }

  std::shared_ptr<const C> c_;
  typename C::plan plan_;
};

struct method_impl_base {
  virtual ~method_impl_base() = default;
  virtual std::unique_ptr<sequence_compressor> begin(index_t n) const = 0;
  virtual std::vector<std::vector<index_t>> planned_budgets(index_t n) const = 0;
};

template <class C>
struct method_impl final : method_impl_base {
  explicit method_impl(C c) : c_(std::make_shared<const C>(std::move(c))) {}
  std::unique_ptr<sequence_compressor> begin(index_t n) const override {
    return std::make_unique<erased_sequence<C>>(c_, n);
  }
  std::vector<std::vector<index_t>> planned_budgets(index_t n) const override {
    return c_->planned_budgets(n);
  }
  std::shared_ptr<const C> c_;
};

}  // namespace detail

// A runtime-configured method; cheap to copy, immutable, shareable across threads.
class method {
 public:
  const std::string& name() const { return name_; }
  const method_config& config() const { return cfg_; }
  const model_shape& shape() const { return shape_; }
  std::unique_ptr<sequence_compressor> begin(index_t prompt_length) const {
    return impl_->begin(prompt_length);
  }
  // [layer][kv_head] retained tokens for a prompt of n tokens (see compressor::planned_budgets).
  std::vector<std::vector<index_t>> planned_budgets(index_t prompt_length) const {
    return impl_->planned_budgets(prompt_length);
  }

 private:
  friend method make_method(const method_config& cfg, const model_shape& shape);
  std::string name_;
  method_config cfg_;
  model_shape shape_;
  std::shared_ptr<const detail::method_impl_base> impl_;
};

namespace detail {

template <class Sel, class Scorer, class Alloc>
std::shared_ptr<const method_impl_base> compose(const model_shape& shape, const method_config& cfg,
                                                Sel sel, Scorer sc, Alloc al) {
  using C = compressor<Sel, Scorer, Alloc>;
  return std::make_shared<method_impl<C>>(
      C(shape, compress_options{cfg.target, cfg.window}, std::move(sel), std::move(sc), std::move(al)));
}

inline const profile& need_profile(const method_config& cfg, const model_shape& shape,
                                   bool srh, bool rr, bool layers) {
  require(cfg.prof != nullptr, "method '", cfg.name,
          "' needs a profile (kvtrim calibrate, or kvtrim profile import)");
  const profile& p = *cfg.prof;
  p.check_matches(shape);
  require(!srh || p.has_semantic_retrieval(), "method '", cfg.name,
          "': the profile has no semantic-retrieval head scores");
  require(!rr || p.has_retrieval_reasoning(), "method '", cfg.name,
          "': the profile has no retrieval-reasoning head scores");
  require(!layers || p.has_layer_error(), "method '", cfg.name,
          "': the profile has no layer eviction-error weights");
  return p;
}

}  // namespace detail

// Builds the named method. Throws kvtrim::error for an unknown name, bad parameters or a profile
// that is missing or made for another model.
inline method make_method(const method_config& cfg, const model_shape& shape) {
  using namespace detail;
  shape.validate();
  require(cfg.window >= 1, "window ", cfg.window, " must be >= 1");
  window_attention snap;
  snap.pool = cfg.pool;
  snap.kernel = cfg.kernel;
  snap.validate();
  window_attention shared_snap = snap;
  shared_snap.aggregate = aggregation::shared;

  method m;
  m.name_ = cfg.name;
  m.cfg_ = cfg;
  m.shape_ = shape;
  const std::string& n = cfg.name;
  if (n == "full") {
    m.impl_ = compose(shape, cfg, all_heads{}, no_scores{}, keep_all{});
  } else if (n == "random") {
    random_scores r;
    r.seed = cfg.seed;
    m.impl_ = compose(shape, cfg, all_heads{}, r, uniform{});
  } else if (n == "streaming") {
    streaming s;
    s.sinks = cfg.sinks;
    s.validate();
    m.impl_ = compose(shape, cfg, all_heads{}, s, uniform{});
  } else if (n == "snapkv") {
    m.impl_ = compose(shape, cfg, all_heads{}, snap, uniform{});
  } else if (n == "pyramidkv") {
    require(cfg.pyramid_beta >= 1 && cfg.pyramid_beta == static_cast<double>(static_cast<index_t>(cfg.pyramid_beta)),
            "pyramidkv: beta ", cfg.pyramid_beta, " must be an integer >= 1");
    m.impl_ = compose(shape, cfg, all_heads{}, snap, pyramid(static_cast<index_t>(cfg.pyramid_beta)));
  } else if (n == "adakv") {
    m.impl_ = compose(shape, cfg, all_heads{}, snap, head_adaptive<uniform>(cfg.adakv_alpha));
  } else if (n == "cake") {
    cake_scores c;
    c.gamma = cfg.cake_gamma;
    c.pool = cfg.pool;
    c.kernel = cfg.kernel;
    c.validate();
    m.impl_ = compose(shape, cfg, all_heads{}, c, cake_layers(cfg.cake_tau1, cfg.cake_tau2));
  } else if (n == "headkv") {
    const profile& p = need_profile(cfg, shape, false, true, false);
    m.impl_ = compose(shape, cfg, all_heads{}, snap,
                      head_pool(p.retrieval_reasoning, cfg.headkv_beta,
                                cfg.headkv_exact ? head_pool::total::exact : head_pool::total::formula));
  } else if (n == "compresskv") {
    const profile& p = need_profile(cfg, shape, true, false, true);
    m.impl_ = compose(shape, cfg, kvtrim::retrieval_heads(p.semantic_retrieval, cfg.retrieval_heads),
                      shared_snap, error_aware(p.layer_error, cfg.min_layer_tokens));
  } else if (n == "compresskv-uniform") {  // ablation: semantic retrieval heads, uniform budgets
    const profile& p = need_profile(cfg, shape, true, false, false);
    m.impl_ = compose(shape, cfg, kvtrim::retrieval_heads(p.semantic_retrieval, cfg.retrieval_heads),
                      shared_snap, uniform{});
  } else if (n == "adakv-compresskv") {  // Ada-KV's head split inside CompressKV's layer budgets
    const profile& p = need_profile(cfg, shape, false, false, true);
    m.impl_ = compose(shape, cfg, all_heads{}, snap,
                      head_adaptive<error_aware>(cfg.adakv_alpha,
                                                 error_aware(p.layer_error, cfg.min_layer_tokens)));
  } else {
    std::string all;
    for (const auto& x : method_names()) all += (all.empty() ? "" : ", ") + x;
    fail("unknown method '", n, "' (accepted: ", all, ")");
  }
  return m;
}

}  // namespace kvtrim
