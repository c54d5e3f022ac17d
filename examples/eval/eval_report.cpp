// One file over 400 lines: the report of an eval directory. The summary tables, the SVG plots and
// the cross-run comparison share the record reader, the method / budget ordering and the number
// formatting at the top.
#include "eval/eval_report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "kvtrim/compose/method.hpp"
#include "kvtrim/profile/file.hpp"

namespace kvhost {

namespace fs = std::filesystem;

void write_file_atomic(const std::string& path, const std::string& text) {
  try {  // the one atomic write: unique temp name, fsync of file and directory, clean-up on failure
    kvtrim::write_text_file_atomic(path, text);
  } catch (const kvtrim::error& e) {
    throw std::runtime_error(e.what());
  }
}

std::string record_problem(const nlohmann::json& r) {
  if (!r.is_object()) return std::string("a record must be a JSON object, got ") + r.type_name();
  for (const char* k : {"task", "method", "budget"})
    if (!r.contains(k) || !r[k].is_string()) return std::string("record lacks \"") + k + "\" (a string)";
  if (r.contains("id") && !r["id"].is_string()) return "record's \"id\" must be a string";
  for (const char* k : {"kv_percent_of_full", "score"})
    if (!r.contains(k) || !r[k].is_number()) return std::string("record lacks \"") + k + "\" (a number)";
  if (r["task"].get_ref<const std::string&>() == "fidelity")
    for (const char* k : {"kl", "ppl"})  // null: a non-finite value, as nlohmann writes it
      if (!r.contains(k) || !(r[k].is_number() || r[k].is_null()))
        return std::string("fidelity record lacks \"") + k + "\" (a number)";
  if (r.contains("length") && !r["length"].is_number_integer()) return "record's \"length\" must be an integer";
  if (r.contains("depth") && !r["depth"].is_number()) return "record's \"depth\" must be a number";
  return "";
}

std::vector<nlohmann::json> read_records(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path, std::ios::binary);
  if (!in) return out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    // An interrupted append leaves a partial line (the last one, or one an older kvtrim wrote
    // past): that sample is simply redone.
    if (j.is_discarded()) continue;
    const std::string problem = record_problem(j);
    if (!problem.empty()) throw std::runtime_error(path + ":" + std::to_string(lineno) + ": " + problem);
    out.push_back(std::move(j));
  }
  return out;
}

namespace {

int method_rank(const std::string& m) {
  const auto& names = kvtrim::method_names();
  const auto it = std::find(names.begin(), names.end(), m);
  return static_cast<int>(it - names.begin());
}
// "16" < "64" < "r0.05" < "r0.1" < "full"
std::pair<int, double> budget_key(const std::string& b) {
  if (b == "full") return {2, 0};
  if (!b.empty() && b[0] == 'r') return {1, std::atof(b.c_str() + 1)};
  return {0, std::atof(b.c_str())};
}
bool row_less(const summary_row& a, const summary_row& b) {
  if (a.task != b.task) return a.task < b.task;
  if (a.method != b.method) return method_rank(a.method) < method_rank(b.method);
  return budget_key(a.budget) < budget_key(b.budget);
}
std::string fmt(double x, int prec = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, x);
  return buf;
}
std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}
struct acc {
  double kv = 0, score = 0;
  int n = 0;
};

// Red (0) -> yellow (50) -> green (100), the needle test's palette.
std::string heat_color(double s) {
  s = std::clamp(s, 0.0, 100.0) / 100.0;
  const double r0[3] = {215, 48, 39}, r1[3] = {254, 224, 139}, r2[3] = {26, 152, 80};
  const double* a = s < 0.5 ? r0 : r1;
  const double* b = s < 0.5 ? r1 : r2;
  const double t = s < 0.5 ? s * 2 : (s - 0.5) * 2;
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t),
                int(a[2] + (b[2] - a[2]) * t));
  return buf;
}
const char* k_palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000"};

std::string svg_open(int w, int h) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(w) + "\" height=\"" +
         std::to_string(h) + "\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" "
         "fill=\"white\"/>\n";
}
std::string text(double x, double y, const std::string& s, const std::string& extra = "") {
  return "<text x=\"" + fmt(x) + "\" y=\"" + fmt(y) + "\" " + extra + ">" + esc(s) + "</text>\n";
}

