#pragma once
// Tensor parallelism on the device: ranks that each hold a slice of a layer's KV heads
// (kv.kv_head_offset, kv.kv_heads(); the queries of those heads) reach exactly the decision one
// GPU holding all heads reaches, with ONE all-reduce (sum, f32) per layer at a fixed point:
//
//   cuda::tp_step<decltype(c), T> st(c, p, layer, kv);   // host: what this rank computes
//   float* buf = ...;                      // st.reduce_count() floats (device, caller-owned)
//   st.score(buf, ws, st.workspace_bytes(), stream);      // this rank's rows of buf, 0 elsewhere
//   if (st.reduce_count() > 0)             // THE reduction point: any all-reduce SUM over ranks
//     ncclAllReduce(buf, buf, st.reduce_count(), ncclFloat, ncclSum, comm, stream);
//   st.select_evict(buf, lengths_dev, ws, st.workspace_bytes(), stream);   // this rank's heads
//
// Why it is exact: every rank writes only its own rows of `buf` and leaves the others 0, so the
// sum is a concatenation (x + 0 == x) and every rank then holds, bit for bit, the scores one GPU
// computes. What the rows are:
//   - a shared row (CompressKV's semantic retrieval heads, compresskv-uniform): the pooled scores
//     of each scoring query head, one row per head in global head order, summed after the
//     reduction in that order -- the same f32 additions, in the same order, as the one-GPU
//     kernel: reduce_count = scoring heads x candidates;
//   - Ada-KV's layer-wide top-k (adakv, and any head_adaptive<> allocator): every KV head's
//     scores, so each rank computes the same budgets for all heads and keeps its own:
//     reduce_count = KV heads of the model x candidates;
//   - budgets known at plan time with one decision per KV head (snapkv, pyramidkv, headkv, knorm,
//     streaming, random, ...): nothing; reduce_count = 0 and the step is compress_layer's.
// Refused (kvtrim::error): cascading allocators (CAKE re-trims earlier layers; not on the device)
// and chunked scorers over a shared row.
#include <type_traits>
#include <vector>

#include "kvtrim/cuda/compressor.cuh"

namespace kvtrim {
namespace cuda {
namespace detail {
// out[j] = sum over r of rows[r * c + j], r ascending from 0.0f: the order in which
// window_scores_kernel adds the heads of a shared row.
static __global__ void sum_rows_kernel(const float* rows, int count, index_t c, float* out) {
  const index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= c) return;
  float acc = 0.0f;
  for (int r = 0; r < count; ++r) acc = __fadd_rn(acc, rows[static_cast<index_t>(r) * c + j]);
  out[j] = acc;
}
}  // namespace detail

template <class Compressor, class T>
class tp_step {
 public:
  tp_step(const Compressor& c, typename Compressor::plan& p, int layer, const layer_kv<T>& kv)
      : c_(c), p_(p), layer_(layer), kv_(kv) {
    const model_shape& sh = c.shape();
    heads_ = c.selector().heads(layer, sh);
    kvtrim::check_scoring_input(layer, kv, heads_, sh);
    kvtrim::detail::require(Compressor::site != budget_site::host_stats,
                            "cuda::tp_step: cascading allocators (CAKE) are not split on the device");
    n_ = p.prompt_length;
    cand_ = n_ - p.window;
    H_ = kv.kv_heads();
    if constexpr (std::is_same_v<Scorer, window_attention>) {
      const aggregation agg = c.scorer().aggregate;
      if (agg == aggregation::shared) {
        mode_ = mode::shared_rows;
        const index_t G = sh.group(), lo = kv.kv_head_offset * G;
        std::vector<char> chosen(static_cast<size_t>(sh.q_heads), heads_.empty() ? 1 : 0);
        for (int h : heads_) chosen[static_cast<size_t>(h)] = 1;
        for (index_t h = 0; h < sh.q_heads; ++h)
          if (chosen[static_cast<size_t>(h)]) {
            if (h < lo) ++row_offset_;
            ++rows_total_;
          }
      } else if (Compressor::site == budget_site::device_adaptive) {
        mode_ = mode::all_heads;
        row_offset_ = kv.kv_head_offset;
        rows_total_ = sh.kv_heads;
      }
      if (mode_ != mode::local) {  // the score rows this rank writes, built once
        table_ = make_head_table(kv, heads_, sh, agg);
        if (mode_ == mode::shared_rows) {  // one row per scoring head, written at its global place
          table_.per_head = true;
          table_.shared = false;
          table_.rows = table_.count;
        }
      }
    } else {
      kvtrim::detail::require(device_scorer<Scorer>::agg(c.scorer()) != aggregation::shared ||
                                  !is_chunked<Scorer>::value,
                              "cuda::tp_step: chunked scores over a shared row are not split");
      kvtrim::detail::require(Compressor::site != budget_site::device_adaptive,
                              "cuda::tp_step: head-adaptive budgets need window scores");
    }
  }

  // Floats of the buffer the ranks all-reduce (sum); 0: nothing to reduce.
  index_t reduce_count() const { return rows_total_ * cand_; }

  std::size_t workspace_bytes() const {
    if (mode_ == mode::local) return c_.template workspace_bytes<T>(p_, H_);
    detail::arena a;
    carve(a);
    return a.bytes();
  }

