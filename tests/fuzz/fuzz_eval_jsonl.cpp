// libFuzzer target: the eval JSONL reader (kvtrim eval jsonl --data F, RULER's format) with the
// largest window of the default methods, 8: a sample it returns must be usable by every method.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "fuzz_common.hpp"
#include "eval/eval_tasks.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kvhost::tokenizer& tok = kvfuzz::fuzz_tokenizer();
  const std::string& path = kvfuzz::write_input("jsonl", data, size);
  try {
    const auto samples = kvhost::jsonl_samples(tok, path, 256, 16, "jsonl", 8);
    for (const auto& s : samples) {
      if (s.prompt.size() < 8 || s.prompt.size() > 256 || s.references.empty()) __builtin_trap();
      (void)kvhost::score_answer(s, "an answer");
    }
  } catch (const std::runtime_error&) {
  } catch (const kvhost::tokenizer_error&) {
  }
  return 0;
}
