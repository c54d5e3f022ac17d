#pragma once
// The method options every tool shares. Everything about a method comes from the registry
// (kvtrim/compose/registry.hpp): its name, its parameters and their defaults and ranges.
//   --method M / --methods A,B   registered names, each optionally ending in +rerotate
//   --budget B | --ratio R       B tokens per KV head per layer on average (window included)
//   --window W                   the observation window every method keeps
//   --pooling P, --kernel K      window-score pooling of every method that has it
//   --param M:KEY=VALUE[,...]    any method's own parameter, namespaced by the method
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "args.hpp"
#include "kvtrim/compose/method.hpp"

namespace kvtools {

// A method as the tools name it: a registered name, or one ending in "+rerotate" for the same
// method with its kept keys re-rotated to contiguous positions (method_spec::rerotate_keys), so
// that `--methods snapkv,snapkv+rerotate` compares the two on one prefill.
inline constexpr const char k_rerotate_suffix[] = "+rerotate";
inline bool rerotates(const std::string& label) {
  const size_t n = sizeof k_rerotate_suffix - 1;
  return label.size() > n && label.compare(label.size() - n, n, k_rerotate_suffix) == 0;
}
inline std::string registry_name(const std::string& label) {
  return rerotates(label) ? label.substr(0, label.size() - (sizeof k_rerotate_suffix - 1)) : label;
}
inline const kvtrim::method_info& method_info_of(const std::string& label) {
  return kvtrim::find_method(registry_name(label));  // unknown: one line listing the accepted names
}

inline std::set<std::string> method_options() {
  return {"method", "budget", "ratio", "window", "pooling", "kernel", "param"};
}

// The registry as help text: every method with its parameters and defaults.
inline std::string method_options_help() {
  std::string s =
      "\nmethod options:\n"
      "  --method M             one of the methods below; M+rerotate: the same method with\n"
      "                         each head's kept keys re-rotated to contiguous positions\n"
      "                         ending at the prompt's end (n-len..n-1)\n"
      "  --budget B             average retained tokens per KV head per layer, window included\n"
      "  --ratio R              or the fraction of the prompt kept, in (0, 1]\n"
      "  --window W             observation window, always kept (default 8)\n"
      "  --pooling avg|max|none, --kernel K\n"
      "                         window-score pooling of every method that pools (default: as\n"
      "                         its release: avg 5 for compresskv, compresskv-uniform,\n"
      "                         compresskv-chunk, cake, snapkv-paper and pyramidkv-paper;\n"
      "                         max 7 for the others)\n"
      "  --param M:KEY=VALUE[,M:KEY=VALUE...]\n"
      "                         a method's own parameter, e.g. --param pyramidkv:beta=10\n"
      "\nmethods (parameters with defaults):\n";
  for (const auto& m : kvtrim::method_registry()) {
    std::string line = "  " + m.name;
    line.resize(std::max<size_t>(line.size() + 1, 22), ' ');
    std::string ps;
    for (const auto& p : m.params)
      if (p.key != "pooling" && p.key != "kernel")
        ps += (ps.empty() ? "" : ", ") + p.key + "=" + p.default_value;
    s += line + m.paper + (ps.empty() ? "" : "; " + ps) +
         (m.needs_profile() ? " [needs --profile]" : "") + "\n";
  }
  return s;
}

// --param entries, checked for form and for naming a method that is being built.
inline std::vector<std::pair<std::string, std::string>> method_param_entries(
    const args& a, const std::vector<std::string>& methods) {
  std::vector<std::pair<std::string, std::string>> out;  // (method, "key=value")
  for (const std::string& e : a.list("param")) {
    const auto colon = e.find(':'), eq = e.find('=');
    if (colon == std::string::npos || eq == std::string::npos || eq < colon || colon == 0 ||
        eq == colon + 1)
      throw usage_error("--param: '" + e + "' is not METHOD:KEY=VALUE");
    const std::string m = e.substr(0, colon);
    kvtrim::find_method(m);  // unknown names: one line listing the accepted ones
    if (std::none_of(methods.begin(), methods.end(), [&](const std::string& x) { return registry_name(x) == m; }))
      throw usage_error("--param: '" + e + "' names method '" + m + "', which is not being run");
    out.emplace_back(m, e.substr(colon + 1));
  }
  return out;
}

// The spec of method `label` from the shared options: defaults, then --pooling/--kernel where
// the method pools, then its own --param entries (M+rerotate takes M's).
inline kvtrim::method_spec method_spec_for(const args& a, const std::string& label,
                                           const std::vector<std::pair<std::string, std::string>>& entries) {
  const kvtrim::method_info& info = method_info_of(label);
  kvtrim::method_spec c;
  c.name = info.name;
  c.rerotate_keys = rerotates(label);
  c.window = a.integer_in("window", c.window, 1, k_max_tokens);
  if (info.param("pooling") && a.has("pooling")) c.params["pooling"] = a.str("pooling");
  if (info.param("kernel") && a.has("kernel")) c.params["kernel"] = a.str("kernel");
  for (const auto& [m, kv] : entries)
    if (m == c.name) c.params[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
  return c;
}

// The budget options: def_budget is the default for tools that have one (0: the option is
// required unless the method is full).
inline void parse_budget(const args& a, kvtrim::method_spec& c, long long def_budget = 0) {
  if (a.has("budget") && a.has("ratio")) throw usage_error("give --budget or --ratio, not both");
  if (a.has("ratio"))
    c.target = kvtrim::budget::ratio(a.number("ratio", 0));
  else if (a.has("budget"))
    c.target = kvtrim::budget::tokens(a.integer_in("budget", 0, 0, k_max_tokens));
  else if (def_budget > 0)
    c.target = kvtrim::budget::tokens(def_budget);
  else if (c.name != "full")
    throw usage_error("--budget or --ratio is required");
}

// One method from --method (or def_method), its budget and parameters.
inline kvtrim::method_spec parse_method_spec(const args& a, const std::string& def_method = "",
                                             long long def_budget = 0) {
  const std::string name = def_method.empty() ? a.required("method") : a.str("method", def_method);
  kvtrim::method_spec c = method_spec_for(a, name, method_param_entries(a, {name}));
  parse_budget(a, c, def_budget);
  return c;
}

}  // namespace kvtools