// Needle heatmaps of one niah task: a panel per (method, budget), length across, depth down.
std::string heatmap_svg(const std::string& task, const std::vector<nlohmann::json>& recs) {
  std::set<int64_t> lengths;
  std::set<double> depths;
  std::map<std::pair<std::string, std::string>, std::map<std::pair<int64_t, double>, acc>> cells;
  for (const auto& r : recs) {
    if (r.value("task", "") != task || !r.contains("length") || !r.contains("depth")) continue;
    const int64_t L = r["length"].get<int64_t>();
    const double D = r["depth"].get<double>();
    lengths.insert(L);
    depths.insert(D);
    auto& c = cells[{r["method"].get<std::string>(), r["budget"].get<std::string>()}][{L, D}];
    c.score += r["score"].get<double>();
    ++c.n;
  }
  std::vector<std::pair<std::string, std::string>> panels;
  for (const auto& [k, v] : cells) panels.push_back(k);
  std::sort(panels.begin(), panels.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return method_rank(a.first) < method_rank(b.first);
    return budget_key(a.second) < budget_key(b.second);
  });
  std::vector<std::string> budgets;
  for (const auto& p : panels)
    if (p.second != "full" && std::find(budgets.begin(), budgets.end(), p.second) == budgets.end())
      budgets.push_back(p.second);
  std::sort(budgets.begin(), budgets.end(), [](const auto& a, const auto& b) { return budget_key(a) < budget_key(b); });
  std::vector<std::string> methods;
  for (const auto& p : panels)
    if (std::find(methods.begin(), methods.end(), p.first) == methods.end()) methods.push_back(p.first);
  const int cw = 34, ch = 18, nl = static_cast<int>(lengths.size()), nd = static_cast<int>(depths.size());
  const int pw = cw * nl + 50, ph = ch * nd + 40, cols = std::max<int>(1, static_cast<int>(budgets.size()));
  const int left = 90, top = 40;
  std::string s = svg_open(left + cols * pw + 20, top + static_cast<int>(methods.size()) * ph + 40);
  s += text(10, 20, "needle heatmap: " + task + " (score 0-100; length across, depth down)", "font-size=\"14\"");
  for (size_t mi = 0; mi < methods.size(); ++mi) {
    const int y0 = top + static_cast<int>(mi) * ph;
    s += text(5, y0 + 20 + ch * nd / 2.0, methods[mi], "font-weight=\"bold\"");
    for (const auto& p : panels) {
      if (p.first != methods[mi]) continue;
      const auto bi = std::find(budgets.begin(), budgets.end(), p.second) - budgets.begin();
      const int x0 = left + (p.second == "full" ? 0 : static_cast<int>(bi)) * pw;
      s += text(x0 + 40, y0 + 12, p.second == "full" ? "full cache" : "B = " + p.second);
      const auto& cm = cells[p];
      int li = 0;
      for (int64_t L : lengths) {
        int di = 0;
        for (double D : depths) {
          const auto it = cm.find({L, D});
          const double x = x0 + 40 + li * cw, y = y0 + 18 + di * ch;
          if (it != cm.end()) {
            const double sc = it->second.score / it->second.n;
            s += "<rect x=\"" + fmt(x) + "\" y=\"" + fmt(y) + "\" width=\"" + std::to_string(cw - 1) + "\" height=\"" +
                 std::to_string(ch - 1) + "\" fill=\"" + heat_color(sc) + "\"><title>L=" + std::to_string(L) +
                 " depth=" + fmt(D * 100, 0) + "% score=" + fmt(sc) + "</title></rect>\n";
            s += text(x + 4, y + 12, fmt(sc, 0), "font-size=\"9\"");
          }
          if (li == 0) s += text(x0 + 2, y + 12, fmt(D * 100, 0) + "%", "font-size=\"9\"");
          ++di;
        }
        const std::string label = L >= 1024 ? std::to_string((L + 512) / 1024) + "k" : std::to_string(L);
        s += text(x0 + 40 + li * cw, y0 + 18 + nd * ch + 11, label, "font-size=\"9\"");
        ++li;
      }
    }
  }
  return s + "</svg>\n";
}

