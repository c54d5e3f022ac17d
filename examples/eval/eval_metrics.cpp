#include "eval/eval_metrics.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <set>
#include <sstream>
#include <stdexcept>

#include "engine/needle.hpp"

namespace kvhost {

double needle_recall(const std::string& answer, const std::string& reference) {
  return rouge1_recall(answer, reference);
}

double passkey_match(const std::string& answer, const std::string& passkey) {
  std::string run;
  for (char c : answer + " ") {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      run += c;
    } else {
      if (!run.empty() && run == passkey) return 1.0;
      run.clear();
    }
  }
  return 0.0;
}

namespace {
std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\n\r\f\v");
  return s.substr(b, e - b + 1);
}
}  // namespace

double string_match_all(const std::string& prediction, const std::vector<std::string>& references) {
  if (references.empty()) throw std::invalid_argument("string_match_all: no references");
  // RULER's postprocess_pred: strip, control characters -> '\n', strip.
  std::string p = strip(prediction);
  for (char& c : p)
    if (static_cast<unsigned char>(c) < 0x20) c = '\n';
  p = lower(strip(p));
  double hit = 0;
  for (const auto& r : references) hit += p.find(lower(r)) != std::string::npos ? 1.0 : 0.0;
  return hit / static_cast<double>(references.size());
}

namespace {
// Python's str.split() separators: ASCII whitespace, \x1c-\x1f and the Unicode spaces. Returns
// the byte length of the separator at s[i], 0 if none.
size_t py_space(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  auto at = [&](size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  if (c == 0xc2 && (at(1) == 0x85 || at(1) == 0xa0)) return 2;                          // U+0085, U+00A0
  if (c == 0xe1 && at(1) == 0x9a && at(2) == 0x80) return 3;                             // U+1680
  if (c == 0xe2 && at(1) == 0x80 && (at(2) <= 0x8a || at(2) == 0xa8 || at(2) == 0xa9 || at(2) == 0xaf))
    return 3;                                                                            // U+2000-200A, 2028/9, 202F
  if (c == 0xe2 && at(1) == 0x81 && at(2) == 0x9f) return 3;                             // U+205F
  if (c == 0xe3 && at(1) == 0x80 && at(2) == 0x80) return 3;                             // U+3000
  return 0;
}

// The `rouge` package's preparation: text.split(".") keeping non-empty pieces, each
// " ".join(piece.split()).split(" ") -- a piece of only spaces becomes the one word "".
std::vector<std::vector<std::string>> rouge_sentences(const std::string& text) {
  std::vector<std::vector<std::string>> out;
  size_t b = 0;
  while (b <= text.size()) {
    size_t e = text.find('.', b);
    if (e == std::string::npos) e = text.size();
    if (e > b) {
      std::vector<std::string> words;
      std::string w;
      for (size_t i = b; i < e;) {
        const size_t n = py_space(text, i);
        if (n == 0) { w += text[i++]; continue; }
        if (!w.empty()) words.push_back(std::move(w));
        w.clear();
        i += n;
      }
      if (!w.empty()) words.push_back(std::move(w));
      if (words.empty()) words.emplace_back();
      out.push_back(std::move(words));
    }
    b = e + 1;
  }
  return out;
}

size_t distinct_words(const std::vector<std::vector<std::string>>& sentences) {
  std::set<std::string> all;
  for (const auto& s : sentences) all.insert(s.begin(), s.end());
  return all.size();
}

// _recon_lcs(x, y): the words of x on the LCS path, with the package's tie-break (diagonal on a
// match, else up only when strictly better, else left), added to `out`.
void add_lcs_words(const std::vector<std::string>& x, const std::vector<std::string>& y, std::set<std::string>& out) {
  const size_t n = x.size(), m = y.size();
  std::vector<uint32_t> t((n + 1) * (m + 1), 0);
  auto T = [&](size_t i, size_t j) -> uint32_t& { return t[i * (m + 1) + j]; };
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) T(i, j) = x[i - 1] == y[j - 1] ? T(i - 1, j - 1) + 1 : std::max(T(i - 1, j), T(i, j - 1));
  for (size_t i = n, j = m; i > 0 && j > 0;) {
    if (x[i - 1] == y[j - 1]) {
      out.insert(x[i - 1]);
      --i, --j;
    } else if (T(i - 1, j) > T(i, j - 1)) {
      --i;
    } else {
      --j;
    }
  }
}
}  // namespace

