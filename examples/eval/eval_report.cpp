// One file over 400 lines: the report of an eval directory. The summary tables, the SVG plots and
// the cross-run comparison share the record reader, the method / budget ordering and the number
// formatting at the top.
#include "eval/eval_report.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "eval/paired_bootstrap.hpp"
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


// ---- paired statistics: prompts paired by task|id (paired_bootstrap.hpp) --------------------

constexpr double k_full_correct = 50.0;          // the full cache "gets a prompt right": score >= 50
constexpr std::uint64_t k_bootstrap_seed = 0;   // every interval: this seed, k_resamples draws
constexpr int k_resamples = 10000;

// The value a record gives table `t` (a task, a family, or fidelity's three tables); NaN: none.
double record_value(const nlohmann::json& r, const std::string& t) {
  const char* k = t == "fidelity_kl" ? "kl" : t == "fidelity_ppl" ? "ppl" : "score";
  const auto it = r.find(k);  // a task merely named like a fidelity table may lack the key
  return it != r.end() && it->is_number() ? it->get<double>() : std::nan("");
}

// The tables a record counts in: its task (or family), fidelity's three.
std::vector<std::string> tables_of(const nlohmann::json& r, bool family) {
  const std::string task = r["task"].get<std::string>();
  if (task == "fidelity") return {"fidelity_top1", "fidelity_kl", "fidelity_ppl"};
  return {family ? task_family(task) : task};
}

// table -> method -> budget -> prompt ("task|id") -> value. A record without an id is the k-th
// prompt of its (task, method, budget): "task|#k", so hand-made records pair in order.
using prompt_scores = std::map<std::string, double>;
using prompt_index = std::map<std::string, std::map<std::string, std::map<std::string, prompt_scores>>>;

std::vector<std::string> prompt_keys(const std::vector<nlohmann::json>& records) {
  std::vector<std::string> keys;
  std::map<std::string, int> ordinal;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    const std::string problem = record_problem(r);
    if (!problem.empty()) throw std::runtime_error("report: record " + std::to_string(i + 1) + ": " + problem);
    const std::string task = r["task"].get<std::string>();
    std::string key = task + "|";
    if (r.contains("id")) key += r["id"].get<std::string>();
    else key += "#" + std::to_string(ordinal[task + "|" + r["method"].get<std::string>() + "|" +
                                             r["budget"].get<std::string>()]++);
    keys.push_back(std::move(key));
  }
  return keys;
}

prompt_index index_prompts(const std::vector<nlohmann::json>& records, bool family) {
  prompt_index idx;
  const auto keys = prompt_keys(records);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    for (const auto& t : tables_of(r, family))
      idx[t][r["method"].get<std::string>()][r["budget"].get<std::string>()][keys[i]] = record_value(r, t);
  }
  return idx;
}

// m[a][b][c] of a three-level map, or null where any level is missing.
template <class Map>
const auto* find3(const Map& m, const std::string& a, const std::string& b, const std::string& c) {
  using leaf = typename Map::mapped_type::mapped_type::mapped_type;
  const auto ai = m.find(a);
  if (ai == m.end()) return static_cast<const leaf*>(nullptr);
  const auto bi = ai->second.find(b);
  if (bi == ai->second.end()) return static_cast<const leaf*>(nullptr);
  const auto ci = bi->second.find(c);
  return ci == bi->second.end() ? static_cast<const leaf*>(nullptr) : &ci->second;
}

const prompt_scores* find_scores(const prompt_index& idx, const std::string& t, const std::string& m,
                                 const std::string& b) {
  return find3(idx, t, m, b);
}

// The prompts of table t the full cache gets right (score >= k_full_correct) and wrong.
std::pair<std::set<std::string>, std::set<std::string>> full_split(const prompt_index& idx, const std::string& t) {
  std::pair<std::set<std::string>, std::set<std::string>> out;
  if (const auto* full = find_scores(idx, t, "full", "full"))
    for (const auto& [k, v] : *full)
      if (std::isfinite(v)) (v >= k_full_correct ? out.first : out.second).insert(k);
  return out;
}

