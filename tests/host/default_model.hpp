#pragma once
// The default model, its tokenizer and stop tokens, loaded once per test process (each gtest
// case runs in its own process under ctest, so "once" is per test). `mdl` is null when the file
// is missing; tests then fail with how to fetch it.
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"

namespace kvtest {

struct default_model {
  std::unique_ptr<kvhost::model> mdl;
  std::unique_ptr<kvhost::tokenizer> tok;
  std::vector<int32_t> stops;
};

inline const default_model& load_default_model() {
  static const default_model m = [] {
    default_model d;
    const std::string path = kvhost::default_model_path();
    if (!std::ifstream(path)) return d;
    const kvhost::gguf_file f(path);
    d.mdl = std::make_unique<kvhost::model>(f);
    d.tok = std::make_unique<kvhost::tokenizer>(kvhost::tokenizer::from_gguf(f));
    d.stops = kvhost::default_stop_tokens(f);
    return d;
  }();
  return m;
}

inline const char* kMissingModel = "model missing: run scripts/fetch_model.sh (or set KVTRIM_MODEL)";

}  // namespace kvtest
