// kvtrim eval TASK: accuracy, memory and speed of methods x budgets on a task, one prefill per
// sample (eval/eval_runner.hpp), resumable, with a summary table and plots (eval/eval_report.hpp).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.hpp"
#include "common/fingerprint.hpp"
#include "commands.hpp"
#include "engine/compression.hpp"
#include "eval/eval_metrics.hpp"
#include "eval/eval_report.hpp"
#include "eval/eval_runner.hpp"
#include "eval/eval_tasks.hpp"
#include "engine/runner.hpp"
#include "common/log_file.hpp"
#include "host_setup.hpp"
#include "method_args.hpp"

namespace kvtools {

namespace {

namespace fs = std::filesystem;

const char* kHelp =
    "usage: kvtrim eval TASK --out DIR [--methods M,...] [--budgets B,...] [--ratios R,...]\n"
    "                   [--limit N] [--data FILE] [--data-dir DIR] [--model GGUF] [--profile P.json]\n"
    "                   [--lengths L,...] [--depths D,...] [--variants classic,passkey,heldout]\n"
    "                   [--haystacks R,...]\n"
    "                   [--passages N] [--continuation T] [--seed S] [--max-new-tokens N] [--separate]\n"
    "\n"
    "TASK: niah      needle in a haystack over the Paul Graham essays: lengths x depths (percent),\n"
    "                classic needle (ROUGE-1 recall), passkey (exact match) and heldout: eight\n"
    "                needles no calibration needle shares an answer word with (ROUGE-1 recall),\n"
    "                one per cell in turn; --haystacks R,... repeats the grid over these rotations\n"
    "                of the essays (R > 0 starts at a line drawn from the seed and R; default 0,\n"
    "                the essays as they are; ids end in -H<R> unless only 0 is given)\n"
    "      fidelity  teacher-forced continuation of essay passages: top-1 agreement with the full\n"
    "                cache (score), mean KL(full || compressed) and perplexity\n"
    "      jsonl     a file in RULER's format (--data FILE: input, outputs), string match\n"
    "      leval     L-Eval quality, coursera, sci_fi, topic_retrieval_longchat (--data FILE for one;\n"
    "                --limit applies per file), exact match as L-Eval scores each\n"
    "      ruler     RULER-style synthetic tasks (--ruler-tasks niah_single_1,...,vt,cwe,fwe; --lengths;\n"
    "                --samples N per task and length), string match\n"
    "      longbench LongBench multi_news with its prompt and generation length, ROUGE-L\n"
    "  --max-prompt-tokens N  jsonl/leval/longbench: cut prompts in the middle to N (default: the\n"
    "                         model context minus the generation length)\n"
    "\n"
    "Each sample is prefilled once; every method x budget is built from that prefill's K/V and\n"
    "decoded from its logits (--separate: one full run per configuration instead, to measure the\n"
    "saving). DIR gets samples.jsonl (one record per sample x method x budget), summary.csv,\n"
    "summary.md, plots/ and config.json. Finished records are skipped when DIR is reused.\n"
    "  --methods   default: the registry's evaluated set (kvtrim methods --json: evaluated_by_default;\n"
    "              full,streaming,snapkv,pyramidkv,adakv,cake, + headkv,compresskv with a profile)\n"
    "  --budgets   tokens per KV head per layer, default 16,32,64,128,256\n"
    "  --ratios    fractions of the prompt kept, in (0, 1]\n"
    "  --lengths   niah default 1024,2048,4096; fidelity default 2048\n"
    "  --depths    niah, percent, default 0,50,100\n"
    "  --data-dir  default " KVTRIM_SOURCE_DIR "/../shared/data\n";

std::vector<long long> int_list(const args& a, const std::string& name, const std::string& def) {
  std::vector<long long> out;
  for (const auto& s : a.list(name, def)) out.push_back(args::parse_int_in(name, s, -k_max_tokens, k_max_tokens));
  return out;
}

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string hms(double s) {
  const long long t = static_cast<long long>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lldh%02lldm%02llds", t / 3600, t / 60 % 60, t % 60);
  return t >= 3600 ? buf : buf + 2;  // drop "0h" for short runs
}

struct config_spec {
  std::string method, budget;  // budget label: "64", "r0.05", "full"
  std::unique_ptr<kvtrim::method> m;  // null for full
  std::string settings;  // what its records depend on besides the sample (settings_of)
};

// A configuration's settings, the last part of its resume key: the window and every parameter
// of the method, defaults included (pooling, kernel and the method's own), and for a method that
// reads a profile the profile file's fingerprint. Records made with other settings are never
// taken for this configuration's.
std::string settings_of(const kvtrim::method* m, const std::string& profile_fp) {
  if (!m) return "full";
  std::string s = "window=" + std::to_string(m->spec().window);
  for (const auto& [k, v] : m->params()) s += ";" + k + "=" + v;
  if (m->spec().rerotate_keys) s += ";rerotate_keys=1";
  if (m->info().needs_profile()) s += ";profile=" + profile_fp;
  return s;
}

}  // namespace

// The registry's evaluated set; methods that need a profile only when one is given.
static std::string default_methods(bool have_profile) {
  std::string out;
  for (const auto& m : kvtrim::method_registry())
    if (m.evaluated_by_default && (have_profile || !m.needs_profile()))
      out += (out.empty() ? "" : ",") + m.name;
  return out;
}

int cmd_eval(int argc, char** argv) {
  auto valued = method_options();
  for (const char* o : {"method", "budget", "ratio"}) valued.erase(o);
  valued.insert({"methods", "budgets", "ratios", "limit", "data", "data-dir", "out", "model", "profile", "lengths",
                 "depths", "variants", "passages", "continuation", "max-new-tokens", "seed", "max-prompt-tokens", "ruler-tasks", "samples",
                 "haystacks"});
  args a(argc, argv, 2, valued, {"separate", "quiet"});
  if (a.help()) {
    std::fputs(kHelp, stdout);
    std::fputs(method_options_help().c_str(), stdout);
    return 0;
  }
  if (a.positional().size() != 1) throw usage_error("give one TASK (niah, fidelity, jsonl, leval, longbench, ruler); see --help");
  const std::string task = a.positional()[0];
  if (task != "niah" && task != "fidelity" && task != "jsonl" && task != "leval" && task != "longbench" &&
      task != "ruler")
    throw usage_error("unknown task '" + task + "' (niah, fidelity, jsonl, leval, longbench, ruler)");
  const std::string out = a.required("out");
  const long long limit = a.integer_in("limit", 0, 0, k_max_tokens);
  if (limit < 0) throw usage_error("--limit must be >= 0 (0: all samples)");
  const bool separate = a.flag("separate"), quiet = a.flag("quiet");
  const long long seed = a.integer_in("seed", 0, 0, std::numeric_limits<long long>::max());
  if (seed < 0) throw usage_error("--seed must be >= 0");
  const std::string data_dir = a.str("data-dir", std::string(KVTRIM_SOURCE_DIR) + "/../shared/data");

  // Budgets first, so a bad one is reported before the model loads.
  std::vector<std::string> budget_labels;
  std::vector<kvtrim::budget> budgets;
  for (long long b : int_list(a, "budgets", a.has("ratios") ? "" : "16,32,64,128,256")) {
    if (b < 1) throw usage_error("--budgets: " + std::to_string(b) + " must be >= 1");
    budget_labels.push_back(std::to_string(b));
    budgets.push_back(kvtrim::budget::tokens(b));
  }
  for (const auto& r : a.list("ratios")) {
    const double x = args::parse_real("ratios", r);
    if (!(x > 0 && x <= 1)) throw usage_error("--ratios: '" + r + "' outside (0, 1]");
    budget_labels.push_back("r" + r);
    budgets.push_back(kvtrim::budget::ratio(x));
  }
  if (budgets.empty()) throw usage_error("give --budgets and/or --ratios");

  const loaded_host h = load_host(a.str("model"), a.str("profile"), quiet);
  const kvtrim::model_shape shape = kvhost::kvtrim_shape(h.mdl->config());
  const int64_t ctx = h.mdl->config().n_ctx;

  // Methods x budgets, each validated now (a method that needs a missing profile fails here).
  std::vector<std::string> methods =
      a.list("methods", default_methods(h.prof != nullptr));
  for (const auto& name : methods) method_info_of(name);  // unknown: one line, the accepted names
  // What the capture keeps beyond K, V and the window: only what a listed method reads.
  bool need_sums = false, need_queries = false;
  for (const auto& name : methods) {
    need_sums = need_sums || method_info_of(name).needs_attention_sums;
    need_queries = need_queries || method_info_of(name).needs_prompt_queries;
  }
  const auto entries = method_param_entries(a, methods);
  std::string profile_fp = "none";
  if (!h.profile_path.empty()) {
    std::ifstream pf(h.profile_path, std::ios::binary);
    profile_fp = kvhost::fnv_hex(std::string(std::istreambuf_iterator<char>(pf), {}));
  }
  std::vector<config_spec> configs;
  for (const auto& name : methods) {
    kvtrim::method_spec base = method_spec_for(a, name, entries);
    base.prof = h.prof.get();
    if (name == "full") {
      configs.push_back({"full", "full", nullptr, settings_of(nullptr, profile_fp)});
      continue;
    }
    for (size_t i = 0; i < budgets.size(); ++i) {
      kvtrim::method_spec c = base;
      c.target = budgets[i];
      auto m = std::make_unique<kvtrim::method>(kvtrim::make_method(c, shape));
      const std::string settings = settings_of(m.get(), profile_fp);
      configs.push_back({name, budget_labels[i], std::move(m), settings});
    }
  }

  // Samples (deterministic for the options, so a resumed run sees the same ones).
  const long long max_new_opt = a.integer_in("max-new-tokens", 0, 0, 1 << 20);
  std::vector<kvhost::eval_sample> samples;
  nlohmann::json task_options;
  if (task == "niah") {
    kvhost::niah_options o;
    o.lengths.clear();
    for (long long L : int_list(a, "lengths", "1024,2048,4096")) {
      if (L < 128 || L > ctx) throw usage_error("--lengths: " + std::to_string(L) + " outside [128, " + std::to_string(ctx) + "]");
      o.lengths.push_back(L);
    }
    o.depths.clear();
    for (long long d : int_list(a, "depths", "0,50,100")) {
      if (d < 0 || d > 100) throw usage_error("--depths: " + std::to_string(d) + " outside [0, 100] (percent)");
      o.depths.push_back(static_cast<double>(d) / 100.0);
    }
    const auto variants = a.list("variants", "classic,passkey");
    const auto has = [&](const char* v) { return std::find(variants.begin(), variants.end(), v) != variants.end(); };
    o.classic = has("classic");
    o.passkey = has("passkey");
    o.held_out = has("heldout");
    for (const auto& v : variants)
      if (v != "classic" && v != "passkey" && v != "heldout")
        throw usage_error("--variants: '" + v + "' is not classic, passkey or heldout");
    o.haystacks.clear();
    for (long long r : int_list(a, "haystacks", "0")) {
      if (r < 0 || r > 1000000) throw usage_error("--haystacks: rotation " + std::to_string(r) + " outside [0, 1000000]");
      o.haystacks.push_back(static_cast<int>(r));
    }
    o.seed = static_cast<uint64_t>(seed);
    const std::string essays = a.str("data", data_dir + "/pg_essays");
    samples = kvhost::niah_samples(*h.tok, kvhost::load_essays(essays), o);
    task_options = {{"lengths", o.lengths}, {"depths", o.depths}, {"variants", variants},
                    {"haystacks", o.haystacks}, {"essays", essays}};
  } else if (task == "ruler") {
    kvhost::ruler_options o;
    o.tasks = a.list("ruler-tasks");
    for (const auto& t : o.tasks) {
      const auto& names = kvhost::ruler_task_names();
      if (std::find(names.begin(), names.end(), t) == names.end())
        throw usage_error("--ruler-tasks: unknown task '" + t + "'");
    }
    o.lengths.clear();
    for (long long L : int_list(a, "lengths", "1024,2048,4096")) {
      if (L < 256 || L + 128 > ctx)
        throw usage_error("--lengths: " + std::to_string(L) + " outside [256, " + std::to_string(ctx - 128) + "]");
      o.lengths.push_back(L);
    }
    o.samples = a.int_in("samples", 1);
    if (o.samples < 1) throw usage_error("--samples must be >= 1");
    o.seed = static_cast<uint64_t>(seed);
    const std::string essays = a.str("data", data_dir + "/pg_essays");
    samples = kvhost::ruler_samples(*h.tok, kvhost::load_essays(essays), o);
    task_options = {{"tasks", o.tasks}, {"lengths", o.lengths}, {"samples", o.samples}, {"essays", essays}};
  } else if (task == "fidelity") {
    kvhost::fidelity_options o;
    o.lengths.clear();
    for (long long L : int_list(a, "lengths", "2048")) {
      if (L < 16 || L > ctx) throw usage_error("--lengths: " + std::to_string(L) + " outside [16, " + std::to_string(ctx) + "]");
      o.lengths.push_back(L);
    }
    o.passages = a.int_in("passages", 3);
    o.continuation = a.integer("continuation", 64);
    if (o.passages < 1) throw usage_error("--passages must be >= 1");
    if (o.continuation < 2 || o.continuation > 1024) throw usage_error("--continuation must be in [2, 1024]");
    o.seed = static_cast<uint64_t>(seed);
    const std::string essays = a.str("data", data_dir + "/pg_essays");
    samples = kvhost::fidelity_samples(*h.tok, kvhost::load_essays(essays), o);
    for (const auto& s : samples)
      if (static_cast<int64_t>(s.prompt.size() + s.continuation.size()) > ctx)
        throw usage_error("--lengths + --continuation exceed the model context of " + std::to_string(ctx));
    task_options = {{"lengths", o.lengths}, {"passages", o.passages}, {"continuation", o.continuation}, {"essays", essays}};
  } else {
    const int max_new = static_cast<int>(max_new_opt > 0 ? max_new_opt : (task == "longbench" ? 512 : 32));
    const long long max_prompt = a.integer_in("max-prompt-tokens", ctx - max_new, 0, k_max_tokens);
    if (max_prompt < 64 || max_prompt + max_new > ctx)
      throw usage_error("--max-prompt-tokens + generation must fit the context of " + std::to_string(ctx) +
                        " (and the prompt >= 64)");
    if (task == "jsonl") {
      const std::string file = a.required("data");
      int64_t window = 1;  // every sample must be at least as long as the largest window
      for (const auto& c : configs)
        if (c.m) window = std::max<int64_t>(window, c.m->spec().window);
      samples = kvhost::jsonl_samples(*h.tok, file, max_prompt, max_new, "jsonl", window);
      task_options = {{"data", file}};
    } else if (task == "leval") {
      std::vector<std::string> files;
      if (a.has("data")) {
        files.push_back(a.str("data"));
      } else {
        for (const char* f : {"quality", "coursera", "sci_fi", "topic_retrieval_longchat"})
          files.push_back(data_dir + "/leval/" + f + ".jsonl");
      }
      for (const auto& f : files) {
        auto part = kvhost::leval_samples(*h.tok, f, max_prompt, max_new);
        if (limit > 0 && static_cast<long long>(part.size()) > limit) part.resize(static_cast<size_t>(limit));
        samples.insert(samples.end(), part.begin(), part.end());
      }
      task_options = {{"data", files}, {"max_prompt_tokens", max_prompt}};
    } else {
      const std::string dir = a.str("data", data_dir + "/longbench");
      samples = kvhost::longbench_samples(*h.tok, dir, max_prompt, static_cast<int>(max_new_opt));
      task_options = {{"data", dir}, {"max_prompt_tokens", max_prompt}};
    }
    task_options["max_new_tokens"] = max_new;
  }
  if (max_new_opt > 0 && task != "fidelity")
    for (auto& s : samples) s.max_new_tokens = static_cast<int>(max_new_opt);
  if (limit > 0 && task != "leval" && static_cast<long long>(samples.size()) > limit)
    samples.resize(static_cast<size_t>(limit));

  // The output folder: config.json beside the records; a reused folder must hold the same task.
  fs::create_directories(out);
  const std::string config_path = out + "/config.json", records_path = out + "/samples.jsonl";
  nlohmann::json cfg_json = {{"task", task},
                             {"task_options", task_options},
                             {"seed", seed},
                             {"limit", limit},
                             {"methods", methods},
                             {"budgets", budget_labels},
                             {"window", a.integer("window", kvtrim::method_spec{}.window)},
                             {"model", h.path},
                             {"profile", h.profile_path},
                             {"separate", separate},
                             {"samples", samples.size()},
                             {"started", now_iso()}};
  std::string cmdline;
  for (int i = 0; i < argc; ++i) cmdline += (i ? " " : "") + std::string(argv[i]);
  cfg_json["command"] = cmdline;
  if (fs::exists(config_path)) {
    std::ifstream in(config_path);
    const nlohmann::json old = nlohmann::json::parse(in, nullptr, false);
    if (!old.is_discarded() && (!old.is_object() || !old.contains("task") || !old["task"].is_string()))
      throw usage_error(config_path + " is not a kvtrim eval config (no string \"task\"); use another --out");
    if (!old.is_discarded() && old["task"].get<std::string>() != task)
      throw usage_error(out + " holds a '" + old["task"].get<std::string>() + "' run; use another --out for '" + task +
                        "'");
  }
  // Resume: a record is this configuration's when id, method, budget AND settings agree. One made
  // with other settings (or by an older kvtrim, which wrote none) for a configuration of this run
  // is refused before anything is written: rerunning beside it would mix two settings under one
  // method name in the report, and reusing it would report the old settings as the new.
  std::set<std::string> done;
  {
    std::map<std::string, std::string> made;  // id|method|budget -> the settings it was made with
    for (const auto& r : kvhost::read_records(records_path))
      made[r.value("id", "") + "|" + r.value("method", "") + "|" + r.value("budget", "")] =
          r.contains("method_settings") && r["method_settings"].is_string() ? r["method_settings"].get<std::string>()
                                                                             : "(none: written before settings were recorded)";
    for (const auto& sm : samples)
      for (const auto& c : configs) {
        const std::string k = sm.id + "|" + c.method + "|" + c.budget;
        const auto it = made.find(k);
        if (it == made.end()) continue;
        if (it->second != c.settings)
          throw usage_error(records_path + " holds " + c.method + " at budget " + c.budget + " made with settings '" +
                            it->second + "', not this run's '" + c.settings +
                            "'; use another --out (or the same settings) so the two are not mixed");
        done.insert(k + "|" + c.settings);
      }
  }
  kvhost::write_file_atomic(config_path, cfg_json.dump(2) + "\n");
  kvhost::truncate_torn_tail(records_path);  // an interrupted append: its partial line goes
  std::ofstream rec(records_path, std::ios::app);
  if (!rec) throw std::runtime_error("cannot append to " + records_path);

  const auto t_start = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  size_t todo = 0, finished = 0, skipped = 0;
  for (const auto& s : samples)
    for (const auto& c : configs) todo += done.count(s.id + "|" + c.method + "|" + c.budget + "|" + c.settings) ? 0 : 1;
  if (!quiet)
    std::fprintf(stderr, "eval %s: %zu samples x %zu configurations, %zu to run (%zu done before) -> %s\n",
                 task.c_str(), samples.size(), configs.size(), todo, samples.size() * configs.size() - todo, out.c_str());
  double prefill_total = 0;
  int64_t window = 1;
  for (const auto& c : configs)
    if (c.m) window = std::max<int64_t>(window, c.m->spec().window);

  for (size_t si = 0; si < samples.size(); ++si) {
    const auto& s = samples[si];
    std::vector<const config_spec*> pending;
    for (const auto& c : configs)
      if (!done.count(s.id + "|" + c.method + "|" + c.budget + "|" + c.settings)) pending.push_back(&c);
    if (pending.empty()) {
      ++skipped;
      continue;
    }
    const auto t_sample = std::chrono::steady_clock::now();
    const int64_t n = static_cast<int64_t>(s.prompt.size());
    std::unique_ptr<kvhost::prefill_capture> cap;
    double capture_s = 0;
    if (!separate) {
      const auto t0 = std::chrono::steady_clock::now();
      cap = std::make_unique<kvhost::prefill_capture>(
          kvhost::capture_prefill(*h.mdl, s.prompt, window, need_sums, need_queries));
      capture_s = since(t0);
      prefill_total += cap->prefill_s;
    }
    // Fidelity's reference: the full cache's next-token distributions.
    std::vector<std::vector<float>> full_lp;
    std::vector<int> targets(s.continuation.begin() + (s.continuation.empty() ? 0 : 1), s.continuation.end());
    std::vector<float> first_logits;
    if (s.metric == "fidelity") {
      kvhost::kv_store cache;
      if (cap) {
        kvhost::build_cache(*cap, nullptr, cache);
      } else {
        h.mdl->prefill(s.prompt, cache);
      }
      full_lp = kvhost::teacher_forced_logprobs(*h.mdl, cache, s.continuation);
      targets.resize(full_lp.size());
    }
    // L-Eval sci_fi's fact half: the question without the document, once, full cache.
    std::string fact;
    if (!s.fact_prompt.empty()) {
      fact = kvhost::run_generation(*h.mdl, *h.tok, s.fact_prompt, nullptr, s.max_new_tokens, h.stops).answer;
    }
    auto scored = [&](const std::string& answer) { return s.fact_prompt.empty() ? answer : answer + " [fact: " + fact + "]"; };
    for (const config_spec* c : pending) {
      nlohmann::json r = {{"task", s.task}, {"id", s.id}, {"method", c->method}, {"budget", c->budget}};
      r["method_settings"] = c->settings;  // the resume key's last part
      if (c->m) r["window"] = c->m->spec().window;
      r["method_params"] = c->m ? nlohmann::json(c->m->params()) : nlohmann::json::object();
      if (c->m && c->m->info().needs_profile()) r["profile_fingerprint"] = profile_fp;
      for (auto it = s.meta.begin(); it != s.meta.end(); ++it) r[it.key()] = it.value();
      r["prompt_tokens"] = n;
      const auto t_cfg = std::chrono::steady_clock::now();
      if (s.metric == "fidelity") {
        kvhost::kv_store cache;
        double kvtrim_s = 0, prefill_s = 0;
        if (cap) {
          kvtrim_s = kvhost::build_cache(*cap, c->m.get(), cache);
          prefill_s = cap->prefill_s;
        } else {  // a separate compressed prefill
          std::unique_ptr<kvhost::compression_session> sess;
          if (c->m) sess = std::make_unique<kvhost::compression_session>(*c->m, cache, n);
          const auto pr = h.mdl->prefill(s.prompt, cache, sess ? sess->hook() : kvhost::prefill_hook{},
                                         sess ? sess->window() : 8);
          prefill_s = pr.seconds;
          kvtrim_s = sess ? sess->seconds() : 0;
        }
        const size_t kv_bytes = cache.retained_bytes();
        const size_t full_bytes = static_cast<size_t>(n) * static_cast<size_t>(shape.layers * shape.kv_heads) *
                                  cache.bytes_per_row();
        const auto t_dec = std::chrono::steady_clock::now();
        const auto lp = kvhost::teacher_forced_logprobs(*h.mdl, cache, s.continuation);
        double kl = 0, agree = 0;
        for (size_t i = 0; i < lp.size(); ++i) {
          kl += kvhost::kl_divergence(full_lp[i], lp[i]);
          agree += (std::max_element(full_lp[i].begin(), full_lp[i].end()) - full_lp[i].begin()) ==
                           (std::max_element(lp[i].begin(), lp[i].end()) - lp[i].begin())
                       ? 1.0
                       : 0.0;
        }
        const double m = static_cast<double>(std::max<size_t>(1, lp.size()));
        r["budget_tokens"] = c->m ? c->m->spec().target.resolve(n) : n;
        r["kv_bytes"] = kv_bytes;
        r["kv_full_bytes"] = full_bytes;
        r["kv_percent_of_full"] = 100.0 * static_cast<double>(kv_bytes) / static_cast<double>(full_bytes);
        r["score"] = 100.0 * agree / m;
        r["kl"] = kl / m;
        r["ppl"] = kvhost::perplexity(lp, targets);
        r["ppl_full"] = kvhost::perplexity(full_lp, targets);
        r["positions"] = lp.size();
        r["prefill_s"] = prefill_s;
        r["kvtrim_s"] = kvtrim_s;
        r["decode_s"] = since(t_dec);
      } else if (cap) {
        const kvhost::config_run cr = kvhost::run_config(*h.mdl, *cap, c->m.get(), s.max_new_tokens, h.stops);
        const std::string answer = h.tok->decode(std::vector<int>(cr.tokens.begin(), cr.tokens.end()), true);
        r["budget_tokens"] = cr.budget;
        r["kv_bytes"] = cr.kv_bytes;
        r["kv_full_bytes"] = cr.kv_full_bytes;
        r["kv_percent_of_full"] = cr.kv_percent_of_full;
        r["answer"] = answer;
        r["score"] = 100.0 * kvhost::score_answer(s, scored(answer));
        r["prefill_s"] = cap->prefill_s;
        r["kvtrim_s"] = cr.kvtrim_s;
        r["decode_s"] = cr.decode_s;
        r["generated_tokens"] = cr.tokens.size();
      } else {
        const kvhost::run_report rr =
            kvhost::run_generation(*h.mdl, *h.tok, s.prompt, c->m.get(), s.max_new_tokens, h.stops);
        r["budget_tokens"] = rr.budget;
        r["kv_bytes"] = rr.kv_bytes;
        r["kv_full_bytes"] = rr.kv_full_bytes;
        r["kv_percent_of_full"] = rr.kv_percent_of_full;
        r["answer"] = rr.answer;
        r["score"] = 100.0 * kvhost::score_answer(s, scored(rr.answer));
        r["prefill_s"] = rr.prefill_s;
        r["kvtrim_s"] = rr.kvtrim_s;
        r["decode_s"] = rr.decode_s;
        r["generated_tokens"] = rr.tokens.size();
      }
      r["shared_prefill"] = !separate;
      r["config_s"] = since(t_cfg);  // this configuration's own work (separate: its whole run)
      r["reference"] = s.references.empty() ? "" : s.references[0];
      if (!s.fact_prompt.empty()) r["fact_answer"] = fact;
      // A greedy answer cut at max_new_tokens may end inside a multi-byte character (the tokenizer
      // returns raw bytes): write U+FFFD for such bytes rather than throw and lose the shard.
      rec << r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      rec.flush();
      ++finished;
    }
    if (!quiet) {
      const double el = since(t_start);
      const double eta = finished ? el / static_cast<double>(finished) * static_cast<double>(todo - finished) : 0;
      std::fprintf(stderr, "[%zu/%zu] %s (%lld tokens): %zu configs in %.1f s (prefill+capture %.1f s) | %zu/%zu done, "
                   "elapsed %s, ETA %s\n",
                   si + 1, samples.size(), s.id.c_str(), static_cast<long long>(n), pending.size(), since(t_sample),
                   capture_s, finished, todo, hms(el).c_str(), hms(eta).c_str());
    }
  }
  rec.close();
  const double wall = since(t_start);
  cfg_json["finished"] = now_iso();
  cfg_json["wall_s_last_invocation"] = wall;
  cfg_json["configs_run_last_invocation"] = finished;
  kvhost::write_file_atomic(config_path, cfg_json.dump(2) + "\n");
  const auto written = kvhost::render_report(out);
  if (!quiet) {
    std::fprintf(stderr, "done: %zu configurations in %s (%zu samples already complete)\n", finished, hms(wall).c_str(),
                 skipped);
    for (const auto& p : written) std::fprintf(stderr, "  wrote %s\n", p.c_str());
  }
  std::ifstream md(out + "/summary.md");
  std::printf("%s", std::string(std::istreambuf_iterator<char>(md), {}).c_str());
  return 0;
}

}  // namespace kvtools