double rouge_l_f(const std::string& prediction, const std::string& reference) {
  const auto hyp = rouge_sentences(prediction), ref = rouge_sentences(reference);
  if (hyp.empty() || ref.empty()) return 0.0;  // the package raises; LongBench scores 0
  // Summary-level union LCS with exclusive (set) counting: the words on any LCS path of any
  // (reference sentence, candidate sentence) pair, counted once.
  std::set<std::string> lcs_union;
  for (const auto& r : ref)
    for (const auto& h : hyp) add_lcs_words(r, h, lcs_union);
  const double llcs = static_cast<double>(lcs_union.size());
  const double rec = llcs / static_cast<double>(distinct_words(ref));
  const double prec = llcs / static_cast<double>(distinct_words(hyp));
  return 2.0 * ((prec * rec) / (prec + rec + 1e-8));
}

double kl_divergence(const std::vector<float>& logp, const std::vector<float>& logq) {
  if (logp.size() != logq.size() || logp.empty())
    throw std::invalid_argument("kl_divergence: distributions of " + std::to_string(logp.size()) + " and " +
                                std::to_string(logq.size()) + " entries (need equal, non-zero sizes)");
  double kl = 0;
  for (size_t i = 0; i < logp.size(); ++i) {
    const double p = std::exp(static_cast<double>(logp[i]));
    if (p > 0) kl += p * (static_cast<double>(logp[i]) - static_cast<double>(logq[i]));
  }
  return std::max(0.0, kl);  // rounding can leave a tiny negative for identical rows
}

double perplexity(const std::vector<std::vector<float>>& logprobs, const std::vector<int>& targets) {
  if (logprobs.size() != targets.size() || logprobs.empty())
    throw std::invalid_argument("perplexity: " + std::to_string(logprobs.size()) + " rows for " +
                                std::to_string(targets.size()) + " targets (need equal, non-zero counts)");
  double nll = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    const int t = targets[i];
    if (t < 0 || static_cast<size_t>(t) >= logprobs[i].size())
      throw std::invalid_argument("perplexity: target " + std::to_string(t) + " outside [0, " +
                                  std::to_string(logprobs[i].size()) + ")");
    nll -= static_cast<double>(logprobs[i][static_cast<size_t>(t)]);
  }
  return std::exp(nll / static_cast<double>(targets.size()));
}

}  // namespace kvhost

namespace kvhost {

namespace {
bool is_abcd(char c) { return c == 'A' || c == 'B' || c == 'C' || c == 'D'; }
std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}
std::string sorted_unique(const std::string& s) {
  std::string o = s;
  std::sort(o.begin(), o.end());
  o.erase(std::unique(o.begin(), o.end()), o.end());
  return o;
}
std::string no_spaces_lower(const std::string& s) {
  std::string o;
  for (char c : s)
    if (c != ' ') o += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}
}  // namespace

