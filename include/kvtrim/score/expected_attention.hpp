#pragma once
// Expected Attention (kvpress ExpectedAttentionPress; Devoto et al., "Expected Attention: KV Cache
// Compression by Estimating Attention from Future Queries Distribution", 2025, arXiv:2510.00636):
// a key's score is the attention that FUTURE queries are expected to pay it, from the statistics
// of the queries seen so far. With the queries modelled as Gaussian (mean mu, covariance S) and
// the RoPE rotation averaged over the next n_future positions (R), the expected logit of key k is
//   mu'.k / sqrt(d) + k^T S' k / (2 d),   mu' = R mu,  S' = R S R^T,
// softmax over the non-sink keys, then (score + epsilon) x ||v||_2.
//
// Reference: kvpress ExpectedAttentionPress (presses/expected_attention_press.py, NVIDIA/kvpress
// 8bb29b9), defaults n_future_positions = 512, n_sink = 4, use_covariance = true,
// use_vnorm = true, epsilon = 0: statistics of the pre-RoPE queries of positions [n_sink, n)
// (mean; covariance divided by n - n_sink), R = mean over positions p in [n, n + n_future) of
// cos(p theta) I + sin(p theta) P (P the rotate-half matrix), softmax over keys [n_sink, n),
// mean over the G query heads of the KV head, the n_sink first tokens padded with max + 1 so they
// are kept. The statistics come from the model's own prompt queries (not from a hub, unlike
// kvpress's ExpectedAttentionStatsPress).
//
// Input (method_info::needs_prompt_queries): layer_kv::prompt_queries, every prompt position's
// query BEFORE RoPE ([q_head][n][d]), and layer_kv::rope (base or frequencies, and the pairing:
// kvpress assumes Hugging Face's halves; llama.cpp-layout weights pair adjacent dims). Cost per
// query head: O(n d^2) for the covariance and for k^T S' k, O(d^3) for S'; memory O(d^2 + n d).
//
// Deliberate differences: sums over the G query heads instead of the mean, with epsilon scaled
// by G (same order); the sink pad is the row set's max + 1 as in kvpress, over sums; a prompt of
// at most n_sink tokens (kvpress asserts) keeps its candidates by position; kvtrim keeps its
// observation window (w) besides, and compacts the kept rows (kvpress masks them).
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kvtrim/score/token_scorer.hpp"

namespace kvtrim {

template <class T>
void check_prompt_queries(const layer_kv<T>& kv, const char* who) {
  detail::require(kv.prompt_queries.data() != nullptr, who,
                  " needs layer_kv::prompt_queries (every prompt query before RoPE, "
                  "[q_head][n][head_dim]); the host did not pass them");
  detail::check_view(kv.prompt_queries, "prompt_queries");
  detail::require(kv.prompt_queries.heads() == kv.queries.heads() &&
                      kv.prompt_queries.tokens() >= kv.prompt_length() &&
                      kv.prompt_queries.dim() == kv.keys.dim(),
                  who, ": prompt_queries shape [", kv.prompt_queries.heads(), "][",
                  kv.prompt_queries.tokens(), "][", kv.prompt_queries.dim(), "] must be [",
                  kv.queries.heads(), "][n = ", kv.prompt_length(), "][", kv.keys.dim(), "]");
  detail::require(kv.rope.given(), who, " needs layer_kv::rope (the model's RoPE base or frequencies)");
  detail::require(kv.keys.dim() % 2 == 0, who, ": head_dim ", kv.keys.dim(), " is odd (RoPE pairs)");
}

// The RoPE rotation averaged over positions [first, first + count): d x d, block-diagonal in the
// rope's pairs, each block [[c, -s], [s, c]] with c, s the mean cosine and sine of the pair's angle.
inline Eigen::MatrixXf average_rope_rotation(const rope_spec& rope, index_t d, index_t first,
                                             index_t count) {
  Eigen::MatrixXf R = Eigen::MatrixXf::Zero(d, d);
  const index_t half = d / 2;
  for (index_t a = 0; a < half; ++a) {
    const double f = rope.frequency(a, d);
    double c = 0, s = 0;
    for (index_t p = first; p < first + count; ++p) {
      c += std::cos(static_cast<double>(p) * f);
      s += std::sin(static_cast<double>(p) * f);
    }
    c /= static_cast<double>(count);
    s /= static_cast<double>(count);
    const auto [x, y] = rope.pair_dims(a, d);
    R(x, x) = static_cast<float>(c);
    R(x, y) = static_cast<float>(-s);
    R(y, x) = static_cast<float>(s);
    R(y, y) = static_cast<float>(c);
  }
  return R;
}

struct expected_attention {
  index_t n_future = 512;  // kvpress n_future_positions
  index_t n_sink = 4;
  bool use_covariance = true;
  bool use_vnorm = true;
  double epsilon = 0.0;

