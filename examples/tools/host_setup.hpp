#pragma once
// What generate and demo share: the model, its tokenizer and stop tokens, and its profile.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/gguf.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "kvtrim/profile/profile.hpp"

namespace kvtools {

struct loaded_host {
  std::string path;
  std::unique_ptr<kvhost::model> mdl;
  std::unique_ptr<kvhost::tokenizer> tok;
  std::vector<int32_t> stops;
  std::unique_ptr<kvtrim::profile> prof;  // null when none was given or found
  std::string profile_path;
};

// The profile shipped for the default model, if this build's source tree or install has it.
inline std::string default_profile_for(const std::string& model_path) {
  if (std::filesystem::path(model_path).filename() != "SmolLM2-135M-Instruct.Q4_1.gguf") return "";
  for (const std::string& dir : {std::string(KVTRIM_SOURCE_DIR) + "/profiles",
                                std::string("/usr/local/share/kvtrim/profiles")}) {
    const std::string p = dir + "/smollm2-135m-instruct.json";
    if (std::filesystem::exists(p)) return p;
  }
  return "";
}

inline loaded_host load_host(const std::string& model_path, const std::string& profile_path,
                             bool quiet) {
  loaded_host h;
  h.path = model_path.empty() ? kvhost::default_model_path() : model_path;
  if (!std::filesystem::exists(h.path))
    throw std::runtime_error("model file " + h.path + " not found (run scripts/fetch_model.sh, or pass --model)");
  if (!quiet) std::fprintf(stderr, "loading %s ...\n", h.path.c_str());
  const kvhost::gguf_file f(h.path);
  h.mdl = std::make_unique<kvhost::model>(f);
  h.tok = std::make_unique<kvhost::tokenizer>(kvhost::tokenizer::from_gguf(f));
  h.stops = kvhost::default_stop_tokens(f);
  h.profile_path = profile_path.empty() ? default_profile_for(h.path) : profile_path;
  if (!h.profile_path.empty()) {
    h.prof = std::make_unique<kvtrim::profile>(kvtrim::load_profile(h.profile_path));
    const auto& c = h.mdl->config();
    h.prof->check_matches(kvtrim::model_shape{c.n_layer, c.n_head, c.n_kv_head, c.head_dim, c.n_ctx});
  }
  return h;
}

}  // namespace kvtools
