#include "engine/compression.hpp"

#include <chrono>

namespace kvhost {

kvtrim::model_shape kvtrim_shape(const model_config& cfg) {
  return kvtrim::model_shape{cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.n_ctx};
}

compression_session::compression_session(const kvtrim::method& m, kv_store& cache,
                                         int64_t prompt_length)
    : method_(m), store_(cache), seq_(m.begin(prompt_length)) {}

// The hook asks the prefill for what the method reads beyond K, V and the window's queries
// (method_info::needs_*): the attention's column sums (h2o) and the pre-RoPE queries
// (expected_attention); W_o and the RoPE frequencies always come with the layer.
prefill_hook compression_session::hook() {
  const kvtrim::method_info& info = method_.info();
  return prefill_hook::with_extras(
      [this](int layer, float* k, float* v, const float* q, int64_t n, int64_t w, const layer_extras& e) {
        return on_layer(layer, k, v, q, n, w, e);
      },
      info.needs_attention_sums, info.needs_prompt_queries);
}

std::vector<int64_t> compression_session::on_layer(int layer, float* k, float* v, const float* q_window,
                                                   int64_t n, int64_t window, const layer_extras& e) {
  const auto t0 = std::chrono::steady_clock::now();
  const kvtrim::model_shape s = method_.shape();
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(k, s.kv_heads, n, s.head_dim);
  kv.values = kvtrim::view3<float>::head_major(v, s.kv_heads, n, s.head_dim);
  kv.queries = kvtrim::view3<const float>::head_major(q_window, s.q_heads, window, s.head_dim);
  const int64_t q_dim = s.q_heads * s.head_dim;
  if (e.wo)  // o_proj [n_embd][q_dim]: head i's slice is columns [i d, (i + 1) d)
    kv.out_proj = kvtrim::view3<const float>(e.wo, s.q_heads, e.wo_rows, s.head_dim, s.head_dim, q_dim, 1);
  if (e.attention_sums) kv.attention_sums = kvtrim::view3<const float>::head_major(e.attention_sums, s.q_heads, n, 1);
  if (e.prompt_queries)
    kv.prompt_queries = kvtrim::view3<const float>(e.prompt_queries, s.q_heads, n, s.head_dim, s.head_dim, e.q_stride, 1);
  if (e.inv_freq) kv.rope.inv_freq = store_.inv_freq = e.inv_freq;  // the host's RoPE pairs (i, i + d/2): halves
  std::vector<int64_t> lengths = seq_->compress_layer(layer, kv, store_);
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return lengths;
}

// CAKE: a later layer's preference shrinks the budgets of layers already in the store; decode-time
// compression cuts heads back to their target. Each head of the store is its own allocation, so
// kvtrim works through a one-head view and the store then releases the freed rows.
kvtrim::layer_kv<float> host_layer_store::compacted(int layer, int64_t kv_head) {
  const int64_t len = cache.lengths(layer)[size_t(kv_head)];
  kvtrim::layer_kv<float> kv;
  kv.keys = kvtrim::view3<float>::head_major(cache.k(layer, int(kv_head)), 1, len, cache.head_dim());
  kv.values = kvtrim::view3<float>::head_major(cache.v(layer, int(kv_head)), 1, len, cache.head_dim());
  kv.kv_head_offset = kv_head;
  kv.rope.inv_freq = inv_freq;  // a re-rotating method turns the re-trimmed rows again
  return kv;
}

void host_layer_store::resized(int layer, const std::vector<int64_t>& lengths) {
  cache.shrink(layer, lengths);
}

decode_session::decode_session(const kvtrim::decode_compressor& dc, kv_store& cache)
    : dc_(dc), cache_(cache), store_(cache),
      ring_(dc.decode_method().shape().layers, dc.decode_method().shape().q_heads, dc.window(),
            dc.decode_method().shape().head_dim),
      since_(static_cast<size_t>(dc.decode_method().shape().layers), 0) {}

prefill_hook decode_session::wrap(prefill_hook inner) {
  const bool sums = inner.wants_attention_sums(), queries = inner.wants_prompt_queries();
  return prefill_hook::with_extras(
      [this, inner = std::move(inner)](int layer, float* k, float* v, const float* q, int64_t n, int64_t w,
                                       const layer_extras& e) {
        const kvtrim::model_shape& s = dc_.decode_method().shape();
        ring_.seed(layer, kvtrim::view3<const float>::head_major(q, s.q_heads, w, s.head_dim));
        if (inner) return inner(layer, k, v, q, n, w, e);
        return std::vector<int64_t>(static_cast<size_t>(s.kv_heads), n);
      },
      sums, queries);
}

decode_observer decode_session::observer() {
  return [this](int layer, const float* q, const kv_store&, const float*) { ring_.push(layer, q); };
}

bool decode_session::after_step() {
  const auto t0 = std::chrono::steady_clock::now();
  bool any = false;
  for (int l = 0; l < cache_.n_layer(); ++l) {
    int64_t& since = since_[static_cast<size_t>(l)];
    ++since;
    const std::vector<int64_t> len = cache_.lengths(l);
    if (!ring_.full(l) || !dc_.due(l, since, len)) continue;
    dc_.compress_layer(l, len, ring_.queries(l), store_);
    since = 0;
    ++compressions_;
    any = true;
  }
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return any;
}

}  // namespace kvhost