// Score against % of KV kept, one line per method (log x axis).
std::string curve_svg(const std::string& task, const std::vector<summary_row>& rows) {
  std::map<std::string, std::vector<std::pair<double, double>>> lines;
  double ymin = 0, ymax = 100, full_score = std::nan("");
  const bool pct = task != "fidelity_kl" && task != "fidelity_ppl";
  bool first = true;
  for (const auto& r : rows) {
    if (r.task != task) continue;
    if (r.method == "full") {
      full_score = r.score;
    } else {
      lines[r.method].push_back({std::max(1e-3, r.kv_percent_of_full), r.score});
    }
    if (!pct) {
      ymin = first ? r.score : std::min(ymin, r.score);
      ymax = first ? r.score : std::max(ymax, r.score);
      first = false;
    }
  }
  if (!pct) {
    ymin = std::min(0.0, ymin);
    ymax = ymax <= ymin ? ymin + 1 : ymax * 1.05;
  }
  double xmin = 1e9, xmax = 100;
  for (const auto& [m, pts] : lines)
    for (const auto& p : pts) xmin = std::min(xmin, p.first);
  if (xmin > xmax) xmin = 0.1;
  const double lx0 = std::floor(std::log10(xmin)), lx1 = 2;
  const int W = 640, H = 400, L = 60, R = 170, T = 40, B = 50;
  auto X = [&](double v) { return L + (std::log10(v) - lx0) / (lx1 - lx0) * (W - L - R); };
  auto Y = [&](double v) { return H - B - (v - ymin) / (ymax - ymin) * (H - T - B); };
  std::string s = svg_open(W, H);
  s += text(L, 22, task + ": score vs % of KV cache kept", "font-size=\"14\"");
  s += "<rect x=\"" + fmt(L) + "\" y=\"" + fmt(T) + "\" width=\"" + fmt(W - L - R) + "\" height=\"" + fmt(H - T - B) +
       "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (double e = lx0; e <= lx1 + 1e-9; e += 1) {
    const double v = std::pow(10.0, e);
    s += "<line x1=\"" + fmt(X(v)) + "\" x2=\"" + fmt(X(v)) + "\" y1=\"" + fmt(T) + "\" y2=\"" + fmt(H - B) +
         "\" stroke=\"#ddd\"/>\n";
    s += text(X(v) - 10, H - B + 15, (v < 1 ? fmt(v, static_cast<int>(-e)) : fmt(v, 0)) + "%");
  }
  for (int i = 0; i <= 4; ++i) {
    const double v = ymin + (ymax - ymin) * i / 4;
    s += "<line x1=\"" + fmt(L) + "\" x2=\"" + fmt(W - R) + "\" y1=\"" + fmt(Y(v)) + "\" y2=\"" + fmt(Y(v)) +
         "\" stroke=\"#eee\"/>\n";
    s += text(8, Y(v) + 4, fmt(v, pct ? 0 : 3));
  }
  s += text(W / 2.0 - 60, H - 12, "% of the full KV cache kept (log)");
  int ci = 0;
  if (!std::isnan(full_score)) {
    s += "<line x1=\"" + fmt(L) + "\" x2=\"" + fmt(W - R) + "\" y1=\"" + fmt(Y(full_score)) + "\" y2=\"" +
         fmt(Y(full_score)) + "\" stroke=\"#000\" stroke-dasharray=\"5,4\"/>\n";
    s += text(W - R + 10, T + 12, "--- full cache");
    ++ci;
  }
  std::vector<std::string> order;
  for (const auto& [m, pts] : lines) order.push_back(m);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return method_rank(a) < method_rank(b); });
  for (const auto& m : order) {
    auto pts = lines[m];
    std::sort(pts.begin(), pts.end());
    const std::string col = k_palette[method_rank(m) % 11];
    std::string poly;
    for (const auto& p : pts) {
      poly += fmt(X(p.first)) + "," + fmt(Y(p.second)) + " ";
      s += "<circle cx=\"" + fmt(X(p.first)) + "\" cy=\"" + fmt(Y(p.second)) + "\" r=\"3\" fill=\"" + col + "\"/>\n";
    }
    s += "<polyline points=\"" + poly + "\" fill=\"none\" stroke=\"" + col + "\" stroke-width=\"2\"/>\n";
    s += "<line x1=\"" + fmt(W - R + 10) + "\" x2=\"" + fmt(W - R + 30) + "\" y1=\"" + fmt(T + 8 + 16 * ci) + "\" y2=\"" +
         fmt(T + 8 + 16 * ci) + "\" stroke=\"" + col + "\" stroke-width=\"2\"/>\n";
    s += text(W - R + 35, T + 12 + 16 * ci, m);
    ++ci;
  }
  return s + "</svg>\n";
}

}  // namespace

