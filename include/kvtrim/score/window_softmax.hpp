#pragma once
// The observation-window attention pass shared by the SnapKV-style scorer and CAKE: for each
// contributing query head, the softmax of q_i . K^T / sqrt(d) (i = the window's w queries, at
// prompt positions n - w + i) over all n keys, causal inside the window, and per candidate key
// j < n - w the sum and the (unbiased) variance of its w attention weights.
//
// Reference: FasterDecoding/SnapKV snapkv/monkeypatch/snapkv_utils.py (SnapKVCluster.update_kv):
// logits of the last window_size queries against all keys / sqrt(head_dim); a window x window
// mask that hides key j > i from window query i; softmax in float32 over all keys; then
// attn[..., -w:, :-w].sum(dim=-2), i.e. only keys before the window are candidates.
//
// Cost per query head: O(w * n * d) for the logits (one GEMM per key block, K converted to
// float block-wise, so strided / half / bfloat16 rows need no full copy), O(w * n) for the rest.
// K rows of a KV head are read once for all its contributing query heads (GQA, no expansion).
// Memory: w * n floats per contributing head (the attention rows), nothing n^2.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kvtrim/core/element.hpp"
#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/view.hpp"
#include "kvtrim/score/aggregation.hpp"

namespace kvtrim {
// CAKE's layer statistics of the contributing heads, as sums over those heads.
struct window_stats {
  double entropy_sum = 0.0;   // sum_h (1/w) sum_i sum_{j<n-w} -a_hij log(a_hij + 1e-10)
  double variance_sum = 0.0;  // sum_h sum_{j<n-w} var_i(a_hij)   (unbiased, as torch.var)
  double heads = 0.0;         // number of contributing heads
};

namespace detail {
// Unbiased variance of v[0..w) around `mean` (torch.var's default correction = 1). A window of
// one query has no spread: 0 (torch would give NaN).
inline float window_variance(const float* v, index_t w, index_t stride, float mean) {
  if (w < 2) return 0.0f;
  float s = 0.0f;
  for (index_t i = 0; i < w; ++i) {
    const float e = v[i * stride] - mean;
    s += e * e;
  }
  return s / static_cast<float>(w - 1);
}
}  // namespace detail

// Runs the pass for the heads of `plan`. raw[i * c + j] = key_score(sum_i a_ij, var_i a_ij) for
// plan head i and candidate j < c = n - w (the variance is computed only when need_variance or
// stats != nullptr; otherwise 0 is passed). Fills *stats when given. The caller has validated
// `in` (check_scoring_input); nothing here throws except std::bad_alloc.
template <class T, class KeyScore>
void window_attention_pass(const layer_kv<T>& in, const head_groups& plan, bool need_variance,
                           KeyScore key_score, std::vector<float>& raw, window_stats* stats) {
  using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using out_map = Eigen::Map<row_matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
  constexpr index_t block = 256;  // keys per task: K block (256 x d floats) stays in L1/L2

  const index_t n = in.prompt_length(), w = in.window(), c = n - w, d = in.keys.dim();
  const index_t heads = plan.count(), rows = heads * w;
  raw.assign(static_cast<size_t>(heads * c), 0.0f);
  if (stats) *stats = window_stats{};
  if (heads == 0) return;
  if (c == 0) {  // the window is the whole prompt: nothing to score, no statistics
    if (stats) stats->heads = static_cast<double>(heads);
    return;
  }
  const bool want_var = need_variance || stats != nullptr;

  // Window queries of the contributing heads, in float, pre-scaled by 1/sqrt(d).
  row_matrix q(rows, d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (index_t i = 0; i < heads; ++i)
    for (index_t t = 0; t < w; ++t)
      for (index_t k = 0; k < d; ++k)
        q(i * w + t, k) = to_float(in.queries(plan.local[static_cast<size_t>(i)], t, k)) * scale;

  // KV heads with at least one contributing query head; the others' K is never read.
  std::vector<index_t> groups;
  for (index_t g = 0; g < in.kv_heads(); ++g)
    if (plan.first_of_kv[static_cast<size_t>(g + 1)] > plan.first_of_kv[static_cast<size_t>(g)])
      groups.push_back(g);

  const index_t nb = (n + block - 1) / block;
  std::vector<float> e(static_cast<size_t>(rows * n));  // attention rows, row r = head * w + i
  std::vector<float> bmax(static_cast<size_t>(rows * nb), -std::numeric_limits<float>::infinity());
  std::vector<float> bsum(static_cast<size_t>(rows * nb), 0.0f);

  // Pass 1: logits of each (KV head, key block) for all its heads' window queries at once; per
  // row and block keep exp(l - block max) and the block's sum (a blockwise-stable softmax).
  const index_t tasks1 = static_cast<index_t>(groups.size()) * nb;
#if defined(_OPENMP)
#pragma omp parallel if (tasks1 > 1 && rows * n * d >= (1 << 18))
#endif
  {
    row_matrix kb(block, d);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_t task = 0; task < tasks1; ++task) {
      const index_t g = groups[static_cast<size_t>(task / nb)], b = task % nb;
      const index_t t0 = b * block, len = std::min(block, n - t0);
      const index_t sd = in.keys.stride_dim();
      for (index_t t = 0; t < len; ++t) {
        const T* src = in.keys.row(g, t0 + t);
        float* dst = kb.row(t).data();
        for (index_t k = 0; k < d; ++k) dst[k] = to_float(src[k * sd]);
      }
      const index_t h0 = plan.first_of_kv[static_cast<size_t>(g)];
      const index_t r0 = h0 * w, nr = (plan.first_of_kv[static_cast<size_t>(g + 1)] - h0) * w;
      out_map logits(e.data() + r0 * n + t0, nr, len, Eigen::OuterStride<>(n));
      logits.noalias() = q.middleRows(r0, nr) * kb.topRows(len).transpose();
      for (index_t r = r0; r < r0 + nr; ++r) {
        float* l = e.data() + r * n;
        // Causal mask inside the window: query at position c + i sees keys j <= c + i.
        const index_t visible = std::min(t0 + len, c + (r % w) + 1);
        float m = -std::numeric_limits<float>::infinity();
        for (index_t j = t0; j < visible; ++j) m = std::max(m, l[j]);
        float s = 0.0f;
        for (index_t j = t0; j < visible; ++j) {
          l[j] = std::exp(l[j] - m);
          s += l[j];
        }
        for (index_t j = std::max(t0, visible); j < t0 + len; ++j) l[j] = 0.0f;
        bmax[static_cast<size_t>(r * nb + b)] = m;
        bsum[static_cast<size_t>(r * nb + b)] = s;
      }
    }
  }

  // Row normalisers: fold the blocks' (max, sum) into one factor per (row, block) that turns
  // exp(l - block max) into the softmax probability. Key 0 is visible to every row, so Z > 0.
  for (index_t r = 0; r < rows; ++r) {
    float* bm = bmax.data() + r * nb;
    const float* bs = bsum.data() + r * nb;
    const float m = *std::max_element(bm, bm + nb);
    double z = 0.0;
    for (index_t b = 0; b < nb; ++b)
      if (bs[b] > 0.0f) z += static_cast<double>(bs[b]) * std::exp(static_cast<double>(bm[b] - m));
    for (index_t b = 0; b < nb; ++b)
      bm[b] =
          bs[b] > 0.0f ? static_cast<float>(std::exp(static_cast<double>(bm[b] - m)) / z) : 0.0f;
  }
  const std::vector<float>& factor = bmax;

  // Pass 2: per (head, candidate block) the probabilities, their sum over the window and, when
  // wanted, their variance and CAKE's per-head entropy / variance partial sums.
  const index_t cb = (c + block - 1) / block, tasks2 = heads * cb;
  std::vector<double> ent_part(static_cast<size_t>(tasks2), 0.0);
  std::vector<double> var_part(static_cast<size_t>(tasks2), 0.0);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (tasks2 > 1 && rows * c >= (1 << 16))
#endif
  for (index_t task = 0; task < tasks2; ++task) {
    const index_t i = task / cb, b = task % cb;
    const index_t j0 = b * block, j1 = std::min(c, j0 + block);
    float* a0 = e.data() + i * w * n;  // row of window query 0 of head i
    double ent = 0.0;
    for (index_t t = 0; t < w; ++t) {
      float* a = a0 + t * n;
      const float f = factor[static_cast<size_t>((i * w + t) * nb + b)];
      for (index_t j = j0; j < j1; ++j) a[j] *= f;
      if (stats)
        for (index_t j = j0; j < j1; ++j)
          ent -= static_cast<double>(a[j]) * std::log(static_cast<double>(a[j]) + 1e-10);
    }
    double var_total = 0.0;
    float* out = raw.data() + i * c;
    for (index_t j = j0; j < j1; ++j) {
      float s = 0.0f;
      for (index_t t = 0; t < w; ++t) s += a0[t * n + j];
      float v = 0.0f;
      if (want_var) {
        v = detail::window_variance(a0 + j, w, n, s / static_cast<float>(w));
        var_total += v;
      }
      out[j] = key_score(s, v);
    }
    ent_part[static_cast<size_t>(task)] = ent;
    var_part[static_cast<size_t>(task)] = var_total;
  }

  if (stats) {
    for (index_t i = 0; i < heads; ++i) {
      double ent = 0.0, var = 0.0;
      for (index_t b = 0; b < cb; ++b) {
        ent += ent_part[static_cast<size_t>(i * cb + b)];
        var += var_part[static_cast<size_t>(i * cb + b)];
      }
      stats->entropy_sum += ent / static_cast<double>(w);
      stats->variance_sum += var;
    }
    stats->heads = static_cast<double>(heads);
  }
}

}  // namespace kvtrim
