#pragma once
// Decode-time compression: keeps each layer's cache at a target size while a long generation
// grows it (kvpress's DecodingPress: compression_interval + target_size + a scorer press, the
// last w decode queries as the observation window), freeing memory per KV head.
//
// Contract (an engine's decode loop; docs/INTEGRATION.md "Decode-time compression"):
//   decode_compressor dc(method, {target, interval});    // refuses a method that can't apply
//   query_ring<T> ring(layers, q_heads, dc.window(), head_dim);  // seeded from the prefill window
//   each step, layer l, after RoPE:  ring.push(l, q);  append K/V;  attend
//   after the step, per layer:  if (dc.due(l, steps_since_last[l], lengths(l)))
//                                 lengths = dc.compress_layer(l, lengths, ring.queries(l), store);
// Each KV head h of the layer whose length exceeds its target is one prompt of its own length
// n_h whose window is its last w rows (the last w decode tokens: each head appends at its end, and
// compaction keeps the window last), scored by the method's token scorer from the ring's queries
// of h's G query heads, cut to target(l, h) by select_top and compacted in place by the
// method's executor -- the same roles as prefill, on a one-head view (kv_head_offset = h) that
// store.compacted(l, h) gives. Heads at or under their target are not touched. Every head is
// scored before any row moves, so an error leaves the cache as it was; store.resized(l, lengths)
// then tells the engine to free the rows. Keys stay at their absolute positions (RoPE was applied
// when they were stored) and decoding continues at n_past: nothing else changes.
//
// target(l, h): the method's planned budgets at B = policy.target for a long prompt (the model's
// context): `target` everywhere for uniform methods, PyramidKV's pyramid over layers. Allocators
// that split by the data (Ada-KV's head-adaptive split) are not re-run at decode: their planned
// (neutral) budgets apply. due(): `interval` decode steps since the layer's last compression, or
// a head longer than its target + interval (a cache left large by prefill shrinks at once).
//
// Which methods apply (decode_refusal says why not, and the constructor throws kvtrim::error
// with that reason before anything is read):
//   apply: every scorer that reads only K, V and the window queries -- snapkv, pyramidkv, adakv,
//     streaming, random, knorm, keydiff, tova, chunkkv. Scorers
//     with one shared row per layer (tova) become per-head at decode, since each head is scored
//     alone.
//   refused: full (keeps everything); cascading methods (cake: re-trims through the prefill's
//     layer budgets); methods reading prefill-only inputs (h2o's attention sums over every
//     prompt query, expected_attention's pre-RoPE prompt queries) or W_o (criticalkv); methods
//     whose head selection or budgets come from a profile over a whole layer (compresskv,
//     compresskv-uniform, compresskv-chunk, adakv-compresskv, headkv); snapkv-paper and
//     pyramidkv-paper (their scorer needs every KV head of a layer at once); re-rotated keys
//     (method_spec::rerotate_keys: positions n - len .. n - 1 are prompt positions).
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "kvtrim/compose/layer_store.hpp"
#include "kvtrim/compose/method.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/evict/top_k.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace kvtrim {

struct decode_policy {
  index_t target = 64;    // tokens kept per KV head after a compression step (average over layers)
  index_t interval = 16;  // compress every `interval` steps, or when a head passes target + interval
};

// Why a method (its registry entry, and whether its keys are re-rotated) can't compress during
// decode, or "" when it can. Needs no model: a tool checks it before loading one.
inline std::string decode_refusal(const method_info& i, bool rerotate_keys) {
  const std::string who = "decode-time compression: method '" + i.name + "' ";
  if (i.name == "full") return who + "keeps every token; there is nothing to compress";
  if (i.cascades) return who + "cascades (re-trims earlier layers by prefill layer budgets)";
  if (i.needs_attention_sums)
    return who + "scores with the attention sums of every prompt query, which decode does not have";
  if (i.needs_prompt_queries) return who + "reads the prompt's pre-RoPE queries, which decode does not have";
  if (i.needs_out_proj) return who + "reads W_o and ranks by per-head budgets (not supported at decode)";
  // misgrouped_window_attention scores KV head j with query heads h mod KV = j of the whole layer:
  // it refuses a view of fewer than every KV head, and decode scores one head at a time.
  if (i.name == "snapkv-paper" || i.name == "pyramidkv-paper")
    return who + "scores each KV head with query heads of the whole layer (GQA groups mixed up); decode scores one KV head at a time";
  if (i.needs_profile())
    return who + "selects heads or budgets from a profile over a whole layer; decode scores one KV head at a time";
  if (rerotate_keys) return who + "re-rotates keys to prompt positions (rerotate_keys)";
  return "";
}
inline std::string decode_refusal(const method& m) { return decode_refusal(m.info(), m.spec().rerotate_keys); }

class decode_compressor {
 public:
  decode_compressor(const method& m, decode_policy p) : method_(m), policy_(p) {
    const std::string why = decode_refusal(m);
    if (!why.empty()) detail::fail(why);
    detail::require(p.interval >= 1, "decode-time compression: interval ", p.interval, " must be >= 1");
    detail::require(p.target >= m.spec().window, "decode-time compression: target ", p.target,
                    " must be >= the method's window ", m.spec().window, " (the window is always kept)");
    const model_shape& s = m.shape();
    const index_t n_ref = s.context > 0 ? s.context : std::max<index_t>(p.target * 64, 1 << 16);
    method_spec at_target = m.spec();
    at_target.target = budget::tokens(p.target);
    targets_ = make_method(at_target, s).planned_budgets(n_ref);
  }

