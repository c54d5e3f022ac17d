// kvtrim report DIR: re-renders an eval directory's summary.csv, summary.md and plots from its
// samples.jsonl (after a run was interrupted, merged or extended).
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "args.hpp"
#include "commands.hpp"
#include "eval/eval_report.hpp"

namespace kvtools {

int cmd_report(int argc, char** argv) {
  args a(argc, argv, 2, {"combined"}, {"quiet"});
  if (a.help()) {
    std::fputs(
        "usage: kvtrim report DIR [DIR ...] [--combined OUT] [--quiet]\n\n"
        "Re-renders DIR/summary.csv (task, method, budget, kv_percent_of_full, score, n), DIR/summary.md\n"
        "and DIR/plots/ (needle heatmaps per method and budget, score vs % of KV kept per task; SVG,\n"
        "and PNG where rsvg-convert is installed) from DIR/samples.jsonl, and prints the markdown.\n"
        "Each task's table is repeated over the prompts the full cache gets right (score >= 50) and\n"
        "over those it gets wrong, with their counts. summary.md ends with comparisons at equal bytes\n"
        "(CompressKV, then HeadKV, against every baseline run; % of the full cache; each method\n"
        "against the full cache on its correct / wrong prompts; the ablation, from SnapKV and from the\n"
        "paper's snapkv-paper; HeadKV against Ada-KV; lowest KL). Every comparison is paired over prompts (task|id): mean difference, its 95 %\n"
        "bootstrap interval over prompts (seed 0, 10000 resamples), n; win / loss only where the\n"
        "interval excludes 0, otherwise tie. DIR/comparisons.json holds the same comparisons as data.\n"
        "  --combined OUT   also write OUT/comparison.md and OUT/comparisons.json over the records of\n"
        "                   every DIR given\n",
        stdout);
    return 0;
  }
  if (a.positional().empty()) throw usage_error("give at least one eval DIR (see --help)");
  for (const auto& dir : a.positional()) {
    const auto written = kvhost::render_report(dir);
    if (!a.flag("quiet"))
      for (const auto& p : written) std::fprintf(stderr, "wrote %s\n", p.c_str());
    if (a.positional().size() == 1 && !a.has("combined")) {
      std::ifstream md(dir + "/summary.md");
      std::printf("%s", std::string(std::istreambuf_iterator<char>(md), {}).c_str());
    }
  }
  if (a.has("combined")) {
    const std::string p = kvhost::render_comparison(a.positional(), a.str("combined"));
    std::ifstream md(p);
    std::printf("%s", std::string(std::istreambuf_iterator<char>(md), {}).c_str());
  }
  return 0;
}

}  // namespace kvtools