// a - b over the prompts both have (finite values), within `only` when it is given.
paired_difference paired(const prompt_scores& a, const prompt_scores& b, const std::set<std::string>* only = nullptr) {
  std::vector<double> x, y;
  for (const auto& [k, v] : a) {
    if (only && !only->count(k)) continue;
    const auto it = b.find(k);
    if (it == b.end() || !std::isfinite(v) || !std::isfinite(it->second)) continue;
    x.push_back(v);
    y.push_back(it->second);
  }
  if (x.size() < 2) {  // one prompt has no spread to resample: a point, never a verdict
    paired_difference d;
    d.prompts = x.size();
    if (!x.empty()) d.mean = d.lo = d.hi = x[0] - y[0];
    return d;
  }
  return paired_bootstrap(x, y, k_bootstrap_seed, k_resamples);
}

// +1: a better than b (interval on the better side of 0), -1: worse, 0: a tie (or n < 2).
int better(const paired_difference& d, bool lower_better) {
  if (d.prompts < 2) return 0;
  return lower_better ? -d.verdict() : d.verdict();
}
const char* verdict_word(int v) { return v > 0 ? "win" : v < 0 ? "loss" : "tie"; }

std::string sfmt(double x, int prec) {
  if (std::fabs(x) < 0.5 * std::pow(10.0, -prec)) x = 0.0;  // no "-0.0"
  char buf[64];
  std::snprintf(buf, sizeof buf, "%+.*f", prec, x);
  return buf;
}

// "+5.0 [-5.0, +15.0] n=2 tie": mean of a - b, its paired 95 % interval, prompts, verdict for a.
std::string diff_cell(const paired_difference& d, bool lower_better, int prec) {
  if (d.prompts == 0) return "n=0";
  const int v = better(d, lower_better);
  const std::string w = verdict_word(v);
  return sfmt(d.mean, prec) + " [" + sfmt(d.lo, prec) + ", " + sfmt(d.hi, prec) + "] n=" + std::to_string(d.prompts) +
         " " + (v ? "**" + w + "**" : w);
}