std::string leval_normalize(const std::string& s) {
  std::string t;
  for (char c : s)
    if (!std::ispunct(static_cast<unsigned char>(c))) t += c;
  // \b(a|an|the)\b -> " " (case-sensitive, as em.py has it), then collapse whitespace.
  std::string out;
  for (const auto& w : split_ws(t)) {
    if (w == "a" || w == "an" || w == "the") continue;
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

std::string leval_mc_gt(const std::string& gt) {
  const auto w = split_ws(gt);
  std::string out;
  if (!w.empty())
    for (char c : w[0])
      if (is_abcd(c)) out += c;
  return out.empty() ? "A" : out;
}

std::string leval_mc_output(const std::string& response_in, bool coursera) {
  std::string response = response_in;
  if (strip(response).empty()) return "None";
  if (std::string("ABCD").find(response) != std::string::npos) return response;  // `response in "ABCD"`
  if (!coursera)
    for (char c : response)
      if (is_abcd(c)) return std::string(1, c);
  std::string cleaned;  // a leading run of option letters
  size_t i = 0;
  while (i < response.size() && is_abcd(response[i])) cleaned += response[i++];
  response = response.substr(i);
  if (cleaned.size() > 1) return sorted_unique(cleaned);
  response = response.substr(0, response.find("Question"));
  // re.findall(r"\s*[A-Z](?=[\s.)])"): capitals followed by whitespace, '.' or ')'
  std::string options;
  for (size_t j = 0; j + 1 < response.size(); ++j) {
    const char c = response[j], n = response[j + 1];
    if (c >= 'A' && c <= 'Z' && (std::isspace(static_cast<unsigned char>(n)) || n == '.' || n == ')')) options += c;
  }
  cleaned += options;
  std::string letters;
  for (char c : cleaned)
    if (is_abcd(c)) letters += c;
  cleaned = sorted_unique(letters);
  if (cleaned.empty()) {
    bool has = false;
    for (char c : response) {
      if (is_abcd(c)) {
        cleaned += c;
        has = true;
      } else if (has) {
        break;
      }
    }
  }
  return cleaned.empty() ? "A" : cleaned;
}

double leval_exact_match(const std::string& prediction_in, const std::string& ground_truth) {
  const std::string ng = leval_normalize(ground_truth);
  const bool options_only = std::all_of(ng.begin(), ng.end(), is_abcd);
  if (options_only) {
    const std::string np = leval_normalize(prediction_in);
    if (np == ng) return 1.0;
    const bool subset = std::all_of(np.begin(), np.end(), [&](char c) { return ng.find(c) != std::string::npos; });
    return subset ? 0.25 : 0.0;  // some of the correct options
  }
  std::string prediction = prediction_in;
  try {
    size_t a = 0, b = 0;
    const double p = std::stod(prediction, &a), g = std::stod(ground_truth, &b);
    if (a == prediction.size() && b == ground_truth.size()) return p == g ? 1.0 : 0.0;
  } catch (const std::exception&) {
  }
  // the first line longer than one character
  std::istringstream in(prediction);
  for (std::string line; std::getline(in, line);)
    if (line.size() > 1) {
      prediction = line;
      break;
    }
  return no_spaces_lower(prediction).find(no_spaces_lower(ground_truth)) != std::string::npos ? 1.0 : 0.0;
}

double leval_judge(const std::string& prediction_with_fact, const std::string& gt_with_fact) {
  auto split_fact = [](const std::string& s) {
    const std::string l = lower(s);
    const auto at = l.find("[fact:");
    if (at == std::string::npos) return std::pair<std::string, std::string>{strip(l), ""};
    std::string fact = l.substr(at + 6);
    if (!fact.empty()) fact.pop_back();  // the closing ']'
    return std::pair<std::string, std::string>{strip(l.substr(0, at)), strip(fact)};
  };
  auto first_tf = [](const std::string& s) -> std::string {
    for (const auto& w : split_ws(s)) {
      if (w.find("true") != std::string::npos) return "true";
      if (w.find("false") != std::string::npos) return "false";
    }
    return "<error>";
  };
  const auto [gl, gf] = split_fact(gt_with_fact);
  const auto [pl, pf] = split_fact(prediction_with_fact);
  return 0.5 * (leval_exact_match(first_tf(pl), gl) + leval_exact_match(first_tf(pf), gf));
}

}  // namespace kvhost
