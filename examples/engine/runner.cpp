#include "engine/runner.hpp"

#include <algorithm>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "engine/compression.hpp"
#include "engine/kv_store.hpp"

namespace kvhost {

bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  return static_cast<bool>(f.flush());
}

run_report run_generation(const model& mdl, const tokenizer& tok, const std::vector<int32_t>& prompt,
                          const kvtrim::method* m, int max_new_tokens,
                          const std::vector<int32_t>& stop_tokens, const kvtrim::decode_compressor* dc) {
  reset_peak_rss();
  const model_config& cfg = mdl.config();
  kv_store cache(cfg.n_layer, cfg.n_kv_head, cfg.head_dim);
  std::unique_ptr<compression_session> session;
  std::unique_ptr<decode_session> dec;
  int window = 8;
  if (m) {
    session = std::make_unique<compression_session>(*m, cache, static_cast<int64_t>(prompt.size()));
    window = session->window();
  }
  prefill_hook hook = session ? session->hook() : prefill_hook{};
  if (dc) {
    dec = std::make_unique<decode_session>(*dc, cache);
    hook = dec->wrap(std::move(hook));
    if (!session) window = static_cast<int>(std::min<int64_t>(dc->window(), static_cast<int64_t>(prompt.size())));
  }
  // model::generate's two halves, so the prefill's bytes are read before decode adds (or cuts) rows.
  const prefill_result pre = mdl.prefill(prompt, cache, hook, window);
  run_report r;
  r.kv_bytes = cache.retained_bytes();
  r.kv_allocated_peak_bytes = cache.allocated_bytes();
  const auto on_step = [&](int32_t) {
    r.kv_allocated_peak_bytes = std::max(r.kv_allocated_peak_bytes, cache.allocated_bytes());
    if (dec) dec->after_step();
  };
  const decode_result d =
      mdl.decode_greedy(cache, pre.logits, max_new_tokens, stop_tokens, dec ? dec->observer() : decode_observer{}, on_step);
  r.method = m ? m->name() : "full";
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  r.budget = m && m->name() != "full" ? m->spec().target.resolve(r.prompt_tokens) : r.prompt_tokens;
  r.tokens = d.tokens;
  r.answer = tok.decode(std::vector<int>(d.tokens.begin(), d.tokens.end()), true);
  const size_t row = cache.bytes_per_row();
  const size_t per_step = static_cast<size_t>(cfg.n_layer) * static_cast<size_t>(cfg.n_kv_head) * row;
  r.kv_full_bytes = static_cast<size_t>(r.prompt_tokens) * per_step;
  r.kv_allocated_bytes = cache.allocated_bytes();  // after decode: prompt + generated rows (decode cuts included)
  r.kv_percent_of_full = 100.0 * static_cast<double>(r.kv_bytes) / static_cast<double>(r.kv_full_bytes);
  r.prefill_s = pre.seconds;
  r.kvtrim_s = session ? session->seconds() : 0.0;
  r.decode_s = d.seconds;
  r.decode_tokens_per_s = d.steps > 0 ? static_cast<double>(d.steps) / d.seconds : 0.0;
  r.peak_rss_bytes = peak_rss_bytes();
  if (dc) {
    r.decode_budget = dc->policy().target;
    r.decode_interval = dc->policy().interval;
    r.decode_compressions = dec->compressions();
    r.decode_kvtrim_s = dec->seconds();
  }
  return r;
}

std::string to_json(const run_report& r) {
  nlohmann::json j = {{"method", r.method},
                      {"budget", r.budget},
                      {"prompt_tokens", r.prompt_tokens},
                      {"answer", r.answer},
                      {"generated_tokens", r.tokens.size()},
                      {"kv_bytes", r.kv_bytes},
                      {"kv_full_bytes", r.kv_full_bytes},
                      {"kv_allocated_bytes", r.kv_allocated_bytes},
                      {"kv_allocated_peak_bytes", r.kv_allocated_peak_bytes},
                      {"kv_percent_of_full", r.kv_percent_of_full},
                      {"prefill_s", r.prefill_s},
                      {"kvtrim_s", r.kvtrim_s},
                      {"decode_s", r.decode_s},
                      {"decode_tokens_per_s", r.decode_tokens_per_s},
                      {"peak_rss_bytes", r.peak_rss_bytes},
                      {"decode_budget", r.decode_budget},
                      {"decode_interval", r.decode_interval},
                      {"decode_compressions", r.decode_compressions},
                      {"decode_kvtrim_s", r.decode_kvtrim_s}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // a cut character -> U+FFFD
}

}  // namespace kvhost
