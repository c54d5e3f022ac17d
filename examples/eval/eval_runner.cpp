#include "eval/eval_runner.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "engine/compression.hpp"

namespace kvhost {

prefill_capture capture_prefill(const model& mdl, const std::vector<int32_t>& prompt, int64_t window,
                                bool attention_sums, bool prompt_queries) {
  const model_config& c = mdl.config();
  prefill_capture cap;
  cap.n_layer = c.n_layer;
  cap.n_head = c.n_head;
  cap.n_kv_head = c.n_kv_head;
  cap.head_dim = c.head_dim;
  cap.n = static_cast<int64_t>(prompt.size());
  cap.window = std::max<int64_t>(1, std::min<int64_t>(window, cap.n));
  cap.k.resize(static_cast<size_t>(c.n_layer));
  cap.v.resize(cap.k.size());
  cap.q.resize(cap.k.size());
  cap.mdl = &mdl;
  if (attention_sums) cap.attention_sums.resize(cap.k.size());
  if (prompt_queries) cap.prompt_queries.resize(cap.k.size());
  // The hook keeps everything: it copies and returns the full length of every head.
  const auto keep_all_fn = [&cap](int layer, float* k, float* v, const float* q, int64_t n, int64_t w,
                                  const layer_extras& e) {
    const auto l = static_cast<size_t>(layer);
    if (e.attention_sums) cap.attention_sums[l].assign(e.attention_sums, e.attention_sums + cap.n_head * n);
    if (e.prompt_queries) {
      const int64_t qd = static_cast<int64_t>(cap.n_head) * cap.head_dim;
      cap.prompt_queries[l].resize(static_cast<size_t>(n * qd));
      for (int64_t t = 0; t < n; ++t) std::copy_n(e.prompt_queries + t * e.q_stride, qd, cap.prompt_queries[l].data() + t * qd);
    }
    const size_t kv = static_cast<size_t>(cap.n_kv_head) * static_cast<size_t>(n) * static_cast<size_t>(cap.head_dim);
    const size_t qs = static_cast<size_t>(cap.n_head) * static_cast<size_t>(w) * static_cast<size_t>(cap.head_dim);
    cap.k[static_cast<size_t>(layer)].assign(k, k + kv);
    cap.v[static_cast<size_t>(layer)].assign(v, v + kv);
    cap.q[static_cast<size_t>(layer)].assign(q, q + qs);
    return std::vector<int64_t>(static_cast<size_t>(cap.n_kv_head), n);
  };
  const prefill_hook keep_all = prefill_hook::with_extras(keep_all_fn, attention_sums, prompt_queries);
  kv_store scratch(c.n_layer, c.n_kv_head, c.head_dim);
  prefill_result r = mdl.prefill(prompt, scratch, keep_all, static_cast<int>(cap.window));
  cap.logits = std::move(r.logits);
  cap.prefill_s = r.seconds - r.hook_seconds;  // the copies are the runner's cost, not prefill's
  return cap;
}

double build_cache(const prefill_capture& cap, const kvtrim::method* m, kv_store& cache) {
  cache.reset(cap.n_layer, cap.n_kv_head, cap.head_dim);
  const int64_t n = cap.n, hd = cap.head_dim;
  if (!m || m->name() == "full") {
    for (int l = 0; l < cap.n_layer; ++l)
      for (int g = 0; g < cap.n_kv_head; ++g)
        cache.assign(l, g, cap.k[size_t(l)].data() + g * n * hd, cap.v[size_t(l)].data() + g * n * hd, n);
    cache.set_n_past(n);
    return 0;
  }
  const int64_t w = m->spec().window;
  kvtrim::detail::require(w >= 1 && w <= cap.window, "build_cache: method '", m->name(), "' window ", w,
                          " outside [1, ", cap.window, "] (the captured window, at most the prompt)");
  // Exactly what model::prefill does around the hook: the session compacts a copy of the layer
  // in place (re-trimming layers already in the store for CAKE), then the kept rows move in.
  compression_session session(*m, cache, n);
  const prefill_hook hook = session.hook();
  std::vector<float> k, v, q(static_cast<size_t>(cap.n_head * w * hd));
  for (int l = 0; l < cap.n_layer; ++l) {
    k = cap.k[size_t(l)];
    v = cap.v[size_t(l)];
    const float* qa = cap.q[size_t(l)].data();
    for (int h = 0; h < cap.n_head; ++h)  // the last w of the captured window's rows
      std::copy_n(qa + (h * cap.window + cap.window - w) * hd, w * hd, q.data() + h * w * hd);
    layer_extras e;
    if (cap.mdl) {
      e.wo = cap.mdl->out_proj(l);
      e.wo_rows = cap.mdl->config().n_embd;
      e.inv_freq = cap.mdl->rope_frequencies().data();
    }
    if (!cap.attention_sums.empty()) e.attention_sums = cap.attention_sums[size_t(l)].data();
    if (!cap.prompt_queries.empty()) {
      e.prompt_queries = cap.prompt_queries[size_t(l)].data();
      e.q_stride = static_cast<int64_t>(cap.n_head) * hd;
    }
    const std::vector<int64_t> keep = hook(l, k.data(), v.data(), q.data(), n, w, e);
    for (int g = 0; g < cap.n_kv_head; ++g)
      cache.assign(l, g, k.data() + g * n * hd, v.data() + g * n * hd, keep[size_t(g)]);
  }
  cache.set_n_past(n);
  return session.seconds();
}

std::vector<std::vector<float>> teacher_forced_logprobs(const model& mdl, kv_store& cache,
                                                        const std::vector<int32_t>& continuation) {
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i + 1 < continuation.size(); ++i) {
    if (cache.n_past() >= mdl.config().n_ctx) break;
    std::vector<float> lg = mdl.decode_step(continuation[i], cache);
    const float mx = *std::max_element(lg.begin(), lg.end());
    double z = 0;
    for (float x : lg) z += std::exp(static_cast<double>(x - mx));
    const auto lz = static_cast<float>(std::log(z)) + mx;
    for (float& x : lg) x -= lz;
    out.push_back(std::move(lg));
  }
  return out;
}

config_run run_config(const model& mdl, const prefill_capture& cap, const kvtrim::method* m, int max_new_tokens,
                      const std::vector<int32_t>& stop_tokens) {
  kv_store cache;
  config_run r;
  r.method = m ? m->name() : "full";
  r.budget = m && m->name() != "full" ? m->spec().target.resolve(cap.n) : cap.n;
  r.kvtrim_s = build_cache(cap, m, cache);
  r.kv_bytes = cache.retained_bytes();
  r.kv_full_bytes = cap.full_kv_bytes();
  r.kv_allocated_bytes = cache.allocated_bytes();
  r.kv_percent_of_full = 100.0 * static_cast<double>(r.kv_bytes) / static_cast<double>(r.kv_full_bytes);
  decode_result d = mdl.decode_greedy(cache, cap.logits, max_new_tokens, stop_tokens);
  r.tokens = std::move(d.tokens);
  r.decode_s = d.seconds;
  return r;
}

}  // namespace kvhost
