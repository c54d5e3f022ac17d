#include "engine/needle.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <stdexcept>

namespace kvhost {

needle classic_needle() {
  return {"The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a "
          "sunny day.",
          "What is the best thing to do in San Francisco?",
          "eat a sandwich and sit in Dolores Park on a sunny day",
          "The best thing to do in San Francisco is"};
}

namespace {

// The frame both splices share: the ChatML user turn around `doc`, the assistant's turn primed.
std::string frame(const tokenizer& tok, const std::string& doc, const needle& nd, const std::string& instruction) {
  const std::string user = "Read the document and answer the question.\n\n<document>\n" + doc +
                           "\n</document>\n\nQuestion: " + nd.question + " " + instruction;
  return tok.apply_chat_template({{"user", user}}, true) + nd.answer_prefix;
}

needle_prompt splice_text(const tokenizer& tok, const haystack_tokens& haystack, int64_t target_tokens, double depth,
                          const needle& nd, const std::string& instruction) {
  const int64_t overhead = static_cast<int64_t>(tok.encode(frame(tok, nd.fact, nd, instruction), true).size());
  if (target_tokens <= overhead + 16)
    throw needle_prompt_too_short("needle prompt of " + std::to_string(target_tokens) +
                                      " tokens is too short (the question alone takes " + std::to_string(overhead) + ")",
                                  overhead);
  // The haystack's first (target - overhead) tokens, decoded back to text.
  const std::vector<int32_t> ids = haystack(target_tokens - overhead);
  std::string doc = tok.decode(std::vector<int>(ids.begin(), ids.end()));
  // Insert at the depth, moved back to the end of the previous sentence.
  auto at = static_cast<size_t>(depth * static_cast<double>(doc.size()));
  if (depth >= 1.0) {
    at = doc.size();
  } else {
    while (at > 0 && !(doc[at - 1] == '.' || doc[at - 1] == '\n')) --at;
  }
  const std::string sep = (at == 0 || doc[at - 1] == '\n') ? "" : " ";
  doc.insert(at, sep + nd.fact + (at < doc.size() ? " " : ""));
  needle_prompt p;
  p.depth = depth;
  p.needle_char = static_cast<int64_t>(at + sep.size());
  p.document_chars = static_cast<int64_t>(doc.size());
  p.text = frame(tok, doc, nd, instruction);
  const std::vector<int> t = tok.encode(p.text, true);
  p.tokens.assign(t.begin(), t.end());
  return p;
}

needle_prompt splice_tokens(const tokenizer& tok, const haystack_tokens& haystack, int64_t target_tokens,
                            double depth, const needle& nd, const std::string& instruction) {
  const std::string marker = "\x01DOC\x01";
  const std::string text = frame(tok, marker, nd, instruction);
  const size_t at = text.find(marker);
  const std::vector<int> head = tok.encode(text.substr(0, at), true);
  const std::vector<int> tail = tok.encode(text.substr(at + marker.size()), true);
  const std::vector<int> fact_sp = tok.encode(" " + nd.fact, false), fact_nl = tok.encode(nd.fact, false);
  const int64_t overhead = static_cast<int64_t>(head.size() + tail.size() + fact_sp.size());
  if (target_tokens < overhead + 32)
    throw needle_prompt_too_short("needle prompt of " + std::to_string(target_tokens) +
                                      " tokens is too short (its question and fact take " + std::to_string(overhead) +
                                      " tokens)",
                                  overhead);
  const std::vector<int32_t> hay = haystack(target_tokens - overhead);
  auto ends_sentence = [&](int32_t t) {
    const std::string s = tok.decode({t});
    if (s.empty()) return false;
    const char c = s.back();
    return c == '.' || c == '!' || c == '?' || c == '\n';
  };
  const int64_t m = static_cast<int64_t>(hay.size());
  int64_t p = depth >= 1.0 ? m : static_cast<int64_t>(depth * static_cast<double>(m));
  while (p > 0 && p < m && !ends_sentence(hay[static_cast<size_t>(p - 1)])) --p;
  const bool newline = p == 0 || tok.decode({hay[static_cast<size_t>(p - 1)]}).back() == '\n';
  const std::vector<int>& fact = newline ? fact_nl : fact_sp;
  needle_prompt out;
  out.depth = depth;
  out.tokens.assign(head.begin(), head.end());
  out.tokens.insert(out.tokens.end(), hay.begin(), hay.begin() + p);
  out.span_begin = static_cast<int64_t>(out.tokens.size());
  out.tokens.insert(out.tokens.end(), fact.begin(), fact.end());
  out.span_end = static_cast<int64_t>(out.tokens.size());
  out.tokens.insert(out.tokens.end(), hay.begin() + p, hay.end());
  out.tokens.insert(out.tokens.end(), tail.begin(), tail.end());
  return out;
}

}  // namespace

needle_prompt build_needle_prompt(const tokenizer& tok, const haystack_tokens& haystack, int64_t target_tokens,
                                  double depth, const needle& nd, const needle_layout& layout) {
  if (depth < 0.0 || depth > 1.0)
    throw std::invalid_argument("needle depth " + std::to_string(depth) + " outside [0, 1]");
  return layout.splice == needle_splice::text ? splice_text(tok, haystack, target_tokens, depth, nd, layout.instruction)
                                              : splice_tokens(tok, haystack, target_tokens, depth, nd, layout.instruction);
}

needle_prompt build_needle_prompt(const tokenizer& tok, const std::string& haystack, int64_t target_tokens,
                                  double depth, const needle& nd) {
  const haystack_tokens first = [&](int64_t n) {
    // About 8 characters a token at most: enough text for n tokens without encoding it all.
    const std::vector<int> ids = tok.encode(haystack.substr(0, static_cast<size_t>(target_tokens) * 8), false);
    if (static_cast<int64_t>(ids.size()) < n)
      throw std::invalid_argument("haystack too short for a " + std::to_string(target_tokens) + "-token prompt");
    return std::vector<int32_t>(ids.begin(), ids.begin() + n);
  };
  return build_needle_prompt(tok, first, target_tokens, depth, nd, needle_layout{});
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  std::string w;
  for (char c : s + " ") {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!w.empty()) {
      out.push_back(w);
      w.clear();
    }
  }
  return out;
}

namespace {
std::map<std::string, int> word_counts(const std::string& s) {
  std::map<std::string, int> m;
  for (const auto& w : words(s)) ++m[w];
  return m;
}
}  // namespace

double rouge1_recall(const std::string& candidate, const std::string& reference) {
  const auto ref = word_counts(reference), cand = word_counts(candidate);
  int total = 0, hit = 0;
  for (const auto& [w, c] : ref) {
    total += c;
    auto it = cand.find(w);
    if (it != cand.end()) hit += std::min(c, it->second);
  }
  return total == 0 ? 0.0 : static_cast<double>(hit) / total;
}

double word_f1(const std::string& candidate, const std::string& reference) {
  const auto c = words(candidate), r = words(reference);
  if (c.empty() || r.empty()) return 0.0;
  std::map<std::string, int> rc;
  for (const auto& w : r) ++rc[w];
  int common = 0;
  for (const auto& w : c) {
    auto it = rc.find(w);
    if (it != rc.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  }
  if (common == 0) return 0.0;
  const double p = double(common) / double(c.size()), rr = double(common) / double(r.size());
  return 2 * p * rr / (p + rr);
}

}  // namespace kvhost
