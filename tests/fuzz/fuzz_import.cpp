// libFuzzer target: both importers of published artefacts, CompressKV (head_idx.json,
// layer_score.jsonl) and HeadKV (retrieval_reasoning_heads.json). The first two bytes choose the
// importer and the shape (layers, q_heads); the rest is the file.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kvtrim/profile/import.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int which = data[0] % 3;
  const int layers = 1 + (data[1] & 0x0f), q_heads = 1 + (data[1] >> 4);
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  try {
    if (which == 0) {
      const auto s = kvtrim::parse_compresskv_head_idx(text, layers, q_heads, "head_idx");
      if (s.size() != static_cast<size_t>(layers)) __builtin_trap();
    } else if (which == 1) {
      const auto w = kvtrim::parse_compresskv_layer_score(text, layers, "layer_score");
      if (w.size() != static_cast<size_t>(layers)) __builtin_trap();
      kvtrim::profile p;  // what import_profile then does with the weights
      p.layers = layers;
      p.q_heads = q_heads;
      p.kv_heads = 1;
      p.layer_error = w;
      p.validate();
    } else {
      const auto s = kvtrim::parse_head_trial_scores(text, layers, q_heads, "headkv");
      if (s.size() != static_cast<size_t>(layers)) __builtin_trap();
    }
  } catch (const kvtrim::error&) {
  }
  return 0;
}