  void validate() const {
    detail::require(n_future >= 1, "expected_attention: n_future ", n_future, " must be >= 1");
    detail::require(n_sink >= 0, "expected_attention: n_sink ", n_sink, " must be >= 0");
    detail::require(std::isfinite(epsilon) && epsilon >= 0, "expected_attention: epsilon ", epsilon,
                    " must be >= 0");
  }

  template <class T>
  token_scores score(int layer, const layer_kv<T>& kv, const std::vector<int>& heads,
                     const model_shape& shape) const {
    using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    check_scoring_input(layer, kv, heads, shape);
    check_prompt_queries(kv, "expected_attention");
    validate();
    token_scores out = make_scores(kv, aggregation::per_kv_head);
    const index_t n = kv.prompt_length(), d = kv.keys.dim(), c = out.candidates;
    const index_t H = kv.kv_heads(), G = kv.group();
    if (c == 0) return out;
    if (n <= n_sink) {  // every candidate is a sink: keep by position
      for (index_t h = 0; h < H; ++h)
        for (index_t j = 0; j < c; ++j) out.row(h)[j] = static_cast<float>(c - j);
      return out;
    }
    const index_t m = n - n_sink;  // non-sink queries and keys
    const Eigen::MatrixXf R = average_rope_rotation(kv.rope, d, n, n_future);
    const float inv_sqrt_d = 1.0f / std::sqrt(static_cast<float>(d));
    std::vector<float> full(static_cast<size_t>(H * m), 0.0f);  // scores of keys [n_sink, n)
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (H > 1)
#endif
    for (index_t h = 0; h < H; ++h) {
      matrix K(m, d), X(m, d);
      for (index_t t = 0; t < m; ++t)
        for (index_t x = 0; x < d; ++x) K(t, x) = to_float(kv.keys(h, n_sink + t, x));
      std::vector<double> logit(static_cast<size_t>(m));
      for (index_t g = 0; g < G; ++g) {
        const index_t i = h * G + g;
        Eigen::VectorXd mu = Eigen::VectorXd::Zero(d);
        for (index_t t = 0; t < m; ++t)
          for (index_t x = 0; x < d; ++x) mu(x) += to_float(kv.prompt_queries(i, n_sink + t, x));
        mu /= static_cast<double>(m);
        const Eigen::VectorXf mu_r = R * mu.cast<float>();
        Eigen::VectorXf lin = K * mu_r * inv_sqrt_d;
        for (index_t t = 0; t < m; ++t) logit[size_t(t)] = lin(t);
        if (use_covariance) {
          for (index_t t = 0; t < m; ++t)
            for (index_t x = 0; x < d; ++x)
              X(t, x) = static_cast<float>(to_float(kv.prompt_queries(i, n_sink + t, x)) - mu(x));
          const Eigen::MatrixXf S = (X.transpose() * X) / static_cast<float>(m);
          const Eigen::MatrixXf S_r = R * S * R.transpose();
          const matrix KS = K * S_r;
          for (index_t t = 0; t < m; ++t)
            logit[size_t(t)] += static_cast<double>(KS.row(t).dot(K.row(t))) / (2.0 * static_cast<double>(d));
        }
        const double mx = *std::max_element(logit.begin(), logit.end());
        double z = 0;
        for (double& l : logit) z += (l = std::exp(l - mx));
        for (index_t t = 0; t < m; ++t) full[size_t(h * m + t)] += static_cast<float>(logit[size_t(t)] / z);
      }
      if (use_vnorm)
        for (index_t t = 0; t < m; ++t) {
          double sq = 0;
          for (index_t x = 0; x < d; ++x) {
            const double v = to_float(kv.values(h, n_sink + t, x));
            sq += v * v;
          }
          float& s = full[size_t(h * m + t)];
          s = static_cast<float>((s + static_cast<double>(G) * epsilon) * std::sqrt(sq));
        }
    }
    const float pad = *std::max_element(full.begin(), full.end()) + 1.0f;
    for (index_t h = 0; h < H; ++h)
      for (index_t j = 0; j < c; ++j)
        out.row(h)[j] = j < n_sink ? pad : full[size_t(h * m + j - n_sink)];
    return out;
  }
};

}  // namespace kvtrim
