#pragma once
// Paired comparisons of two methods over the same prompts: the mean difference of their
// per-prompt scores and its 95 % interval by the percentile bootstrap over prompts (seeded, so a
// report is reproducible). "Better" is claimed only where the interval excludes zero; otherwise
// the two are tied at that prompt count.
//
// Resampling: B draws of n prompt indices with replacement from one std::mt19937_64 (its
// sequence is fixed by the standard) mapped to [0, n) by rejection, so the same seed gives the
// same interval on every platform. Interval: the sorted B resample means at indices
// floor(0.025 B) and ceil(0.975 B) - 1.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

namespace kvtools {

struct paired_difference {
  std::size_t prompts = 0;  // n: prompts both methods were run on
  double mean = 0.0;        // mean of a_i - b_i
  double lo = 0.0, hi = 0.0;  // 95 % percentile-bootstrap interval of the mean
  // +1: a better (interval above 0), -1: b better (below 0), 0: a tie at this n.
  int verdict() const { return lo > 0.0 ? 1 : hi < 0.0 ? -1 : 0; }
};

inline std::uint64_t draw_below(std::mt19937_64& g, std::uint64_t n) {
  const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % n);  // reject the tail
  std::uint64_t x;
  do x = g(); while (x >= limit);
  return x % n;
}

inline paired_difference paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b,
                                          std::uint64_t seed = 0, int resamples = 10000) {
  if (a.size() != b.size()) throw std::invalid_argument("paired_bootstrap: unpaired score lists");
  if (resamples < 1) throw std::invalid_argument("paired_bootstrap: resamples must be >= 1");
  paired_difference r;
  r.prompts = a.size();
  if (a.empty()) return r;
  std::vector<double> d(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  double sum = 0.0;
  for (double x : d) sum += x;
  r.mean = sum / static_cast<double>(d.size());
  std::mt19937_64 g(seed);
  std::vector<double> means(static_cast<std::size_t>(resamples));
  for (double& m : means) {
    double s = 0.0;
    for (std::size_t i = 0; i < d.size(); ++i) s += d[draw_below(g, d.size())];
    m = s / static_cast<double>(d.size());
  }
  std::sort(means.begin(), means.end());
  const auto B = static_cast<double>(resamples);
  r.lo = means[static_cast<std::size_t>(std::floor(0.025 * B))];
  r.hi = means[static_cast<std::size_t>(std::ceil(0.975 * B)) - 1];
  return r;
}

}  // namespace kvtools
