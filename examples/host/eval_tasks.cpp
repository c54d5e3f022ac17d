#include "host/eval_tasks.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "host/eval_metrics.hpp"
#include "host/haystack.hpp"

namespace kvhost {

namespace fs = std::filesystem;

std::string load_essays(const std::string& dir) {
  if (!fs::is_directory(dir)) throw std::runtime_error("essay folder " + dir + " not found (see --data-dir)");
  return load_text_dir(dir);
}

uint64_t mix_seed(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string passkey_for(uint64_t seed, int64_t length, double depth) {
  const uint64_t h = mix_seed(mix_seed(seed) ^ mix_seed(static_cast<uint64_t>(length) * 1000 +
                                                        static_cast<uint64_t>(std::lround(depth * 100))));
  return std::to_string(10000 + h % 90000);  // 5 digits
}

namespace {
std::string depth_label(double d) { return std::to_string(static_cast<int>(std::lround(d * 100))); }
}  // namespace

std::vector<eval_sample> niah_samples(const tokenizer& tok, const std::string& haystack, const niah_options& o) {
  for (double d : o.depths)
    if (!(d >= 0.0 && d <= 1.0)) throw std::invalid_argument("niah: depth " + std::to_string(d) + " outside [0, 1]");
  std::vector<eval_sample> out;
  for (int64_t len : o.lengths) {
    for (double depth : o.depths) {
      for (int variant = 0; variant < 2; ++variant) {
        if ((variant == 0 && !o.classic) || (variant == 1 && !o.passkey)) continue;
        needle nd = classic_needle();
        eval_sample s;
        s.task = variant == 0 ? "niah_classic" : "niah_passkey";
        s.metric = variant == 0 ? "rouge1_recall" : "passkey";
        if (variant == 1) {
          const std::string key = passkey_for(o.seed, len, depth);
          nd.fact = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
          nd.question = "What is the pass key?";
          nd.answer = key;
          nd.answer_prefix = "The pass key is";
        }
        const needle_prompt p = build_needle_prompt(tok, haystack, len, depth, nd);
        s.id = s.task + "-L" + std::to_string(len) + "-D" + depth_label(depth);
        s.prompt = p.tokens;
        s.references = {nd.answer};
        s.max_new_tokens = 32;
        s.meta = {{"length", len},
                  {"depth", depth},
                  {"prompt_tokens", p.tokens.size()},
                  {"needle_char", p.needle_char},
                  {"document_chars", p.document_chars}};
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

std::vector<eval_sample> fidelity_samples(const tokenizer& tok, const std::string& text, const fidelity_options& o) {
  if (o.continuation < 2)
    throw std::invalid_argument("fidelity: continuation of " + std::to_string(o.continuation) + " tokens (need >= 2)");
  std::vector<eval_sample> out;
  for (int64_t len : o.lengths) {
    if (len < 16) throw std::invalid_argument("fidelity: length " + std::to_string(len) + " (need >= 16)");
    const size_t span = static_cast<size_t>(len + o.continuation) * 8;  // chars: tokens are ~4-5 chars
    if (text.size() < span + 1) throw std::invalid_argument("fidelity: text too short for " + std::to_string(len));
    for (int p = 0; p < o.passages; ++p) {
      size_t at = mix_seed(o.seed * 7919 + static_cast<uint64_t>(len) * 31 + static_cast<uint64_t>(p)) %
                  (text.size() - span);
      const size_t para = text.find("\n\n", at);  // start at a paragraph
      if (para != std::string::npos && para + span < text.size()) at = para + 2;
      const std::vector<int> ids = tok.encode(text.substr(at, span), false);
      if (static_cast<int64_t>(ids.size()) < len + o.continuation)
        throw std::runtime_error("fidelity: passage at char " + std::to_string(at) + " too short");
      eval_sample s;
      s.task = "fidelity";
      s.metric = "fidelity";
      s.id = "fidelity-L" + std::to_string(len) + "-P" + std::to_string(p);
      s.prompt.assign(ids.begin(), ids.begin() + len);
      s.continuation.assign(ids.begin() + len, ids.begin() + len + o.continuation);
      s.max_new_tokens = 0;
      s.meta = {{"length", len}, {"passage_char", at}, {"continuation", o.continuation}};
      out.push_back(std::move(s));
    }
  }
  return out;
}

std::vector<int32_t> truncate_middle(const std::vector<int32_t>& t, int64_t max_tokens) {
  if (max_tokens < 2) throw std::invalid_argument("truncate_middle: max " + std::to_string(max_tokens) + " < 2");
  if (static_cast<int64_t>(t.size()) <= max_tokens) return t;
  const auto half = static_cast<size_t>(max_tokens / 2), tail = static_cast<size_t>(max_tokens) - half;
  std::vector<int32_t> out(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(half));
  out.insert(out.end(), t.end() - static_cast<std::ptrdiff_t>(tail), t.end());
  return out;
}

std::vector<eval_sample> jsonl_samples(const tokenizer& tok, const std::string& path, int64_t max_prompt_tokens,
                                       int max_new_tokens, const std::string& task, int64_t min_prompt_tokens) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<eval_sample> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw std::runtime_error(where + ": not JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("input") || !j["input"].is_string())
      throw std::runtime_error(where + ": needs a string field 'input'");
    if (!j.contains("outputs") || !j["outputs"].is_array() || j["outputs"].empty())
      throw std::runtime_error(where + ": needs a non-empty list 'outputs'");
    eval_sample s;
    s.task = task;
    s.metric = "string_match_all";
    for (const auto& o : j["outputs"]) {
      if (!o.is_string()) throw std::runtime_error(where + ": 'outputs' must hold strings");
      s.references.push_back(o.get<std::string>());
    }
    std::string text = j["input"].get<std::string>();
    if (text.empty()) throw std::runtime_error(where + ": 'input' is empty");
    if (j.contains("answer_prefix") && j["answer_prefix"].is_string()) text += j["answer_prefix"].get<std::string>();
    const std::vector<int> ids = tok.encode(text, true);
    s.prompt = truncate_middle(std::vector<int32_t>(ids.begin(), ids.end()), max_prompt_tokens);
    if (static_cast<int64_t>(s.prompt.size()) < std::max<int64_t>(1, min_prompt_tokens))
      throw std::runtime_error(where + ": the prompt has " + std::to_string(s.prompt.size()) +
                               " tokens, fewer than the window of " + std::to_string(min_prompt_tokens) +
                               " the methods keep");
    const std::string index = j.contains("index") ? j["index"].dump() : std::to_string(out.size());
    s.id = task + "-" + index;
    s.max_new_tokens = max_new_tokens;
    s.meta = {{"line", lineno}, {"prompt_tokens", s.prompt.size()}, {"input_tokens", ids.size()}};
    if (j.contains("length")) s.meta["length"] = j["length"];
    out.push_back(std::move(s));
  }
  if (out.empty()) throw std::runtime_error(path + ": no samples");
  return out;
}

namespace {
// The document (already encoded as `ids`) cut in the middle so that wrap(doc) fits max_tokens.
std::string fit_document(const tokenizer& tok, const std::string& doc, const std::vector<int>& ids,
                         int64_t max_tokens, const std::function<std::string(const std::string&)>& wrap) {
  const int64_t overhead = static_cast<int64_t>(tok.encode(wrap(""), true).size());
  const int64_t room = max_tokens - overhead - 2;  // 2: re-tokenisation at the seams
  if (room < 16) throw std::invalid_argument("prompt template alone needs " + std::to_string(overhead) + " tokens");
  if (static_cast<int64_t>(ids.size()) <= room) return doc;
  const std::vector<int32_t> cut = truncate_middle(std::vector<int32_t>(ids.begin(), ids.end()), room);
  return tok.decode(std::vector<int>(cut.begin(), cut.end()));
}
std::vector<int32_t> encode32(const tokenizer& tok, const std::string& text) {
  const std::vector<int> ids = tok.encode(text, true);
  return std::vector<int32_t>(ids.begin(), ids.end());
}
}  // namespace

std::vector<eval_sample> leval_samples(const tokenizer& tok, const std::string& path, int64_t max_prompt_tokens,
                                       int max_new_tokens) {
  const std::string name = fs::path(path).stem().string();
  const bool mc = name == "quality" || name == "coursera", judge = name == "sci_fi",
             topic = name.find("topic_retrieval") != std::string::npos;
  if (!mc && !judge && !topic)
    throw std::invalid_argument("leval: " + path + " is not quality, coursera, sci_fi or topic_retrieval_longchat");
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  // L-Eval's system prompt for exam tasks (Baselines/LEval_config.py, get_sys_prompt).
  const std::string sys =
      "Now you are given a very long document. Please follow the instruction based on this document. For "
      "multi-choice questions, there could be a single correct option or multiple correct options. Please only "
      "provide the letter corresponding to the answer (like A or AB) when answering. For other questions, please "
      "directly give the concise and accurate answer.";
  std::vector<eval_sample> out;
  std::string line;
  int64_t doc = 0;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    const std::string document = j.at("input").get<std::string>();
    const std::vector<int> doc_ids = tok.encode(document, false);
    const auto& insts = j.at("instructions");
    const auto& outs = j.at("outputs");
    for (size_t q = 0; q < insts.size() && q < outs.size(); ++q) {
      const std::string inst = insts[q].get<std::string>();
      std::function<std::string(const std::string&)> wrap;
      if (topic) {
        wrap = [&](const std::string& d) {
          return tok.apply_chat_template({{"system", sys}, {"user", d + "\n\n" + inst}}, true);
        };
      } else {
        wrap = [&](const std::string& d) {
          return tok.apply_chat_template({{"system", sys},
                                          {"user", "Document is as follows. " + d + " \nQuestion: " + inst +
                                                       ".  Please directly give answer without any additonal output "
                                                       "or explanation "}},
                                         true) +
                 "\nAnswer:";
        };
      }
      eval_sample s;
      s.task = "leval_" + name;
      s.id = s.task + "-d" + std::to_string(doc) + "-q" + std::to_string(q);
      s.metric = judge ? "leval_judge" : (mc ? (name == "coursera" ? "leval_coursera" : "leval_mc") : "leval_em");
      s.references = {outs[q].get<std::string>()};
      s.max_new_tokens = max_new_tokens;
      s.prompt = encode32(tok, wrap(fit_document(tok, document, doc_ids, max_prompt_tokens, wrap)));
      if (judge) {
        std::string fq = inst;
        const std::string from = "based on the world described in the document.";
        if (const auto at = fq.find(from); at != std::string::npos)
          fq.replace(at, from.size(), "based on the real-world knowledge and facts up until your last training");
        s.fact_prompt = encode32(tok, tok.apply_chat_template({{"user", fq}}, true) + "\nAnswer:");
      }
      s.meta = {{"document", doc}, {"question", q}, {"prompt_tokens", s.prompt.size()}};
      out.push_back(std::move(s));
    }
    ++doc;
  }
  if (out.empty()) throw std::runtime_error(path + ": no questions");
  return out;
}

std::vector<eval_sample> longbench_samples(const tokenizer& tok, const std::string& dir, int64_t max_prompt_tokens,
                                           int max_new_override) {
  auto read_json = [&](const std::string& f) {
    std::ifstream in(dir + "/" + f);
    if (!in) throw std::runtime_error("cannot open " + dir + "/" + f);
    return nlohmann::json::parse(in);
  };
  const std::string tmpl = read_json("dataset2prompt.json").at("multi_news").get<std::string>();
  const int max_new = max_new_override > 0 ? max_new_override : read_json("dataset2maxlen.json").at("multi_news").get<int>();
  std::ifstream in(dir + "/multi_news.jsonl");
  if (!in) throw std::runtime_error("cannot open " + dir + "/multi_news.jsonl");
  std::vector<eval_sample> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    // LongBench: format the template, cut the tokens in the middle to max_length, then the chat template.
    std::string prompt = tmpl;
    const auto at = prompt.find("{context}");
    prompt.replace(at, 9, j.at("context").get<std::string>());
    const std::vector<int> ids = tok.encode(prompt, false);
    const int64_t overhead = static_cast<int64_t>(tok.encode(tok.apply_chat_template({{"user", ""}}, true), true).size());
    const auto cut = truncate_middle(std::vector<int32_t>(ids.begin(), ids.end()), max_prompt_tokens - overhead - 2);
    prompt = tok.decode(std::vector<int>(cut.begin(), cut.end()));
    eval_sample s;
    s.task = "longbench_multi_news";
    s.id = s.task + "-" + j.value("_id", std::to_string(out.size()));
    s.metric = "rouge_l";
    for (const auto& a : j.at("answers")) s.references.push_back(a.get<std::string>());
    s.max_new_tokens = max_new;
    s.prompt = encode32(tok, tok.apply_chat_template({{"user", prompt}}, true));
    s.meta = {{"prompt_tokens", s.prompt.size()}, {"input_tokens", ids.size()}};
    out.push_back(std::move(s));
  }
  return out;
}

double score_answer(const eval_sample& s, const std::string& answer) {
  if (s.references.empty()) throw std::invalid_argument("score_answer: sample " + s.id + " has no references");
  if (s.metric == "rouge1_recall") return needle_recall(answer, s.references[0]);
  if (s.metric == "passkey") return passkey_match(answer, s.references[0]);
  if (s.metric == "string_match_all") return string_match_all(answer, s.references);
  if (s.metric == "rouge_l") {
    double best = 0;
    for (const auto& r : s.references) best = std::max(best, rouge_l_f(answer, r));
    return best;
  }
  if (s.metric == "leval_mc" || s.metric == "leval_coursera")
    return leval_exact_match(leval_mc_output(answer, s.metric == "leval_coursera"), leval_mc_gt(s.references[0]));
  if (s.metric == "leval_em") return leval_exact_match(answer, s.references[0]);
  if (s.metric == "leval_judge") return leval_judge(answer, s.references[0]);  // answer carries " [fact: ...]"
  throw std::invalid_argument("score_answer: metric '" + s.metric + "' of sample " + s.id + " is not an answer score");
}

}  // namespace kvhost

// ---- RULER-style synthetic tasks ----------------------------------------------------------------

namespace kvhost {

namespace {

struct rng {
  uint64_t x;
  uint64_t next() { return x = mix_seed(x); }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

const char* k_adjectives[] = {"quiet", "amber", "brave", "cold", "dusty", "eager", "fancy", "gentle", "hollow",
                              "icy", "jolly", "kind", "lively", "misty", "noble", "odd", "proud", "rapid",
                              "silent", "tidy", "vast", "wild", "young", "zesty"};
const char* k_nouns[] = {"river", "falcon", "garden", "hammer", "island", "jacket", "kettle", "lantern", "meadow",
                         "needle", "orchard", "pepper", "quarry", "rocket", "saddle", "tunnel", "valley", "window",
                         "yogurt", "zebra", "anchor", "basket", "candle", "dragon"};

std::string word_key(rng& r) {
  return std::string(k_adjectives[r.below(24)]) + "-" + k_nouns[r.below(24)];
}
std::string number_value(rng& r) { return std::to_string(1000000 + r.below(9000000)); }
std::string uuid_value(rng& r) {
  static const char* hex = "0123456789abcdef";
  std::string u;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) u += '-';
    u += hex[r.below(16)];
  }
  return u;
}

const char* k_noise = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

// Sentences of the essays from a seeded offset.
std::vector<std::string> essay_units(const std::string& essays, rng& r, size_t count) {
  std::vector<std::string> out;
  size_t at = r.below(essays.size() / 2);
  while (out.size() < count) {
    const size_t end = essays.find(". ", at);
    if (end == std::string::npos) {
      at = 0;
      continue;
    }
    std::string s = essays.substr(at, end + 1 - at);
    for (char& c : s)
      if (c == '\n') c = ' ';
    if (s.find_first_not_of(' ') != std::string::npos) out.push_back(s);
    at = end + 2;
  }
  return out;
}

// The largest k in [1, hi] whose build(k) fits `target` tokens (a few encodes: scaled guess, then steps).
template <class F>
std::string fit_tokens(const tokenizer& tok, int64_t target, size_t hi, F build) {
  auto count = [&](size_t k) { return static_cast<int64_t>(tok.encode(build(k), true).size()); };
  size_t k = std::min<size_t>(hi, 64);
  for (int it = 0; it < 6; ++it) {
    const int64_t n = count(k);
    const size_t next = std::max<size_t>(1, std::min<size_t>(hi, static_cast<size_t>(static_cast<double>(k) *
                                                                                    static_cast<double>(target) /
                                                                                    static_cast<double>(n) * 0.99)));
    if (next == k) break;
    k = next;
  }
  while (k > 1 && count(k) > target) k = k * 97 / 100;
  const std::string text = build(k);
  if (static_cast<int64_t>(tok.encode(text, true).size()) > target)
    throw std::invalid_argument("ruler: " + std::to_string(target) + " tokens are too few for this task's fixed part");
  return text;
}

}  // namespace

const std::vector<std::string>& ruler_task_names() {
  static const std::vector<std::string> n = {"niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
                                             "niah_multikey_2", "niah_multikey_3", "niah_multivalue",
                                             "niah_multiquery", "vt", "cwe", "fwe"};
  return n;
}

std::vector<eval_sample> ruler_samples(const tokenizer& tok, const std::string& essays, const ruler_options& o) {
  const auto& all = ruler_task_names();
  const std::vector<std::string> tasks = o.tasks.empty() ? all : o.tasks;
  for (const auto& t : tasks)
    if (std::find(all.begin(), all.end(), t) == all.end()) throw std::invalid_argument("ruler: unknown task '" + t + "'");
  std::vector<eval_sample> out;
  for (const auto& task : tasks) {
    for (int64_t len : o.lengths) {
      for (int si = 0; si < o.samples; ++si) {
        rng r{mix_seed(o.seed) ^ mix_seed(std::hash<std::string>{}(task)) ^ mix_seed(static_cast<uint64_t>(len) * 131 + si)};
        eval_sample s;
        s.task = "ruler_" + task;
        s.id = s.task + "-L" + std::to_string(len) + "-S" + std::to_string(si);
        s.metric = "string_match_all";
        s.max_new_tokens = 64;
        std::string user, prefix;
        const int64_t room = len - 8;  // chat markup tokens beyond the user text are counted by fit_tokens
        auto chat = [&](const std::string& u, const std::string& p) {
          return tok.apply_chat_template({{"user", u}}, true) + p;
        };
        if (task.rfind("niah", 0) == 0) {
          const bool noise = task == "niah_single_1" || task == "niah_multikey_2";
          const bool uuid_val = task == "niah_single_3" || task == "niah_multikey_3";
          const bool uuid_key = task == "niah_multikey_3";
          const int n_keys = task == "niah_multikey_1" ? 4 : (task == "niah_multiquery" ? 4 : 1);
          const int n_vals = task == "niah_multivalue" ? 4 : 1;
          // Distractor needles fill a "haystack of needles", scaled to the length (RULER's need the room).
          const int distract = (task == "niah_multikey_2" || task == "niah_multikey_3")
                                   ? static_cast<int>(std::clamp<int64_t>(len / 150, 3, 40))
                                   : 0;
          const std::string kind = uuid_val ? "uuids" : "numbers";
          std::vector<std::string> keys, needles;
          std::vector<std::vector<std::string>> vals;
          for (int k = 0; k < n_keys + distract; ++k) {
            std::string key;
            do key = uuid_key ? uuid_value(r) : word_key(r);
            while (std::find(keys.begin(), keys.end(), key) != keys.end());
            keys.push_back(key);
            vals.emplace_back();
            for (int v = 0; v < n_vals; ++v) {
              vals.back().push_back(uuid_val ? uuid_value(r) : number_value(r));
              needles.push_back("One of the special magic " + kind + " for " + key + " is: " + vals.back().back() + ".");
            }
          }
          // Queried: the first key (multiquery: the first 4); multikey_1's other 3 keys are distractors.
          const int n_query = task == "niah_multiquery" ? 4 : 1;
          std::string query;
          for (int q = 0; q < n_query; ++q) {
            query += (q ? (q + 1 == n_query ? ", and " : ", ") : "") + keys[size_t(q)];
            for (const auto& v : vals[size_t(q)]) s.references.push_back(v);
          }
          const std::vector<std::string> hay =
              noise ? std::vector<std::string>(4096, k_noise) : essay_units(essays, r, 4096);
          // Needle slots: seeded positions among the haystack units (fractions of its length).
          std::vector<double> where;
          for (size_t i = 0; i < needles.size(); ++i) where.push_back(static_cast<double>(r.below(1000)) / 1000.0);
          const std::string head = "Some special magic " + kind + " are hidden within the following text. Make sure "
                                   "to memorize it. I will quiz you about the " + kind + " afterwards.\n";
          const std::string tail = "\nWhat " + std::string(s.references.size() > 1 ? "are all" : "is") +
                                   " the special magic " + kind + " for " + query + " mentioned in the provided text?";
          prefix = " The special magic " + kind + " for " + query + " mentioned in the provided text " +
                   (s.references.size() > 1 ? "are" : "is");
          auto build = [&](size_t k) {
            std::vector<std::string> units(hay.begin(), hay.begin() + static_cast<std::ptrdiff_t>(k));
            std::vector<std::pair<size_t, size_t>> at;  // (unit index, needle)
            for (size_t i = 0; i < needles.size(); ++i) at.push_back({static_cast<size_t>(where[i] * k), i});
            std::sort(at.rbegin(), at.rend());
            for (const auto& [u, i] : at) units.insert(units.begin() + static_cast<std::ptrdiff_t>(u), needles[i]);
            std::string ctx;
            for (const auto& u : units) ctx += (ctx.empty() ? "" : " ") + u;
            return chat(head + ctx + tail, prefix);
          };
          const std::string text = fit_tokens(tok, room, hay.size(), build);
          s.prompt = encode32(tok, text);
          s.meta = {{"length", len}, {"keys", n_keys + distract}, {"values", n_vals}};
        } else if (task == "vt") {
          // One chain of 4 hops: VAR A = 12345, VAR B = VAR A, ... among noise.
          const std::string value = std::to_string(10000 + r.below(90000));
          std::vector<std::string> names, stmts;
          for (int i = 0; i < 5; ++i) {
            std::string v;
            for (int c = 0; c < 5; ++c) v += static_cast<char>('A' + r.below(26));
            names.push_back(v);
            stmts.push_back("VAR " + v + " = " + (i == 0 ? value : "VAR " + names[size_t(i - 1)]) + ".");
          }
          s.references = names;
          std::vector<double> where;
          for (size_t i = 0; i < stmts.size(); ++i) where.push_back((static_cast<double>(i) + static_cast<double>(r.below(900)) / 1000.0) / 5.0);
          const std::string head = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n";
          const std::string tail = "\nQuestion: Find all variables that are assigned the value " + value +
                                   " in the text above.";
          prefix = " Answer: According to the chain(s) of variable assignment in the text above, 5 variables are "
                   "assigned the value " + value + ", they are: ";
          auto build = [&](size_t k) {
            std::vector<std::string> units(k, k_noise);
            for (size_t i = stmts.size(); i-- > 0;) units.insert(units.begin() + static_cast<std::ptrdiff_t>(where[i] * k), stmts[i]);
            std::string ctx;
            for (const auto& u : units) ctx += (ctx.empty() ? "" : " ") + u;
            return chat(head + ctx + tail, prefix);
          };
          s.prompt = encode32(tok, fit_tokens(tok, room, 4096, build));
          s.meta = {{"length", len}, {"hops", 4}};
        } else if (task == "cwe") {
          // 10 common words x f, the rest x 3 (f = 30 at 4.5k+ tokens, fewer below), shuffled, numbered.
          const int f_common = static_cast<int>(std::clamp<int64_t>(len / 150, 5, 30)), f_rare = std::min(3, f_common - 2);
          std::vector<std::string> vocab;
          for (const char* a : k_adjectives)
            for (const char* n : k_nouns) vocab.push_back(std::string(a) + n);
          for (size_t i = vocab.size(); i > 1; --i) std::swap(vocab[i - 1], vocab[r.below(i)]);
          s.references.assign(vocab.begin(), vocab.begin() + 10);
          const uint64_t shuffle_seed = r.next();
          auto build = [&](size_t k) {  // k: uncommon words
            std::vector<std::string> words;
            for (size_t i = 0; i < 10; ++i)
              for (int c = 0; c < f_common; ++c) words.push_back(vocab[i]);
            for (size_t i = 0; i < k && 10 + i < vocab.size(); ++i)
              for (int c = 0; c < f_rare; ++c) words.push_back(vocab[10 + i]);
            rng sr{shuffle_seed};
            for (size_t i = words.size(); i > 1; --i) std::swap(words[i - 1], words[sr.below(i)]);
            std::string list;
            for (size_t i = 0; i < words.size(); ++i) list += std::to_string(i + 1) + ". " + words[i] + " ";
            return chat("Below is a numbered list of words. In these words, some appear more often than others. "
                        "Memorize the ones that appear most often.\n" + list +
                        "\nQuestion: What are the 10 most common words in the above list?",
                        " Answer: The top 10 words that appear most often in the list are:");
          };
          s.prompt = encode32(tok, fit_tokens(tok, room, vocab.size() - 10, build));
          s.max_new_tokens = 120;
          s.meta = {{"length", len}};
        } else {  // fwe: coded words with Zipf-like counts; the 3 most frequent are asked
          std::vector<std::string> vocab;
          for (int i = 0; i < 100; ++i) {
            std::string w;
            for (int c = 0; c < 5; ++c) w += static_cast<char>('a' + r.below(26));
            vocab.push_back(w);
          }
          s.references.assign(vocab.begin(), vocab.begin() + 3);
          const uint64_t shuffle_seed = r.next();
          auto build = [&](size_t k) {  // k: total words; word i appears ~ k / (i+1)^2 times
            std::vector<std::string> words;
            double z = 0;
            for (size_t i = 0; i < vocab.size(); ++i) z += 1.0 / static_cast<double>((i + 1) * (i + 1));
            for (size_t i = 0; i < vocab.size(); ++i) {
              const auto c = static_cast<size_t>(static_cast<double>(k) / z / static_cast<double>((i + 1) * (i + 1)));
              for (size_t j = 0; j < std::max<size_t>(1, c); ++j) words.push_back(vocab[i]);
            }
            rng sr{shuffle_seed};
            for (size_t i = words.size(); i > 1; --i) std::swap(words[i - 1], words[sr.below(i)]);
            std::string text;
            for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
            return chat("Read the following coded text and track the frequency of each coded word. Find the three "
                        "most frequently appeared coded words. " + text +
                        "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the "
                        "three most frequently appeared words in the above coded text?",
                        " Answer: According to the coded text above, the three most frequently appeared words are:");
          };
          s.prompt = encode32(tok, fit_tokens(tok, room, 20000, build));
          s.max_new_tokens = 50;
          s.meta = {{"length", len}};
        }
        out.push_back(std::move(s));
      }
    }
  }
  return out;
}

}  // namespace kvhost