std::vector<summary_row> summarize(const std::vector<nlohmann::json>& records) {
  std::map<std::tuple<std::string, std::string, std::string>, acc> g;
  auto num = [](const nlohmann::json& x) { return x.is_null() ? std::nan("") : x.get<double>(); };
  auto add = [&](const std::string& task, const nlohmann::json& r, double score) {
    auto& a = g[{task, r["method"].get<std::string>(), r["budget"].get<std::string>()}];
    a.kv += r["kv_percent_of_full"].get<double>();
    a.score += score;
    ++a.n;
  };
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    // Checked here too, not only by read_records: a missing key must never reach operator[].
    const std::string problem = record_problem(r);
    if (!problem.empty()) throw std::runtime_error("summarize: record " + std::to_string(i + 1) + ": " + problem);
    const std::string task = r["task"].get<std::string>();
    if (task == "fidelity") {
      add("fidelity_top1", r, r["score"].get<double>());
      add("fidelity_kl", r, num(r["kl"]));
      add("fidelity_ppl", r, num(r["ppl"]));
    } else {
      add(task, r, r["score"].get<double>());
    }
  }
  std::vector<summary_row> rows;
  for (const auto& [k, a] : g)
    rows.push_back({std::get<0>(k), std::get<1>(k), std::get<2>(k), a.kv / a.n, a.score / a.n, a.n});
  std::sort(rows.begin(), rows.end(), row_less);
  return rows;
}

std::vector<std::string> render_report(const std::string& dir) {
  const auto recs = read_records(dir + "/samples.jsonl");
  if (recs.empty()) throw std::runtime_error(dir + "/samples.jsonl holds no records");
  const auto rows = summarize(recs);
  std::vector<std::string> written;

  std::string csv = "task,method,budget,kv_percent_of_full,score,n\n";
  for (const auto& r : rows)
    csv += r.task + "," + r.method + "," + r.budget + "," + fmt(r.kv_percent_of_full, 4) + "," + fmt(r.score, 4) + "," +
           std::to_string(r.n) + "\n";
  write_file_atomic(dir + "/summary.csv", csv);
  written.push_back(dir + "/summary.csv");

  // Markdown: per task, methods down, budgets across; cell = score (% of KV kept).
  std::string md = "# Evaluation summary\n\nScore: mean over samples, 0-100 (fidelity_kl: mean KL(full || "
                   "compressed) in nats, lower is better; fidelity_ppl: perplexity). In brackets: % of the full KV "
                   "cache kept.\n";
  std::vector<std::string> tasks;
  for (const auto& r : rows)
    if (std::find(tasks.begin(), tasks.end(), r.task) == tasks.end()) tasks.push_back(r.task);
  for (const auto& t : tasks) {
    std::vector<std::string> budgets, methods;
    for (const auto& r : rows) {
      if (r.task != t) continue;
      if (std::find(budgets.begin(), budgets.end(), r.budget) == budgets.end()) budgets.push_back(r.budget);
      if (std::find(methods.begin(), methods.end(), r.method) == methods.end()) methods.push_back(r.method);
    }
    std::sort(budgets.begin(), budgets.end(), [](const auto& a, const auto& b) { return budget_key(a) < budget_key(b); });
    int n = 0;
    for (const auto& r : rows)
      if (r.task == t) n = std::max(n, r.n);
    md += "\n## " + t + " (n = " + std::to_string(n) + ")\n\n| method |";
    for (const auto& b : budgets) md += (b == "full" ? " full |" : " B=" + b + " |");
    md += "\n|---|";
    for (size_t i = 0; i < budgets.size(); ++i) md += "---|";
    md += "\n";
    for (const auto& m : methods) {
      md += "| " + m + " |";
      for (const auto& b : budgets) {
        const auto it = std::find_if(rows.begin(), rows.end(),
                                     [&](const summary_row& r) { return r.task == t && r.method == m && r.budget == b; });
        md += it == rows.end() ? " |"
                               : " " + fmt(it->score, t == "fidelity_kl" ? 4 : (t == "fidelity_ppl" ? 2 : 1)) + " (" +
                                     fmt(it->kv_percent_of_full, 2) + "%) |";
      }
      md += "\n";
    }
  }
  md += "\n" + comparison_markdown(recs);
  write_file_atomic(dir + "/summary.md", md);
  written.push_back(dir + "/summary.md");

  fs::create_directories(dir + "/plots");
  std::vector<std::string> svgs;
  for (const auto& t : tasks) {
    if (t.rfind("niah", 0) == 0) {
      const std::string p = dir + "/plots/heatmap_" + t + ".svg";
      write_file_atomic(p, heatmap_svg(t, recs));
      svgs.push_back(p);
    }
    const std::string p = dir + "/plots/curve_" + t + ".svg";
    write_file_atomic(p, curve_svg(t, rows));
    svgs.push_back(p);
  }
  // PNG through librsvg's converter (Debian: librsvg2-bin) where it is installed.
  const bool rsvg = std::system("command -v rsvg-convert >/dev/null 2>&1") == 0;
  for (const auto& p : svgs) {
    written.push_back(p);
    if (!rsvg) continue;
    const std::string png = p.substr(0, p.size() - 4) + ".png";
    const std::string cmd = "rsvg-convert -b white -o '" + png + "' '" + p + "'";
    if (std::system(cmd.c_str()) == 0) written.push_back(png);
  }
  return written;
}

