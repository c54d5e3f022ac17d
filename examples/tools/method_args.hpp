#pragma once
// The method options every tool shares (--method, --budget/--ratio, --window, ...).
#include <cstdint>
#include <limits>
#include <set>
#include <string>

#include "args.hpp"
#include "kvtrim/compose/method.hpp"

namespace kvtools {

inline std::set<std::string> method_options() {
  return {"method", "budget", "ratio", "window", "pooling", "kernel", "beta", "alpha",
          "retrieval-heads", "min-layer-tokens", "sinks", "seed", "gamma", "tau1", "tau2"};
}

inline const char* method_options_help() {
  return "\nmethod parameters:\n"
         "  --method M           full, random, streaming, snapkv, pyramidkv, adakv, cake, headkv,\n"
         "                       compresskv, compresskv-uniform (ablation), adakv-compresskv\n"
         "  --budget B           average retained tokens per KV head per layer, window included\n"
         "  --ratio R            or the fraction of the prompt kept, in (0, 1]\n"
         "  --window W           observation window (default 8; always kept)\n"
         "  --pooling avg|max|none, --kernel K   window-score pooling (default max, 7)\n"
         "  --beta X             pyramidkv (default 20) or headkv (default 1.01)\n"
         "  --alpha A            adakv floor (default 0.2)\n"
         "  --retrieval-heads K  compresskv heads per layer (default 4)\n"
         "  --min-layer-tokens M compresskv minimum layer budget (default 32)\n"
         "  --sinks S            streaming sink tokens (default 4)\n"
         "  --seed S             random\n"
         "  --gamma G --tau1 T --tau2 T   cake (defaults 200, 1, 1)\n";
}

// def_method / def_budget: defaults for tools that have them (0 / "": the option is required).
inline kvtrim::method_config parse_method_config(const args& a, const std::string& def_method = "",
                                                 long long def_budget = 0) {
  kvtrim::method_config c;
  c.name = def_method.empty() ? a.required("method") : a.str("method", def_method);
  if (a.has("budget") && a.has("ratio")) throw usage_error("give --budget or --ratio, not both");
  if (a.has("ratio"))
    c.target = kvtrim::budget::ratio(a.number("ratio", 0));
  else if (a.has("budget"))
    c.target = kvtrim::budget::tokens(a.integer_in("budget", 0, 0, k_max_tokens));
  else if (def_budget > 0)
    c.target = kvtrim::budget::tokens(def_budget);
  else if (c.name != "full")
    throw usage_error("--budget or --ratio is required");
  c.window = a.integer_in("window", c.window, 1, k_max_tokens);
  const std::string pool = a.str("pooling", kvtrim::to_string(c.pool));
  if (pool == "avg") c.pool = kvtrim::pooling::avg;
  else if (pool == "max") c.pool = kvtrim::pooling::max;
  else if (pool == "none") c.pool = kvtrim::pooling::none;
  else throw usage_error("--pooling: '" + pool + "' is not avg, max or none");
  c.kernel = a.int_in("kernel", c.kernel);
  if (a.has("beta")) {
    c.pyramid_beta = a.number("beta", c.pyramid_beta);
    c.headkv_beta = a.number("beta", c.headkv_beta);
  }
  c.adakv_alpha = a.number("alpha", c.adakv_alpha);
  c.retrieval_heads = a.int_in("retrieval-heads", c.retrieval_heads);
  c.min_layer_tokens = a.integer_in("min-layer-tokens", c.min_layer_tokens, 0, k_max_tokens);
  c.sinks = a.integer_in("sinks", c.sinks, 0, k_max_tokens);
  c.seed = static_cast<std::uint64_t>(a.integer_in("seed", 0, 0, std::numeric_limits<long long>::max()));
  c.cake_gamma = a.number("gamma", c.cake_gamma);
  c.cake_tau1 = a.number("tau1", c.cake_tau1);
  c.cake_tau2 = a.number("tau2", c.cake_tau2);
  return c;
}

}  // namespace kvtools
