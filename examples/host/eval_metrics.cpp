#include "host/eval_metrics.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <stdexcept>

#include "host/haystack.hpp"

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

double rouge_l_f(const std::string& prediction, const std::string& reference) {
  const auto a = words(prediction), b = words(reference);
  if (a.empty() || b.empty()) return 0.0;
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  const double lcs = static_cast<double>(prev[b.size()]);
  if (lcs == 0) return 0.0;
  const double p = lcs / static_cast<double>(a.size()), r = lcs / static_cast<double>(b.size());
  return 2 * p * r / (p + r);
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