  const method& decode_method() const { return method_; }
  const decode_policy& policy() const { return policy_; }
  // The queries per layer a compression step scores with (query_ring's capacity).
  index_t window() const { return method_.spec().window; }
  index_t target(int layer, index_t kv_head) const {
    check_layer(layer);
    return targets_[static_cast<size_t>(layer)].at(static_cast<size_t>(kv_head));
  }

  // Whether layer `layer` should compress now, `steps` decode steps after its last compression
  // (or the prefill), its heads holding `lengths` rows.
  bool due(int layer, index_t steps, const std::vector<index_t>& lengths) const {
    check_layer(layer);
    bool over = false, bound = false;
    for (size_t h = 0; h < lengths.size(); ++h) {
      const index_t t = target(layer, static_cast<index_t>(h));
      over = over || lengths[h] > t;
      bound = bound || lengths[h] > t + policy_.interval;
    }
    return over && (steps >= policy_.interval || bound);
  }

  // Cuts each KV head of `layer` longer than its target back to the target (see the top of this
  // file). `lengths`: rows each head holds now; `queries`: [q_head][window()][dim], the last
  // window() decode queries of the layer, oldest first (query_ring::queries). Returns the new
  // lengths, which store.resized(layer, ...) has also received when any changed.
  template <class T>
  std::vector<index_t> compress_layer(int layer, const std::vector<index_t>& lengths, const view3<const T>& queries,
                                      layer_store<T>& store) const {
    check_layer(layer);
    const model_shape& s = method_.shape();
    const index_t G = s.group();
    detail::require(static_cast<index_t>(lengths.size()) == s.kv_heads, "decode-time compression: ",
                    lengths.size(), " lengths for layer ", layer, ", expected ", s.kv_heads, " (one per KV head)");
    detail::check_view(queries, "decode-time compression: queries");
    detail::require(queries.heads() == s.q_heads && queries.tokens() == window() && queries.dim() == s.head_dim,
                    "decode-time compression: queries [", queries.heads(), "][", queries.tokens(), "][",
                    queries.dim(), "], expected [", s.q_heads, "][", window(), "][", s.head_dim,
                    "] (the ring must hold window() steps)");
    struct pending {
      index_t head;
      layer_kv<T> kv;
      std::unique_ptr<sequence_compressor> seq;
      selection sel;
    };
    // A decode step's heads are small (target + interval rows): waking threads costs far more than
    // the work (measured on 2 shared cores: ~7 ms per Eigen product on 2 threads, 0.1 ms on one),
    // so this thread scores alone; only its own OpenMP setting changes, and it is restored.
    [[maybe_unused]] const one_thread scoped;
    std::vector<pending> work;
    for (index_t h = 0; h < s.kv_heads; ++h) {  // score every head first: nothing moves on error
      const index_t n = lengths[static_cast<size_t>(h)], t = target(layer, h);
      if (n <= t) continue;
      const layer_kv<T> v = store.compacted(layer, h);
      detail::require(v.kv_head_offset == h && v.kv_heads() >= 1, "layer_store: compacted(", layer, ", ", h,
                      ") returned KV heads from ", v.kv_head_offset, " (", v.kv_heads(), " heads)");
      layer_kv<T> kv;
      kv.keys = v.keys.head_range(0, 1);
      kv.values = v.values.head_range(0, 1);
      detail::require(kv.keys.tokens() >= n, "layer_store: compacted(", layer, ", ", h, ") holds ",
                      kv.keys.tokens(), " rows, the head has ", n);
      kv.keys = kv.keys.first_tokens(n);
      kv.values = kv.values.first_tokens(n);
      kv.queries = queries.head_range(h * G, G);
      kv.kv_head_offset = h;
      kv.rope = v.rope;
      pending p{h, kv, method_.begin(n), {}};
      p.sel = select_top(p.seq->score(layer, kv), {t});
      work.push_back(std::move(p));
    }
    std::vector<index_t> out = lengths;
    for (pending& p : work) out[static_cast<size_t>(p.head)] = p.seq->evict(p.sel, p.kv).at(0);
    if (!work.empty()) store.resized(layer, out);
    return out;
  }

 private:
  struct one_thread {
#if defined(_OPENMP)
    one_thread() : before(omp_get_max_threads()) { omp_set_num_threads(1); }
    ~one_thread() { omp_set_num_threads(before); }
    one_thread(const one_thread&) = delete;
    one_thread& operator=(const one_thread&) = delete;
    int before;
#endif
  };
  void check_layer(int layer) const {
    detail::require(layer >= 0 && layer < method_.shape().layers, "decode-time compression: layer ", layer,
                    " outside [0, ", method_.shape().layers, ")");
  }

  method method_;
  decode_policy policy_;
  std::vector<std::vector<index_t>> targets_;  // [layer][kv_head]
};

}  // namespace kvtrim
