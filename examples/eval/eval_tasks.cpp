#include "eval/eval_tasks.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "eval/eval_metrics.hpp"
#include "engine/haystack.hpp"
#include "engine/needle.hpp"

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
  if (o.haystacks.empty()) throw std::invalid_argument("niah: no haystack rotation");
  const auto& held = held_out_needles();
  std::vector<eval_sample> out;
  for (int r : o.haystacks) {
    if (r < 0) throw std::invalid_argument("niah: haystack rotation " + std::to_string(r) + " (need >= 0)");
    const std::string hay = rotated_haystack(haystack, r, o.seed);
    const uint64_t key_seed = o.seed + 1000003ull * static_cast<uint64_t>(r);  // rotation 0: the seed
    const std::string suffix = o.haystacks == std::vector<int>{0} ? "" : "-H" + std::to_string(r);
    size_t next_held = static_cast<size_t>(r);  // a rotation's needles do not depend on the others run
    for (int64_t len : o.lengths) {
      for (double depth : o.depths) {
        for (int variant = 0; variant < 3; ++variant) {
          if ((variant == 0 && !o.classic) || (variant == 1 && !o.passkey) || (variant == 2 && !o.held_out)) continue;
          needle nd = classic_needle();
          eval_sample s;
          s.task = variant == 0 ? "niah_classic" : variant == 1 ? "niah_passkey" : "niah_heldout";
          s.metric = variant == 1 ? "passkey" : "rouge1_recall";
          std::string name = variant == 0 ? "classic" : "passkey";
          if (variant == 1) {
            const std::string key = passkey_for(key_seed, len, depth);
            nd.fact = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
            nd.question = "What is the pass key?";
            nd.answer = key;
            nd.answer_prefix = "The pass key is";
          } else if (variant == 2) {
            const named_needle& h = held[next_held++ % held.size()];
            nd = h.nd;
            name = h.name;
          }
          const needle_prompt p = build_needle_prompt(tok, hay, len, depth, nd);
          s.id = s.task + "-L" + std::to_string(len) + "-D" + depth_label(depth) + suffix;
          s.prompt = p.tokens;
          s.references = {nd.answer};
          s.max_new_tokens = 32;
          s.meta = {{"length", len},
                    {"depth", depth},
                    {"haystack", r},
                    {"needle", name},
                    {"prompt_tokens", p.tokens.size()},
                    {"needle_char", p.needle_char},
                    {"document_chars", p.document_chars}};
          out.push_back(std::move(s));
        }
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
      s.id = "fidelity-L" + std::to_string(len) + "-P" + std::to_string(p) +
             (o.seed ? "-S" + std::to_string(o.seed) : "");
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
}  // namespace

std::vector<int32_t> encode32(const tokenizer& tok, const std::string& text) {
  const std::vector<int> ids = tok.encode(text, true);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

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
