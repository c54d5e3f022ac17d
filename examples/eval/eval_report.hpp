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

// Writes DIR/summary.csv, DIR/summary.md and DIR/plots/*.svg (and *.png where rsvg-convert
// exists). Returns the paths written. Each file is written whole (temp file + rename).
std::vector<std::string> render_report(const std::string& dir);

// The task families the goals speak of: ruler_* -> ruler, leval_* -> leval, the rest unchanged.
std::string task_family(const std::string& task);

// Markdown comparing methods at equal bytes (same budget) per task family: CompressKV against
// SnapKV, PyramidKV and StreamingLLM; each method as % of the full cache's score; the ablation
// SnapKV -> + semantic retrieval heads (compresskv-uniform) -> + error-aware budgets
// (compresskv); HeadKV against Ada-KV; the most faithful method (lowest KL) per budget. Sections
// whose methods are missing are left out.
std::string comparison_markdown(const std::vector<nlohmann::json>& records);

// OUT_DIR/comparison.md from the records of several eval directories (one task each, say).
std::string render_comparison(const std::vector<std::string>& dirs, const std::string& out_dir);

// Writes `text` to `path` whole or not at all: kvtrim::write_text_file_atomic (a unique temp
// name, fsync of the file and its directory, the temp file removed on failure).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace kvhost
