#include "engine/runner.hpp"

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
                          const std::vector<int32_t>& stop_tokens) {
  reset_peak_rss();
  const model_config& cfg = mdl.config();
  kv_store cache(cfg.n_layer, cfg.n_kv_head, cfg.head_dim);
  std::unique_ptr<compression_session> session;
  int window = 8;
  if (m) {
    session = std::make_unique<compression_session>(*m, cache, static_cast<int64_t>(prompt.size()));
    window = session->window();
  }
  const generate_result g = mdl.generate(prompt, cache, max_new_tokens, stop_tokens,
                                         session ? session->hook() : prefill_hook{}, window);
  run_report r;
  r.method = m ? m->name() : "full";
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  r.budget = m && m->name() != "full" ? m->spec().target.resolve(r.prompt_tokens) : r.prompt_tokens;
  r.tokens = g.tokens;
  r.answer = tok.decode(std::vector<int>(g.tokens.begin(), g.tokens.end()), true);
  const size_t row = cache.bytes_per_row();
  const size_t per_step = static_cast<size_t>(cfg.n_layer) * static_cast<size_t>(cfg.n_kv_head) * row;
  r.kv_bytes = cache.retained_bytes() - static_cast<size_t>(g.decode_steps) * per_step;
  r.kv_full_bytes = static_cast<size_t>(r.prompt_tokens) * per_step;
  r.kv_allocated_bytes = cache.allocated_bytes();  // after decode: prompt + generated rows
  r.kv_percent_of_full = 100.0 * static_cast<double>(r.kv_bytes) / static_cast<double>(r.kv_full_bytes);
  r.prefill_s = g.prefill.seconds;
  r.kvtrim_s = session ? session->seconds() : 0.0;
  r.decode_s = g.decode_seconds;
  r.decode_tokens_per_s = g.decode_tokens_per_second;
  r.peak_rss_bytes = peak_rss_bytes();
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
                      {"kv_percent_of_full", r.kv_percent_of_full},
                      {"prefill_s", r.prefill_s},
                      {"kvtrim_s", r.kvtrim_s},
                      {"decode_s", r.decode_s},
                      {"decode_tokens_per_s", r.decode_tokens_per_s},
                      {"peak_rss_bytes", r.peak_rss_bytes}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // a cut character -> U+FFFD
}

}  // namespace kvhost