// Every comparison rendered, as data: the same fields as its markdown cell.
void record_comparison(nlohmann::json* out, const std::string& section, const std::string& table,
                       const std::string& subset, const std::string& budget, const std::string& a,
                       const std::string& b, const paired_difference& d, bool lower_better) {
  if (!out) return;
  out->push_back({{"section", section}, {"table", table}, {"subset", subset}, {"budget", budget}, {"a", a}, {"b", b},
                  {"mean", d.mean}, {"lo", d.lo}, {"hi", d.hi}, {"prompts", d.prompts},
                  {"lower_is_better", lower_better}, {"verdict", verdict_word(better(d, lower_better))},
                  {"seed", k_bootstrap_seed}, {"resamples", k_resamples}});
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

namespace {

// One table: methods down, budgets across; cell = score (% of KV kept).
std::string score_table(const std::vector<summary_row>& rows, const std::string& t) {
  std::vector<std::string> budgets, methods;
  for (const auto& r : rows) {
    if (r.task != t) continue;
    if (std::find(budgets.begin(), budgets.end(), r.budget) == budgets.end()) budgets.push_back(r.budget);
    if (std::find(methods.begin(), methods.end(), r.method) == methods.end()) methods.push_back(r.method);
  }
  std::sort(budgets.begin(), budgets.end(), [](const auto& a, const auto& b) { return budget_key(a) < budget_key(b); });
  std::string md = "| method |";
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
  return md;
}

}  // namespace

std::string summary_markdown(const std::vector<nlohmann::json>& records) {
  const auto rows = summarize(records);
  const auto keys = prompt_keys(records);
  const prompt_index idx = index_prompts(records, false);
  std::string md = "# Evaluation summary\n\nScore: mean over samples, 0-100 (fidelity_kl: mean KL(full || "
                   "compressed) in nats, lower is better; fidelity_ppl: perplexity). In brackets: % of the full KV "
                   "cache kept. Where the full cache was run, each task's table is repeated over the prompts it gets "
                   "right (score >= " + fmt(k_full_correct, 0) + ") and over those it gets wrong: compression can "
                   "only lose what the model had.\n";
  std::vector<std::string> tasks;
  for (const auto& r : rows)
    if (std::find(tasks.begin(), tasks.end(), r.task) == tasks.end()) tasks.push_back(r.task);
  for (const auto& t : tasks) {
    int n = 0;
    for (const auto& r : rows)
      if (r.task == t) n = std::max(n, r.n);
    md += "\n## " + t + " (n = " + std::to_string(n) + ")\n\n" + score_table(rows, t);
    if (t.rfind("fidelity", 0) == 0) continue;  // the full cache is fidelity's reference, not a contestant
    const auto split = full_split(idx, t);
    if (split.first.empty() && split.second.empty()) continue;
    for (int part = 0; part < 2; ++part) {
      const auto& keep = part == 0 ? split.first : split.second;
      std::vector<nlohmann::json> sub;
      for (size_t i = 0; i < records.size(); ++i)
        if (records[i]["task"].get<std::string>() == t && keep.count(keys[i])) sub.push_back(records[i]);
      md += "\n### " + t + ": full cache " + (part == 0 ? "correct" : "wrong") + " (" + std::to_string(keep.size()) +
            " prompt" + (keep.size() == 1 ? "" : "s") + ")\n\n";
      md += sub.empty() ? "(none)\n" : score_table(summarize(sub), t);
    }
  }
  return md;
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

  nlohmann::json comparisons = nlohmann::json::array();
  std::string md = summary_markdown(recs) + "\n" + comparison_markdown(recs, &comparisons);
  write_file_atomic(dir + "/comparisons.json", comparisons.dump(1) + "\n");
  written.push_back(dir + "/comparisons.json");
  write_file_atomic(dir + "/summary.md", md);
  written.push_back(dir + "/summary.md");

  std::vector<std::string> tasks;
  for (const auto& r : rows)
    if (std::find(tasks.begin(), tasks.end(), r.task) == tasks.end()) tasks.push_back(r.task);
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
  return find3(t, f, m, b);
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

// One table per section: a row per (family, method) of `methods` present, cells = score; then a
// row per pair (a, b) of `diffs`: the paired difference a - b, its interval, n and the verdict.
std::string method_rows(const family_table& t, const prompt_index& idx, const std::vector<std::string>& methods,
                        const std::vector<std::pair<std::string, std::string>>& diffs, const std::string& section,
                        nlohmann::json* out) {
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
    for (const auto& [ma, mb] : diffs) {
      md += "| " + ma + " - " + mb + " |";
      for (const auto& b : budgets_of(t, f)) {
        const auto* x = find_scores(idx, f, ma, b);
        const auto* y = find_scores(idx, f, mb, b);
        if (!x || !y) {
          md += " |";
          continue;
        }
        const auto d = paired(*x, *y);
        md += " " + diff_cell(d, lower_is_better(f), prec_of(f)) + " |";
        record_comparison(out, section, f, "all", b, ma, mb, d, lower_is_better(f));
      }
      md += "\n";
    }
  }
  return md;
}

// The baselines a headline method is compared with: the papers' (SnapKV, PyramidKV, StreamingLLM
// first, as the CompressKV paper orders them), then every other method the records hold, except
// the full cache and the names in `own` (the method's own variants, or one compared elsewhere).
std::vector<std::string> baselines_of(const family_table& t, const std::vector<std::string>& own) {
  std::vector<std::string> out{"snapkv", "pyramidkv", "streaming", "adakv", "cake", "snapkv-paper", "pyramidkv-paper"};
  std::vector<std::string> all = kvtrim::method_names();
  for (const auto& [f, ms] : t)
    for (const auto& [m, bs] : ms)
      if (std::find(all.begin(), all.end(), m) == all.end()) all.push_back(m);  // e.g. snapkv+rerotate
  for (const auto& m : all)
    if (std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
  auto is_own = [&](const std::string& m) {
    if (m == "full") return true;
    for (const auto& o : own)
      if (m.rfind(o, 0) == 0) return true;
    return false;
  };
  out.erase(std::remove_if(out.begin(), out.end(), is_own), out.end());
  return out;
}

// `subject` against every baseline of baselines_of(own) at equal bytes, by family: its mean vs the
// best baseline's (by mean) with the paired difference to it, then the paired difference to each
// baseline, then a tally of wins / ties / losses over every (family, budget) cell.
std::string against_baselines(const family_table& t, const prompt_index& idx, const std::string& subject,
                              const std::vector<std::string>& own, const std::string& title,
                              const std::string& section, nlohmann::json* out) {
  const std::vector<std::string> baselines = baselines_of(t, own);
  bool any = false;
  std::map<std::string, std::array<int, 3>> tally;  // baseline -> wins, ties, losses of the subject
  std::string goal = "\n## " + title + " against every baseline\n\nFirst row: " + subject +
                     "'s mean score vs the best baseline's (by mean), and the paired difference to it; then the "
                     "paired difference to each baseline.\n";
  for (const auto& [f, ms] : t) {
    if (!ms.count(subject)) continue;
    const bool low = lower_is_better(f);
    std::string body;
    std::map<std::string, std::string> rows;
    for (const auto& b : budgets_of(t, f)) {
      const auto* c = find_row(t, f, subject, b);
      const summary_row* best = nullptr;
      for (const auto& m : baselines) {
        const auto* r = find_row(t, f, m, b);
        if (r && (!best || (low ? r->score < best->score : r->score > best->score))) best = r;
      }
      for (const auto& m : baselines) {
        if (!ms.count(m)) continue;
        const auto* x = find_scores(idx, f, subject, b);
        const auto* y = find_scores(idx, f, m, b);
        if (!x || !y) {
          rows[m] += " |";
          continue;
        }
        const auto d = paired(*x, *y);
        rows[m] += " " + diff_cell(d, low, prec_of(f)) + " |";
        record_comparison(out, section, f, "all", b, subject, m, d, low);
        const int v = better(d, low);
        ++tally[m][v > 0 ? 0 : v == 0 ? 1 : 2];
      }
      if (!c || !best) {
        body += " |";
        continue;
      }
      const auto d = paired(*find_scores(idx, f, subject, b), *find_scores(idx, f, best->method, b));
      body += " " + fmt(c->score, prec_of(f)) + " vs " + fmt(best->score, prec_of(f)) + " " + best->method + ": " +
              diff_cell(d, low, prec_of(f)) + " |";
    }
    if (!any) goal += "\n";
    goal += header(t, f, f) + "| " + subject + " vs best baseline |" + body + "\n";
    for (const auto& m : baselines)
      if (rows.count(m)) goal += "| " + subject + " - " + m + " |" + rows[m] + "\n";
    goal += "\n";
    any = true;
  }
  if (!any) return "";
  goal += "Over every (family, budget) cell above:";
  for (const auto& m : baselines)
    if (tally.count(m))
      goal += " vs " + m + " " + std::to_string(tally[m][0]) + " wins, " + std::to_string(tally[m][1]) + " ties, " +
              std::to_string(tally[m][2]) + " losses;";
  goal.back() = '.';
  return goal + "\n";
}

}  // namespace

std::string comparison_markdown(const std::vector<nlohmann::json>& records, nlohmann::json* comparisons) {
  const auto t = family_rows(records);
  const prompt_index idx = index_prompts(records, true);
  nlohmann::json* out = comparisons;
  std::string md = "# Comparisons at equal bytes\n\nEvery method at one budget B keeps the same bytes (the % of the "
                   "full KV cache is in each column's head). Task families: ruler_* and leval_* tasks pooled; mean "
                   "over samples.\n\nEvery comparison of two methods is paired over the prompts both ran (paired by "
                   "task|id): `mean [lo, hi] n=N verdict`, the mean per-prompt difference a - b in the table's unit, "
                   "its 95 % percentile-bootstrap interval over prompts (seed " + std::to_string(k_bootstrap_seed) +
                   ", " + std::to_string(k_resamples) + " resamples) and the prompt count. **win** / **loss** only "
                   "where the interval excludes 0 (on the better side for a: higher score, lower KL or perplexity); "
                   "otherwise tie, as it is with fewer than 2 prompts.\n";
  md += against_baselines(t, idx, "compresskv", {"compresskv"}, "CompressKV", "compresskv_vs_baselines", out);
  md += against_baselines(t, idx, "headkv", {"headkv", "compresskv"}, "HeadKV", "headkv_vs_baselines", out);

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

  // Against the full cache, split by what the full cache got right: on the prompts it gets wrong
  // there is nothing to lose, so the two subsets answer different questions.
  std::string vs_full = "\n## Paired difference to the full cache, by what the full cache got right\n\nCell: method "
                        "- full over the prompts of the subset (full cache correct: its score >= " +
                        fmt(k_full_correct, 0) + ").\n";
  bool any_full = false;
  for (const auto& [f, ms] : t) {
    const auto* full_scores = find_scores(idx, f, "full", "full");
    if (!full_scores || lower_is_better(f) || f.rfind("fidelity", 0) == 0) continue;
    const auto split = full_split(idx, f);
    for (int part = 0; part < 2; ++part) {
      const auto& keep = part == 0 ? split.first : split.second;
      const std::string subset = part == 0 ? "full_correct" : "full_wrong";
      vs_full += "\n" + f + ", full cache " + (part == 0 ? "correct" : "wrong") + " (" + std::to_string(keep.size()) +
                 " prompt" + (keep.size() == 1 ? "" : "s") + "):\n\n";
      if (keep.empty()) {
        vs_full += "(none)\n";
        continue;
      }
      vs_full += header(t, f, "method - full");
      for (const auto& m : kvtrim::method_names()) {
        if (m == "full" || !ms.count(m)) continue;
        vs_full += "| " + m + " |";
        for (const auto& b : budgets_of(t, f)) {
          const auto* x = find_scores(idx, f, m, b);
          if (!x) {
            vs_full += " |";
            continue;
          }
          const auto d = paired(*x, *full_scores, &keep);
          vs_full += " " + diff_cell(d, false, prec_of(f)) + " |";
          record_comparison(out, "vs_full", f, subset, b, m, "full", d, false);
        }
        vs_full += "\n";
      }
    }
    any_full = true;
  }
  if (any_full) md += vs_full;

  const std::string abl = method_rows(t, idx, {"snapkv", "compresskv-uniform", "compresskv"},
                                      {{"compresskv-uniform", "snapkv"}, {"compresskv", "compresskv-uniform"}},
                                      "ablation", out);
  if (!abl.empty())
    md += "\n## Ablation: SnapKV -> + semantic retrieval heads (compresskv-uniform) -> + error-aware layer budgets "
          "(compresskv)\n" + abl;
  // The CompressKV paper's own comparison, reproduced: its mis-grouped SnapKV (snapkv-paper) -> + SRH
  // -> + layer budgets, all pooled avg 5 as its evaluation script pools every method.
  const std::string abl_paper = method_rows(
      t, idx, {"snapkv-paper", "compresskv-uniform", "compresskv"},
      {{"compresskv-uniform", "snapkv-paper"}, {"compresskv", "compresskv-uniform"}, {"compresskv", "snapkv-paper"}},
      "ablation_paper", out);
  if (!abl_paper.empty())
    md += "\n## The paper's ablation: SnapKV as the paper groups GQA (snapkv-paper) -> + semantic retrieval heads "
          "-> + error-aware layer budgets\n" + abl_paper;
  const std::string hk = method_rows(t, idx, {"adakv", "headkv"}, {{"headkv", "adakv"}}, "headkv_vs_adakv", out);
  if (!hk.empty()) md += "\n## HeadKV against Ada-KV at equal bytes\n" + hk;

  if (t.count("fidelity_kl")) {
    md += "\n## Most faithful method (lowest mean KL to the full cache) per budget\n\n" + header(t, "fidelity_kl", "") +
          "| lowest KL |";
    std::string next = "| lowest - next lowest |";
    for (const auto& b : budgets_of(t, "fidelity_kl")) {
      const summary_row *best = nullptr, *second = nullptr;
      for (const auto& [m, bs] : t.at("fidelity_kl")) {
        if (m == "full" || !bs.count(b)) continue;
        const summary_row* r = &bs.at(b);
        if (!best || r->score < best->score) {
          second = best;
          best = r;
        } else if (!second || r->score < second->score) {
          second = r;
        }
      }
      md += best ? " " + best->method + " " + fmt(best->score, 4) + " |" : " |";
      if (best && second) {
        const auto d = paired(*find_scores(idx, "fidelity_kl", best->method, b),
                              *find_scores(idx, "fidelity_kl", second->method, b));
        next += " " + best->method + " - " + second->method + ": " + diff_cell(d, true, 4) + " |";
        record_comparison(out, "lowest_kl", "fidelity_kl", "all", b, best->method, second->method, d, true);
      } else {
        next += " |";
      }
    }
    md += "\n" + next + "\n";
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
  nlohmann::json comparisons = nlohmann::json::array();
  write_file_atomic(path, comparison_markdown(all, &comparisons));
  write_file_atomic(out_dir + "/comparisons.json", comparisons.dump(1) + "\n");
  return path;
}

}  // namespace kvhost
