// kvtrim profile import: published CompressKV / HeadKV artefacts -> one kvtrim profile.
#include <cstdio>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "kvtrim/profile/import.hpp"
#include "kvtrim/profile/profile.hpp"

namespace kvtools {

namespace {
const char* kHelp =
    "usage: kvtrim profile import [--compresskv-head-idx F] [--compresskv-layer-score F]\n"
    "                             [--headkv-scores F] --layers L --q-heads H --kv-heads K\n"
    "                             [--model NAME] --out P.json\n"
    "\n"
    "Combines the artefacts the CompressKV and HeadKV authors publish into one kvtrim profile\n"
    "(docs/PROFILE.md), validated against the model's layer and head counts:\n"
    "  --compresskv-head-idx F     <model>_head_idx.json, {\"<layer>\": [query-head ids, best first]}\n"
    "                              -> semantic-retrieval head scores (score = q_heads - rank)\n"
    "  --compresskv-layer-score F  <model>_layer_score.jsonl, {\"<dataset>\": [L floats], ...,\n"
    "                              \"avg_score\": [L floats]} -> layer eviction-error weights\n"
    "  --headkv-scores F           <model>_retrieval_reasoning_heads.json, {\"<l>-<h>\": [trials]}\n"
    "                              -> retrieval-reasoning head scores (mean of the trials)\n"
    "  --layers L --q-heads H --kv-heads K   the model's shape (required)\n"
    "  --model NAME                 recorded in the profile\n"
    "  --out P.json                 written whole or not at all\n";
}  // namespace

int cmd_profile(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[2]) != "import" && std::string(argv[2]).rfind("--", 0) != 0)
    throw usage_error("unknown subcommand '" + std::string(argv[2]) + "' (only: import)");
  const bool has_sub = argc >= 3 && std::string(argv[2]) == "import";
  args a(argc, argv, has_sub ? 3 : 2,
         {"compresskv-head-idx", "compresskv-layer-score", "headkv-scores", "layers", "q-heads",
          "kv-heads", "model", "out"},
         {});
  if (a.help() || !has_sub) {
    std::fputs(kHelp, a.help() ? stdout : stderr);
    return a.help() ? 0 : 2;
  }
  if (!a.positional().empty()) throw usage_error("unexpected argument '" + a.positional()[0] + "'");
  kvtrim::import_sources src;
  src.compresskv_head_idx = a.str("compresskv-head-idx");
  src.compresskv_layer_score = a.str("compresskv-layer-score");
  src.headkv_scores = a.str("headkv-scores");
  const std::string out = a.required("out");
  const int layers = static_cast<int>(args::parse_int_in("layers", a.required("layers"), 1, kvtrim::max_shape_heads));
  const int q_heads = static_cast<int>(args::parse_int_in("q-heads", a.required("q-heads"), 1, kvtrim::max_shape_heads));
  const int kv_heads = static_cast<int>(args::parse_int_in("kv-heads", a.required("kv-heads"), 1, kvtrim::max_shape_heads));
  const kvtrim::profile p = kvtrim::import_profile(src, layers, q_heads, kv_heads, a.str("model"));
  kvtrim::save_profile(p, out);
  std::printf("wrote %s: %d layers, %d query heads, %d KV heads;%s%s%s\n", out.c_str(), layers,
              q_heads, kv_heads, p.has_semantic_retrieval() ? " semantic-retrieval heads" : "",
              p.has_retrieval_reasoning() ? " retrieval-reasoning heads" : "",
              p.has_layer_error() ? " layer eviction errors" : "");
  return 0;
}

}  // namespace kvtools