std::string task_family(const std::string& task) {
  for (const char* f : {"ruler", "leval"})
    if (task.rfind(std::string(f) + "_", 0) == 0) return f;
  return task;
}

namespace {

// Family -> method -> budget -> row (mean over the family's samples).
using family_table = std::map<std::string, std::map<std::string, std::map<std::string, summary_row>>>;

family_table family_rows(const std::vector<nlohmann::json>& records) {
  std::vector<nlohmann::json> fam = records;
  for (size_t i = 0; i < fam.size(); ++i) {
    const std::string problem = record_problem(fam[i]);
    if (!problem.empty()) throw std::runtime_error("comparison: record " + std::to_string(i + 1) + ": " + problem);
    fam[i]["task"] = task_family(fam[i]["task"].get<std::string>());
  }
  family_table t;
  for (const auto& row : summarize(fam)) t[row.task][row.method][row.budget] = row;
  return t;
}

bool lower_is_better(const std::string& family) { return family == "fidelity_kl" || family == "fidelity_ppl"; }

const summary_row* find_row(const family_table& t, const std::string& f, const std::string& m, const std::string& b) {
  const auto fi = t.find(f);
  if (fi == t.end()) return nullptr;
  const auto mi = fi->second.find(m);
  if (mi == fi->second.end()) return nullptr;
  const auto bi = mi->second.find(b);
  return bi == mi->second.end() ? nullptr : &bi->second;
}

// The numeric budgets any method of family f was run at, ascending.
std::vector<std::string> budgets_of(const family_table& t, const std::string& f) {
  std::vector<std::string> out;
  for (const auto& [m, bs] : t.at(f))
    for (const auto& [b, row] : bs)
      if (b != "full" && std::find(out.begin(), out.end(), b) == out.end()) out.push_back(b);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return budget_key(a) < budget_key(b); });
  return out;
}

std::string header(const family_table& t, const std::string& f, const std::string& first) {
  std::string h = "| " + first + " |", sep = "|---|";
  for (const auto& b : budgets_of(t, f)) {
    double kv = 0;
    for (const auto& [m, bs] : t.at(f))
      if (bs.count(b)) kv = bs.at(b).kv_percent_of_full;
    h += " B=" + b + " (" + fmt(kv, 2) + "%) |";
    sep += "---|";
  }
  return h + "\n" + sep + "\n";
}

int prec_of(const std::string& f) { return f == "fidelity_kl" ? 4 : (f == "fidelity_ppl" ? 2 : 1); }

// One table per section: a row per (family, method) of `methods` present, cells = score.
std::string method_rows(const family_table& t, const std::vector<std::string>& methods) {
  std::string md;
  for (const auto& [f, ms] : t) {
    size_t present = 0;
    for (const auto& m : methods) present += ms.count(m);
    if (present < methods.size()) continue;
    md += "\n" + f + (lower_is_better(f) ? " (lower is better)" : "") + ":\n\n" + header(t, f, "method");
    for (const auto& m : methods) {
      md += "| " + m + " |";
      for (const auto& b : budgets_of(t, f)) {
        const auto* r = find_row(t, f, m, b);
        md += r ? " " + fmt(r->score, prec_of(f)) + " |" : " |";
      }
      md += "\n";
    }
  }
  return md;
}

}  // namespace

