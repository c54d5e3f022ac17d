#pragma once
// The runtime front: a method's name and parameters -> a compressor, for tools and bindings.
// Each registered method (compose/registry.hpp) is one compile-time composition of the four
// roles; this header only erases the types so a tool can choose at run time.
//
//   kvtrim::method_spec spec;  spec.name = "pyramidkv";  spec.params = {{"beta", "20"}};
//   auto m = kvtrim::make_method(spec, shape);     // validates everything against the model
//   auto seq = m.begin(prompt_len);                // one per sequence
//   for each layer: new_lengths = seq->compress_layer(layer, kv);           // most methods
//                   new_lengths = seq->compress_layer(layer, kv, store);    // any method (CAKE)
#include <memory>
#include <string>
#include <vector>

#include "kvtrim/compose/batch.hpp"
#include "kvtrim/compose/compressor.hpp"
#include "kvtrim/compose/layer_store.hpp"
#include "kvtrim/compose/registry.hpp"

namespace kvtrim {

// What make_method builds: a registered name, the budget and window every method shares, the
// method's own parameters (defaults from its registry entry), and the profile if it needs one.
struct method_spec {
  std::string name = "snapkv";
  budget target = budget::tokens(64);  // B, window included
  index_t window = 8;                  // w: the last w prompt tokens, always kept
  param_values params;                 // this method's keys only ("beta" -> "20")
  const profile* prof = nullptr;       // compresskv, compresskv-uniform, headkv, adakv-compresskv
  // Any method: each head's kept keys re-rotated to contiguous positions ending at the prompt's
  // end, n - len .. n - 1 (kvpress's KeyRerotationPress; evict/rerotate.hpp). Every layer_kv
  // given to the method, and a layer_store's compacted() views, must then carry the model's `rope`.
  bool rerotate_keys = false;
};

// One sequence's compression state, type-erased over the composition.
class sequence_compressor {
 public:
  virtual ~sequence_compressor() = default;

  virtual index_t prompt_length() const = 0;
  virtual index_t budget_tokens() const = 0;  // B resolved for this prompt
  virtual bool cascades() const = 0;          // re-trims earlier layers (needs a layer_store)
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

  // The whole step of a layer. A cascading method refuses this overload (its earlier layers
  // would silently stay over budget): give it the store below.
  template <class T>
  std::vector<index_t> compress_layer(int layer, const layer_kv<T>& kv) {
    detail::require(!cascades(), "this method re-trims earlier layers as later ones arrive: call "
                    "compress_layer(layer, kv, store) with a kvtrim::layer_store "
                    "(compose/layer_store.hpp, docs/INTEGRATION.md)");
    return evict(select(layer, score(layer, kv)), kv);
  }
  // The whole step for every method: compresses `layer`, then re-trims through `store` each
  // earlier layer whose budget a cascade shrank, telling the store the new lengths.
  template <class T>
  std::vector<index_t> compress_layer(int layer, const layer_kv<T>& kv, layer_store<T>& store) {
    std::vector<index_t> lengths = evict(select(layer, score(layer, kv)), kv);
    for (int r : pending_retrims()) {
      std::vector<index_t> now(lengths.size());
      for (index_t h = 0; h < static_cast<index_t>(now.size());) {
        const layer_kv<T> v = store.compacted(r, h);
        detail::require(v.kv_head_offset == h && v.kv_heads() >= 1 &&
                            h + v.kv_heads() <= static_cast<index_t>(now.size()),
                        "layer_store: compacted(", r, ", ", h, ") returned KV heads from ",
                        v.kv_head_offset, " (", v.kv_heads(), " heads)");
        const std::vector<index_t> got = retrim(r, v);
        std::copy(got.begin(), got.end(), now.begin() + h);
        h += static_cast<index_t>(got.size());
      }
      store.resized(r, now);
    }
    return lengths;
  }

