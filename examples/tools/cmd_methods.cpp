// kvtrim methods: the method registry, for people (a table), docs (--markdown) and scripts (--json).
#include <cstdio>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "kvtrim/compose/registry.hpp"
#include <nlohmann/json.hpp>

namespace kvtools {

namespace {
const char* kHelp =
    "usage: kvtrim methods [--json | --markdown]\n"
    "\n"
    "Every registered method: its roles, paper, parameters (defaults, ranges) and profile needs.\n"
    "  --json       one JSON object {\"methods\": [...]} (what scripts and bindings read)\n"
    "  --markdown   the methods table of README.md, generated from the registry\n";

nlohmann::json to_json(const kvtrim::method_info& m) {
  nlohmann::json ps = nlohmann::json::array();
  for (const auto& p : m.params) {
    nlohmann::json j = {{"key", p.key}, {"kind", kvtrim::to_string(p.kind)},
                        {"default", p.default_value}, {"help", p.help}};
    if (p.kind == kvtrim::param_kind::choice) j["choices"] = p.choices;
    if (p.kind == kvtrim::param_kind::integer || p.kind == kvtrim::param_kind::real) {
      j["min"] = p.min;
      j["max"] = p.max;
    }
    if (p.odd) j["odd"] = true;
    ps.push_back(j);
  }
  return {{"name", m.name},
          {"paper", m.paper},
          {"head_selector", m.head_selector},
          {"token_scorer", m.token_scorer},
          {"budget_allocator", m.budget_allocator},
          {"params", ps},
          {"needs_profile", m.needs_profile()},
          {"needs", {{"semantic_retrieval", m.needs_semantic_retrieval},
                     {"retrieval_reasoning", m.needs_retrieval_reasoning},
                     {"layer_error", m.needs_layer_error}}},
          {"layer_inputs", {{"out_proj", m.needs_out_proj},
                            {"attention_sums", m.needs_attention_sums},
                            {"prompt_queries", m.needs_prompt_queries}}},
          {"cascades", m.cascades},
          {"evaluated_by_default", m.evaluated_by_default}};
}
}  // namespace

int cmd_methods(int argc, char** argv) {
  args a(argc, argv, 2, {}, {"json", "markdown"});
  if (a.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (a.flag("json")) {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& m : kvtrim::method_registry()) all.push_back(to_json(m));
    std::printf("%s\n", nlohmann::json{{"methods", all}}.dump(2).c_str());
    return 0;
  }
  if (a.flag("markdown")) {
    std::printf("| name | head selector | token scorer | budget allocator | paper |\n");
    std::printf("| --- | --- | --- | --- | --- |\n");
    for (const auto& m : kvtrim::method_registry())
      std::printf("| `%s` | %s | %s | %s | %s |\n", m.name.c_str(), m.head_selector.c_str(),
                  m.token_scorer.c_str(), m.budget_allocator.c_str(), m.paper.c_str());
    return 0;
  }
  for (const auto& m : kvtrim::method_registry()) {
    std::printf("%-20s %s\n", m.name.c_str(), m.paper.c_str());
    std::printf("%-20s roles: %s | %s | %s%s\n", "", m.head_selector.c_str(), m.token_scorer.c_str(),
                m.budget_allocator.c_str(), m.needs_profile() ? "  [needs a profile]" : "");
    for (const auto& p : m.params)
      std::printf("%-20s   %s:%s = %s  (%s)\n", "", m.name.c_str(), p.key.c_str(),
                  p.default_value.c_str(), p.help.c_str());
  }
  return 0;
}

}  // namespace kvtools
