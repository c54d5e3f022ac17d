#pragma once
// Shared by the libFuzzer targets of tests/fuzz: the input as a file (the host's readers take
// paths) and a tokenizer (the real model's when it is cached, else a small byte-level one).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "engine/gguf.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"

namespace kvfuzz {

// One scratch file per process, rewritten for every input (in /dev/shm when it exists).
inline const std::string& scratch_path(const char* tag) {
  static const std::string p = [tag] {
    const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/kvtrim-fuzz-" + tag + "-" + std::to_string(::getpid());
  }();
  return p;
}

inline const std::string& write_input(const char* tag, const uint8_t* data, size_t size) {
  const std::string& p = scratch_path(tag);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return p;
}

// GPT-2's byte -> printable code point map, as UTF-8.
inline std::string byte_symbol(int b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A small byte-level BPE tokenizer: every byte, a few merges, two control tokens (ChatML) and
// one user-defined token.
inline kvhost::tokenizer synthetic_tokenizer() {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_symbol(b));
  const std::vector<std::string> merges = {"Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "1 2"};
  for (const auto& m : merges) tokens.push_back(m.substr(0, m.find(' ')) + m.substr(m.find(' ') + 1));
  std::vector<int> types(tokens.size(), kvhost::token_type_normal);
  for (const char* c : {"<|im_start|>", "<|im_end|>"}) {
    tokens.push_back(c);
    types.push_back(kvhost::token_type_control);
  }
  tokens.push_back("<tool>");
  types.push_back(kvhost::token_type_user_defined);
  kvhost::tokenizer_options o;
  o.eos_id = static_cast<int>(tokens.size()) - 2;
  return kvhost::tokenizer(std::move(tokens), std::move(types), merges, o);
}

// KVTRIM_FUZZ_MODEL (or the cached default model) when readable: its real vocabulary.
inline const kvhost::tokenizer& fuzz_tokenizer() {
  static const std::unique_ptr<kvhost::tokenizer> t = [] {
    const char* env = std::getenv("KVTRIM_FUZZ_MODEL");
    const std::string path = env ? env : kvhost::default_model_path();
    if (!path.empty() && std::ifstream(path)) {
      try {
        const kvhost::gguf_file f(path);
        return std::make_unique<kvhost::tokenizer>(kvhost::tokenizer::from_gguf(f));
      } catch (const std::exception&) {
      }
    }
    return std::make_unique<kvhost::tokenizer>(synthetic_tokenizer());
  }();
  return *t;
}

}  // namespace kvfuzz
