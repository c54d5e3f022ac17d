// kvtrim budgets: what a method keeps per layer and per KV head for a prompt of N tokens.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "kvtrim/compose/method.hpp"
#include "kvtrim/profile/profile.hpp"
#include "method_args.hpp"

namespace kvtools {

namespace {
const char* kHelp =
    "usage: kvtrim budgets --method M (--budget B | --ratio R) [--profile P.json]\n"
    "                      [--layers L --q-heads H --kv-heads K] [--prompt-len N] [--json]\n"
    "                      [method parameters]\n"
    "\n"
    "Prints the retained tokens (observation window included) of every layer and KV head.\n"
    "  --profile P.json   the model's profile; gives the shape, and the scores compresskv and\n"
    "                     headkv need. Without it, give --layers, --q-heads and --kv-heads.\n"
    "  --prompt-len N     prompt length (default: long enough that no budget is clipped)\n"
    "  --json             one JSON object: {\"layers\": [per layer], \"heads\": [[per KV head]]}\n"
    "                     (layers = mean over the layer's heads, rounded down when uneven)\n"
    "Methods whose split depends on the prompt's attention (adakv, cake) are shown with neutral\n"
    "scores: equal heads (adakv) and equal layer preferences (cake).\n";
}  // namespace

int cmd_budgets(int argc, char** argv) {
  auto valued = method_options();
  valued.insert({"profile", "layers", "q-heads", "kv-heads", "prompt-len"});
  args a(argc, argv, 2, valued, {"json"});
  if (a.help()) {
    std::fputs(kHelp, stdout);
    std::fputs(method_options_help().c_str(), stdout);
    return 0;
  }
  std::unique_ptr<kvtrim::profile> prof;
  kvtrim::model_shape shape;
  if (a.has("profile")) {
    prof = std::make_unique<kvtrim::profile>(kvtrim::load_profile(a.str("profile")));
    shape = {prof->layers, prof->q_heads, prof->kv_heads, 1, 0};
  }
  shape.layers = a.int_in("layers", shape.layers, 1, kvtrim::max_shape_heads);
  shape.q_heads = a.int_in("q-heads", shape.q_heads, 1, kvtrim::max_shape_heads);
  shape.kv_heads = a.int_in("kv-heads", shape.kv_heads, 1, kvtrim::max_shape_heads);
  shape.head_dim = 1;
  if (shape.layers == 0) throw usage_error("give --profile or --layers/--q-heads/--kv-heads");
  kvtrim::method_spec cfg = parse_method_spec(a);
  cfg.prof = prof.get();
  if (prof) prof->check_matches(shape);
  const kvtrim::method m = kvtrim::make_method(cfg, shape);
  const kvtrim::index_t b = cfg.target.is_ratio() ? 0 : cfg.target.token_value();
  kvtrim::index_t n = a.integer_in("prompt-len", 0, 1, k_max_tokens);
  if (n == 0) {
    if (cfg.target.is_ratio()) throw usage_error("--ratio needs --prompt-len");
    // Longer than any allocator can give one head: HeadKV's pool can reach L*H*B.
    n = std::max<kvtrim::index_t>(8 * b, b * shape.layers * shape.kv_heads + cfg.window);
  }
  const auto heads = m.planned_budgets(n);
  std::string layers_json, heads_json;
  for (size_t l = 0; l < heads.size(); ++l) {
    kvtrim::index_t sum = 0;
    std::string row;
    for (auto x : heads[l]) {
      sum += x;
      row += (row.empty() ? "" : ", ") + std::to_string(x);
    }
    const kvtrim::index_t layer = sum / static_cast<kvtrim::index_t>(heads[l].size());
    layers_json += (l ? ", " : "") + std::to_string(layer);
    heads_json += std::string(l ? ", " : "") + "[" + row + "]";
    if (!a.flag("json")) std::printf("layer %2zu: %6lld  heads: %s\n", l, static_cast<long long>(layer), row.c_str());
  }
  if (a.flag("json"))
    std::printf("{\"method\": \"%s\", \"budget\": %lld, \"prompt_len\": %lld, \"layers\": [%s], \"heads\": [%s]}\n",
                cfg.name.c_str(), static_cast<long long>(cfg.target.resolve(n)),
                static_cast<long long>(n), layers_json.c_str(), heads_json.c_str());
  return 0;
}

}  // namespace kvtools
