#include "engine/haystack.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace kvhost {

namespace fs = std::filesystem;

std::string find_essay_dir() {
  if (const char* env = std::getenv("KVTRIM_HAYSTACK"); env && *env) return env;
  if (const char* home = std::getenv("HOME")) {
    const fs::path p = fs::path(home) / ".cache" / "kvtrim" / "pg_essays";
    if (fs::exists(p / ".complete")) return p.string();
  }
  return "";
}

std::string load_text_dir(const std::string& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".txt" &&
        e.path().filename().string().find("LICENSE") == std::string::npos)  // REPO_LICENSE.txt
      files.push_back(e.path());
  if (files.empty()) throw std::runtime_error("no .txt files in " + dir);
  std::sort(files.begin(), files.end());
  std::string out;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    out += ss.str();
    out += "\n";
  }
  return out;
}

std::string generated_haystack(size_t chars) {
  // Sentences built from fixed word lists by a small LCG: readable, varied, reproducible.
  static const char* subjects[] = {"The committee", "A small team", "The old river", "Every student",
                                   "The city council", "A careful reader", "The first engineer",
                                   "Our neighbour", "The museum", "A quiet village"};
  static const char* verbs[] = {"considered", "described", "rebuilt", "questioned", "admired",
                                "measured", "forgot", "explained", "painted", "visited"};
  static const char* objects[] = {"the northern bridge", "a long letter", "the spring harvest",
                                  "an unusual clock", "the public library", "a winding road",
                                  "the annual report", "a forgotten song", "the harbour lights",
                                  "an early map"};
  static const char* tails[] = {"before the rain began", "with great patience", "for the third time",
                                "after a long debate", "without any help", "late in the evening",
                                "as the seasons changed", "during the festival", "in the morning",
                                "once again"};
  std::string out;
  std::uint64_t x = 0x9e3779b97f4a7c15ull;
  auto pick = [&x](size_t n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<size_t>((x >> 33) % n);
  };
  while (out.size() < chars) {
    out += subjects[pick(10)];
    out += ' ';
    out += verbs[pick(10)];
    out += ' ';
    out += objects[pick(10)];
    out += ' ';
    out += tails[pick(10)];
    out += pick(6) == 0 ? ".\n\n" : ". ";
  }
  return out;
}

needle classic_needle() {
  return {"The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a "
          "sunny day.",
          "What is the best thing to do in San Francisco?",
          "eat a sandwich and sit in Dolores Park on a sunny day",
          "The best thing to do in San Francisco is"};
}

needle_prompt build_needle_prompt(const tokenizer& tok, const std::string& haystack,
                                  int64_t target_tokens, double depth, const needle& nd) {
  if (depth < 0.0 || depth > 1.0)
    throw std::invalid_argument("needle depth " + std::to_string(depth) + " outside [0, 1]");
  auto wrap = [&](const std::string& doc) {
    const std::string user = "Read the document and answer the question.\n\n<document>\n" + doc +
                             "\n</document>\n\nQuestion: " + nd.question +
                             " Answer with the sentence from the document.";
    return tok.apply_chat_template({{"user", user}}, true) + nd.answer_prefix;
  };
  const int64_t overhead =
      static_cast<int64_t>(tok.encode(wrap(nd.fact), true).size());
  if (target_tokens <= overhead + 16)
    throw std::invalid_argument("needle prompt of " + std::to_string(target_tokens) +
                                " tokens is too short (the question alone takes " +
                                std::to_string(overhead) + ")");
  // The haystack's first (target - overhead) tokens, decoded back to text.
  std::vector<int> ids = tok.encode(haystack.substr(0, static_cast<size_t>(target_tokens) * 8), false);
  const auto keep = static_cast<size_t>(target_tokens - overhead);
  if (ids.size() < keep)
    throw std::invalid_argument("haystack too short for a " + std::to_string(target_tokens) +
                                "-token prompt");
  ids.resize(keep);
  std::string doc = tok.decode(ids);
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
  p.text = wrap(doc);
  const std::vector<int> t = tok.encode(p.text, true);
  p.tokens.assign(t.begin(), t.end());
  return p;
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

}  // namespace kvhost
