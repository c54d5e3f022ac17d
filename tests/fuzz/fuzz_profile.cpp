// libFuzzer target: the profile reader (JSON parser, profile_from_json, validation) and, for a
// profile it accepts, the writer (to_json + dump) and a second read of what it wrote.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kvtrim/profile/profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  kvtrim::profile p;
  try {
    p = kvtrim::profile_from_json(kvtrim::json::parse(text, "fuzz.json"), "fuzz.json");
  } catch (const kvtrim::error&) {
    return 0;
  }
  // Accepted: it must write, and read back to the same profile.
  const std::string out = kvtrim::json::dump(kvtrim::to_json(p), 2);
  const kvtrim::profile q = kvtrim::profile_from_json(kvtrim::json::parse(out, "rewritten"), "rewritten");
  if (q.layers != p.layers || q.q_heads != p.q_heads || q.semantic_retrieval != p.semantic_retrieval ||
      q.retrieval_reasoning != p.retrieval_reasoning || q.layer_error != p.layer_error)
    std::abort();
  return 0;
}
