#pragma once
// The evaluation runner: prefill is exact and does not depend on the method (kvtrim compacts a
// layer only after that layer's attention), so each sample is prefilled ONCE with a hook that
// copies every layer's full K/V and window queries and keeps everything; each (method, budget)
// then builds its compressed kv_store from the copies, through the same compression_session the
// host uses inside prefill (CAKE's re-trims of earlier layers included), and decodes from the
// prefill's last logits. The result equals a separate run_generation per configuration.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/kv_store.hpp"
#include "engine/model.hpp"
#include "kvtrim/compose/method.hpp"

namespace kvhost {

// Everything a prefill leaves behind that any method needs: per layer the full-length K and V
// ([kv_head][n][head_dim], after RoPE) and the last `window` queries ([q_head][window][head_dim]).
struct prefill_capture {
  int n_layer = 0, n_head = 0, n_kv_head = 0, head_dim = 0;
  int64_t n = 0;       // prompt tokens
  int64_t window = 0;  // queries kept per head (the largest window any method may ask for)
  std::vector<std::vector<float>> k, v, q;  // [layer]
  // Only when captured for methods that read them (method_info::needs_*): per layer the
  // attention's column sums ([n_head][n]) and the pre-RoPE queries ([n][n_head * head_dim]).
  std::vector<std::vector<float>> attention_sums, prompt_queries;
  const model* mdl = nullptr;  // W_o and the RoPE frequencies, read in place
  std::vector<float> logits;                // last prompt position
  double prefill_s = 0;

  size_t full_kv_bytes() const {  // the uncompressed prompt K/V as the host stores it (float rows)
    return static_cast<size_t>(n) * static_cast<size_t>(n_layer) * static_cast<size_t>(n_kv_head) *
           static_cast<size_t>(head_dim) * 2 * sizeof(float);
  }
};

// Prefills `prompt` once, keeping full K/V of every layer and the last `window` queries
// (window clamped to [1, n]). Throws like model::prefill for a bad prompt.
// `attention_sums` / `prompt_queries` also keep what h2o / expected_attention read.
prefill_capture capture_prefill(const model& mdl, const std::vector<int32_t>& prompt, int64_t window,
                                bool attention_sums = false, bool prompt_queries = false);

// Fills `cache` with the prompt's K/V as `m` would have left it at the end of prefill (null or
// `full`: uncompressed). Returns the seconds spent inside kvtrim. Throws kvtrim::error when the
// method's window exceeds the captured window or the prompt.
double build_cache(const prefill_capture& cap, const kvtrim::method* m, kv_store& cache);

// Teacher forcing: feeds continuation[0..T-2] one token at a time and returns the log-softmax of
// each step's logits ([T-1][vocab]); row i is the model's distribution over continuation[i+1].
std::vector<std::vector<float>> teacher_forced_logprobs(const model& mdl, kv_store& cache,
                                                        const std::vector<int32_t>& continuation);

// One (method, budget) of one sample: what the eval JSONL records.
struct config_run {
  std::string method;
  int64_t budget = 0;           // B resolved for this prompt (n for full)
  std::vector<int32_t> tokens;  // generated
  size_t kv_bytes = 0, kv_full_bytes = 0, kv_allocated_bytes = 0;
  double kv_percent_of_full = 0;
  double kvtrim_s = 0, decode_s = 0;
};

// build_cache + greedy_decode; kv figures as run_generation reports them (prompt rows only).
config_run run_config(const model& mdl, const prefill_capture& cap, const kvtrim::method* m, int max_new_tokens,
                      const std::vector<int32_t>& stop_tokens);

}  // namespace kvhost
