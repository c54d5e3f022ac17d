#pragma once
// Tables and plots of an eval directory, rendered from its per-sample records (samples.jsonl):
// summary.csv, summary.md, and SVG plots (PNG beside them when rsvg-convert is installed).
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvhost {

// Every record of DIR/samples.jsonl; a line that is not JSON (an interrupted write) is skipped, a
// JSON line that is not a record (record_problem) throws std::runtime_error naming file and line.
std::vector<nlohmann::json> read_records(const std::string& path);

// Empty when `r` is a record summarize() can use (object; task, method, budget strings;
// kv_percent_of_full, score numbers; fidelity: kl, ppl; length, depth numbers if present);
// otherwise what is wrong with it.
std::string record_problem(const nlohmann::json& r);


struct summary_row {
  std::string task, method, budget;  // budget: "16", "r0.05" or "full"
  double kv_percent_of_full = 0;     // mean over samples
  double score = 0;                  // mean, 0-100 (fidelity_kl: nats, fidelity_ppl: perplexity)
  int n = 0;
};

// One row per task x method x budget; fidelity records give fidelity_top1, fidelity_kl and
// fidelity_ppl rows. Methods in method_names() order, budgets ascending, full last.
std::vector<summary_row> summarize(const std::vector<nlohmann::json>& records);

// Writes DIR/summary.csv, DIR/summary.md, DIR/comparisons.json (comparison_markdown's
// comparisons as data) and DIR/plots/*.svg (and *.png where rsvg-convert exists). Returns the
// paths written. Each file is written whole (temp file + rename).
std::vector<std::string> render_report(const std::string& dir);

// The task families the goals speak of: ruler_* -> ruler, leval_* -> leval, the rest unchanged.
std::string task_family(const std::string& task);

// Markdown comparing methods at equal bytes (same budget) per task family: CompressKV against
// SnapKV, PyramidKV and StreamingLLM; each method as % of the full cache's score; each method
// against the full cache over the prompts the full cache gets right and, apart, those it gets
// wrong; the ablation SnapKV -> + semantic retrieval heads (compresskv-uniform) -> + error-aware
// budgets (compresskv); HeadKV against Ada-KV; the most faithful method (lowest KL) per budget.
// Sections whose methods are missing are left out. Every comparison of two methods is paired over
// prompts (task|id; a record without an id pairs by its order within its task, method and
// budget): the mean difference, its seeded 95 % bootstrap interval (paired_bootstrap.hpp) and the
// prompt count; "win"/"loss" only where the interval excludes 0, otherwise "tie" (also for n < 2).
// `comparisons`, when given, receives one JSON object per comparison with the same fields
// (section, table, subset, budget, a, b, mean, lo, hi, prompts, lower_is_better, verdict, seed,
// resamples).
std::string comparison_markdown(const std::vector<nlohmann::json>& records, nlohmann::json* comparisons = nullptr);

// The summary tables of summary.md: per task, methods down, budgets across; where the full cache
// ran, the table again over the prompts the full cache gets right (score >= 50) and over those it
// gets wrong, each with its prompt count.
std::string summary_markdown(const std::vector<nlohmann::json>& records);

// OUT_DIR/comparison.md (and OUT_DIR/comparisons.json) from the records of several eval
// directories (one task each, say); returns the markdown's path.
std::string render_comparison(const std::vector<std::string>& dirs, const std::string& out_dir);

// Writes `text` to `path` whole or not at all: kvtrim::write_text_file_atomic (a unique temp
// name, fsync of the file and its directory, the temp file removed on failure).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace kvhost