  void score(float* buf, void* ws, std::size_t bytes, cudaStream_t stream) const {
    if (mode_ == mode::local || cand_ == 0) return;
    detail::arena a(ws);
    const pieces x = carve(a);
    detail::check_workspace(a, ws, bytes, "cuda::tp_step");
    kvtrim::detail::require(buf != nullptr, "cuda::tp_step: null reduction buffer");
    detail::check_cuda(cudaMemsetAsync(buf, 0, sizeof(float) * reduce_count(), stream), "memset");
    if constexpr (std::is_same_v<Scorer, window_attention>)  // the only scorer with a reduction
      window_scores(kv_, table_, device_scorer<window_attention>::params(c_.scorer()), x.score,
                    x.score_bytes, stream, buf + row_offset_ * cand_);
  }

  void select_evict(float* buf, int* lengths_dev, void* ws, std::size_t bytes, cudaStream_t stream) const {
    if (mode_ == mode::local) {
      c_.compress_layer(p_, layer_, kv_, lengths_dev, ws, bytes, stream);
      return;
    }
    detail::arena a(ws);
    const pieces x = carve(a);
    detail::check_workspace(a, ws, bytes, "cuda::tp_step");
    const index_t w = p_.window;
    const auto& row = p_.head_budgets.at(static_cast<size_t>(layer_));
    head_ints local;
    local.count = static_cast<int>(H_);
    for (index_t h = 0; h < H_; ++h)
      local.v[h] = static_cast<int>(row[static_cast<size_t>(kv_.kv_head_offset + h)]);
    device_scores s;
    s.window = w;
    s.candidates = cand_;
    s.kv_heads = static_cast<int>(H_);
    const int* budgets = x.budgets;
    if (mode_ == mode::shared_rows) {
      if (cand_ > 0)
        detail::sum_rows_kernel<<<detail::blocks_for(cand_, 256), 256, 0, stream>>>(
            buf, static_cast<int>(rows_total_), cand_, x.row);
      s.values = x.row;
      s.rows = 1;
      s.shared = true;
      upload_head_ints(local, x.budgets, stream);  // a shared row keeps the inner budgets
    } else {  // all_heads: every rank computes every head's budget, keeps its own
      head_ints inner;
      inner.count = static_cast<int>(rows_total_);
      for (index_t h = 0; h < rows_total_; ++h) inner.v[h] = static_cast<int>(row[static_cast<size_t>(h)]);
      device_scores all;
      all.values = buf;
      all.rows = static_cast<int>(rows_total_);
      all.kv_heads = static_cast<int>(rows_total_);
      all.candidates = cand_;
      all.window = w;
      head_adaptive_budgets(all, inner, alloc_alpha(), x.budgets, x.adaptive, x.adaptive_bytes, stream);
      s.values = buf + row_offset_ * cand_;
      s.rows = static_cast<int>(H_);
      budgets = x.budgets + row_offset_;
    }
    select_top(s, budgets, x.keep, n_, lengths_dev, x.select, x.select_bytes, stream);
    compact_in_place(kv_.keys, kv_.values, x.keep, n_, lengths_dev, n_, x.compact, x.compact_bytes,
                     stream);
  }

 private:
  using Scorer = std::decay_t<decltype(std::declval<const Compressor&>().scorer())>;
  template <class S>
  struct is_chunked : std::false_type {};
  template <class I>
  struct is_chunked<chunked<I>> : std::true_type {};
  enum class mode { local, shared_rows, all_heads };
  struct pieces {
    void *score, *select, *adaptive, *compact;
    std::size_t score_bytes, select_bytes, adaptive_bytes, compact_bytes;
    int *budgets, *keep;
    float* row;
  };
  double alloc_alpha() const {
    if constexpr (Compressor::site == budget_site::device_adaptive) return c_.allocator().alpha();
    else return 0.0;
  }
  pieces carve(detail::arena& a) const {
    pieces x{};
    x.score_bytes = window_scores_workspace_bytes<T>(table_, n_, p_.window);
    x.score = a.take<char>(x.score_bytes);
    x.row = a.take<float>(static_cast<size_t>(cand_ > 0 ? cand_ : 1));
    x.budgets = a.take<int>(static_cast<size_t>(max_kv_heads));
    x.keep = a.take<int>(static_cast<size_t>(H_ * n_));
    x.select_bytes = select_top_workspace_bytes(static_cast<int>(H_), n_, p_.window);
    x.select = a.take<char>(x.select_bytes);
    x.adaptive_bytes = head_adaptive_workspace_bytes(static_cast<int>(c_.shape().kv_heads));
    x.adaptive = a.take<char>(x.adaptive_bytes);
    x.compact_bytes = compact_workspace_bytes<float>(H_, c_.shape().head_dim, n_);
    x.compact = a.take<char>(x.compact_bytes);
    return x;
  }

  const Compressor& c_;
  typename Compressor::plan& p_;
  int layer_;
  layer_kv<T> kv_;
  std::vector<int> heads_;
  head_table table_{};  // shared_rows / all_heads: the rows this rank scores
  index_t n_ = 0, cand_ = 0, H_ = 0, row_offset_ = 0, rows_total_ = 0;
  mode mode_ = mode::local;
};

}  // namespace cuda
}  // namespace kvtrim