  // The step's parts for engines that act in between (tensor parallelism): after a cascading
  // method's select/evict, the earlier layers whose budget shrank, and their re-trim.
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
  bool cascades() const override { return C::cascades; }
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
  const std::string& name() const { return spec_.name; }
  const method_spec& spec() const { return spec_; }
  const method_info& info() const { return find_method(spec_.name); }
  // Every parameter's value, defaults included (what the method was built with).
  const param_values& params() const { return params_; }
  const model_shape& shape() const { return shape_; }
  bool cascades() const { return info().cascades; }
  std::unique_ptr<sequence_compressor> begin(index_t prompt_length) const {
    return impl_->begin(prompt_length);
  }
  // [layer][kv_head] retained tokens for a prompt of n tokens (see compressor::planned_budgets).
  std::vector<std::vector<index_t>> planned_budgets(index_t prompt_length) const {
    return impl_->planned_budgets(prompt_length);
  }

 private:
  friend method make_method(const method_spec& spec, const model_shape& shape);
  method_spec spec_;
  param_values params_;
  model_shape shape_;
  std::shared_ptr<const detail::method_impl_base> impl_;
};

namespace detail {

// The CPU backend's composer: role objects -> compressor<Sel, Scorer, Alloc>, type-erased.
struct cpu_composer {
  model_shape shape;
  compress_options options;
  compact_in_place exec;
  template <class Sel, class Scorer, class Alloc>
  std::shared_ptr<const method_impl_base> operator()(Sel sel, Scorer sc, Alloc al) const {
    using C = compressor<Sel, Scorer, Alloc>;
    return std::make_shared<method_impl<C>>(
        C(shape, options, std::move(sel), std::move(sc), std::move(al), exec));
  }
};

// The profile a method needs, checked against the model and for the parts the method reads.
inline void check_profile_for(const method_info& m, const profile* prof, const model_shape& shape) {
  if (!m.needs_profile()) return;
  require(prof != nullptr, "method '", m.name,
          "' needs a profile (kvtrim calibrate, or kvtrim profile import)");
  prof->check_matches(shape);
  require(!m.needs_semantic_retrieval || prof->has_semantic_retrieval(), "method '", m.name,
          "': the profile has no semantic-retrieval head scores");
  require(!m.needs_retrieval_reasoning || prof->has_retrieval_reasoning(), "method '", m.name,
          "': the profile has no retrieval-reasoning head scores");
  require(!m.needs_layer_error || prof->has_layer_error(), "method '", m.name,
          "': the profile has no layer eviction-error weights");
}

}  // namespace detail

// Builds the named method. Throws kvtrim::error for an unknown name, an unknown parameter or one
// out of range, or a profile that is missing or made for another model.
inline method make_method(const method_spec& spec, const model_shape& shape) {
  shape.validate();
  const method_info& info = find_method(spec.name);
  detail::require(spec.window >= 1, "window ", spec.window, " must be >= 1");
  const param_set ps(spec.name, info.params, spec.params);
  detail::check_profile_for(info, spec.prof, shape);
  const build_args args{ps, spec.prof};
  const detail::cpu_composer compose{shape, compress_options{spec.target, spec.window},
                                     compact_in_place{spec.rerotate_keys}};
  method m;
  m.spec_ = spec;
  m.params_ = ps.values();
  m.shape_ = shape;
  for_each_method([&](auto entry) {
    if (spec.name == decltype(entry)::name) m.impl_ = decltype(entry)::build(compose, args);
  });
  return m;
}

// compress_batch (compose/batch.hpp) for runtime sequences: seqs[s] compresses sequence s of the
// padded batch. `stores[s]` serves cascading methods' re-trims (may be empty otherwise).
template <class T>
std::vector<std::vector<index_t>> compress_batch(
    const std::vector<std::unique_ptr<sequence_compressor>>& seqs, int layer,
    const batch_layer_kv<T>& batch, const std::vector<layer_store<T>*>& stores = {}) {
  detail::require(static_cast<index_t>(seqs.size()) == batch.size(), "batch: ", seqs.size(),
                  " sequences for ", batch.size(), " in the batch");
  detail::require(stores.empty() || stores.size() == seqs.size(), "batch: ", stores.size(),
                  " layer stores for ", seqs.size(), " sequences");
  const std::vector<layer_kv<T>> views = detail::batch_views(batch);
  std::vector<std::vector<index_t>> out;
  out.reserve(views.size());
  for (size_t s = 0; s < views.size(); ++s) {
    layer_store<T>* st = stores.empty() ? nullptr : stores[s];
    out.push_back(st ? seqs[s]->compress_layer(layer, views[s], *st)
                     : seqs[s]->compress_layer(layer, views[s]));
  }
  return out;
}

}  // namespace kvtrim