std::string comparison_markdown(const std::vector<nlohmann::json>& records) {
  const auto t = family_rows(records);
  std::string md = "# Comparisons at equal bytes\n\nEvery method at one budget B keeps the same bytes (the % of the "
                   "full KV cache is in each column's head). Task families: ruler_* and leval_* tasks pooled; mean "
                   "over samples.\n";
  const std::vector<std::string> baselines{"snapkv", "pyramidkv", "streaming"};
  bool any = false;
  std::string goal = "\n## CompressKV against SnapKV, PyramidKV and StreamingLLM\n\nCell: CompressKV's score, then the "
                     "best of the three baselines; \"win\" where CompressKV is strictly better.\n";
  for (const auto& [f, ms] : t) {
    if (!ms.count("compresskv")) continue;
    std::string body;
    for (const auto& b : budgets_of(t, f)) {
      const auto* c = find_row(t, f, "compresskv", b);
      const summary_row* best = nullptr;
      for (const auto& m : baselines) {
        const auto* r = find_row(t, f, m, b);
        if (r && (!best || (lower_is_better(f) ? r->score < best->score : r->score > best->score))) best = r;
      }
      if (!c || !best) {
        body += " |";
        continue;
      }
      const bool win = lower_is_better(f) ? c->score < best->score : c->score > best->score;
      body += " " + fmt(c->score, prec_of(f)) + " vs " + fmt(best->score, prec_of(f)) + " " + best->method +
              (win ? " **win**" : " no") + " |";
    }
    if (!any) goal += "\n";
    goal += header(t, f, f) + "| compresskv vs best baseline |" + body + "\n\n";
    any = true;
  }
  if (any) md += goal;

  std::string pct = "\n## Score as % of the full cache's\n";
  bool any_pct = false;
  for (const auto& [f, ms] : t) {
    const auto* full = find_row(t, f, "full", "full");
    if (!full || full->score == 0 || lower_is_better(f)) continue;
    pct += "\n" + f + " (full cache " + fmt(full->score, prec_of(f)) + "):\n\n" + header(t, f, "method");
    for (const auto& m : kvtrim::method_names()) {
      if (m == "full" || !ms.count(m)) continue;
      pct += "| " + m + " |";
      for (const auto& b : budgets_of(t, f)) {
        const auto* r = find_row(t, f, m, b);
        pct += r ? " " + fmt(100.0 * r->score / full->score, 0) + "% |" : " |";
      }
      pct += "\n";
    }
    any_pct = true;
  }
  if (any_pct) md += pct;

  const std::string abl = method_rows(t, {"snapkv", "compresskv-uniform", "compresskv"});
  if (!abl.empty())
    md += "\n## Ablation: SnapKV -> + semantic retrieval heads (compresskv-uniform) -> + error-aware layer budgets "
          "(compresskv)\n" + abl;
  const std::string hk = method_rows(t, {"adakv", "headkv"});
  if (!hk.empty()) md += "\n## HeadKV against Ada-KV at equal bytes\n" + hk;

  if (t.count("fidelity_kl")) {
    md += "\n## Most faithful method (lowest mean KL to the full cache) per budget\n\n" + header(t, "fidelity_kl", "") +
          "| lowest KL |";
    for (const auto& b : budgets_of(t, "fidelity_kl")) {
      const summary_row* best = nullptr;
      for (const auto& [m, bs] : t.at("fidelity_kl"))
        if (m != "full" && bs.count(b) && (!best || bs.at(b).score < best->score)) best = &bs.at(b);
      md += best ? " " + best->method + " " + fmt(best->score, 4) + " |" : " |";
    }
    md += "\n";
  }
  return md;
}

std::string render_comparison(const std::vector<std::string>& dirs, const std::string& out_dir) {
  std::vector<nlohmann::json> all;
  for (const auto& d : dirs) {
    auto r = read_records(d + "/samples.jsonl");
    if (r.empty()) throw std::runtime_error(d + "/samples.jsonl holds no records");
    all.insert(all.end(), r.begin(), r.end());
  }
  fs::create_directories(out_dir);
  const std::string path = out_dir + "/comparison.md";
  write_file_atomic(path, comparison_markdown(all));
  return path;
}

}  // namespace kvhost
