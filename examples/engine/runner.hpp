#pragma once
// One generation with the numbers every kvtrim run reports: prompt tokens, retained KV bytes and
// % of full, peak resident memory, prefill time, time inside kvtrim, decode tokens/s.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "kvtrim/compose/method.hpp"
#include "kvtrim/decode/decode_compressor.hpp"

namespace kvhost {

struct run_report {
  std::string method;
  int64_t budget = 0;  // B in tokens (the prompt length for `full`)
  int64_t prompt_tokens = 0;
  std::vector<int32_t> tokens;  // generated
  std::string answer;
  size_t kv_bytes = 0;       // retained prompt K/V after prefill (float rows)
  size_t kv_full_bytes = 0;  // the same prompt uncompressed
  size_t kv_allocated_bytes = 0;  // what the store holds after decode, allocation granules included
  size_t kv_allocated_peak_bytes = 0;  // the most it held after any step (before that step's compression)
  double kv_percent_of_full = 0;
  double prefill_s = 0, kvtrim_s = 0, decode_s = 0, decode_tokens_per_s = 0;
  size_t peak_rss_bytes = 0;  // of this run (the peak is reset before it starts)
  // Decode-time compression (0 when off): its policy, layer compression steps, seconds inside kvtrim.
  int64_t decode_budget = 0, decode_interval = 0, decode_compressions = 0;
  double decode_kvtrim_s = 0;
};

// Prefill `prompt` (compressed by `m` when given) and decode greedily; with `dc`, the cache is
// also kept at dc's target during decode (decode_session).
run_report run_generation(const model& mdl, const tokenizer& tok, const std::vector<int32_t>& prompt,
                          const kvtrim::method* m, int max_new_tokens,
                          const std::vector<int32_t>& stop_tokens, const kvtrim::decode_compressor* dc = nullptr);

// One JSON object with the fields of run_report (tokens omitted).
std::string to_json(const run_report& r);

// Resets the process's peak resident memory to its current value (Linux /proc/self/clear_refs),
// so each run reports its own peak; returns false where the kernel doesn't allow it.
bool reset_peak_rss();

}  // namespace kvhost
