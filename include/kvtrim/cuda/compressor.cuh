#pragma once
// A method on the device: cuda::compressor<Selector, Scorer, Allocator> takes the SAME role
// objects as kvtrim::compressor (the registry's compositions) and maps each role type to its
// device implementation through a trait, so a registered method gets its CUDA path by its roles:
//   device_scorer<window_attention | cake_scores | streaming | random_scores | knorm | no_scores>
//   device_allocator<A>: plan-time allocators (uniform, pyramid, error_aware, head_pool,
//     keep_all) run on the host ONCE per sequence in begin() and their per-layer, per-head
//     budgets go to the device by value (no copy, no sync); head_adaptive<Inner> runs Inner at
//     plan time and its layer-wide top-k on the device (no sync); cake_layers needs the layer's
//     entropy / variance sums (two doubles) on the host for its cascade: ONE stream sync per
//     layer (docs/BENCHMARKS.md measures it). Head selectors run on the host (a list of heads).
//   With cake_layers this compress_layer is the split step of the CPU path (score -> select ->
//   evict of the arriving layer); the cascade's re-trims of EARLIER layers are not on the device
//   yet, so cuda::make_method refuses cascading methods rather than leave a cache over budget.
//
//   cuda::compressor<all_heads, window_attention, uniform> c(shape, opt, {}, snap, {});
//   auto p = c.begin(n);                                        // host, once per sequence
//   std::size_t bytes = c.workspace_bytes(p, kv_heads);         // per layer, reusable
//   c.compress_layer(p, layer, kv, lengths_dev, ws, bytes, stream);   // kv: device views
//
// compress_layer = score -> budgets -> select_top -> compact_in_place, all enqueued on `stream`;
// lengths_dev receives the new per-head lengths (device); pass lengths_host to also get them on
// the host (that copy syncs the stream).
#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvtrim/allocate/cake_layers.hpp"
#include "kvtrim/allocate/head_adaptive.hpp"
#include "kvtrim/compose/compressor.hpp"
#include "kvtrim/compose/keep_all.hpp"
#include "kvtrim/cuda/compact.cuh"
#include "kvtrim/cuda/head_adaptive.cuh"
#include "kvtrim/cuda/select.cuh"
#include "kvtrim/cuda/simple_scores.cuh"
#include "kvtrim/cuda/window_scores.cuh"
#include "kvtrim/score/cake.hpp"
#include "kvtrim/score/chunked.hpp"
#include "kvtrim/score/knorm.hpp"
#include "kvtrim/score/random.hpp"
#include "kvtrim/score/streaming.hpp"
#include "kvtrim/score/window_attention.hpp"

namespace kvtrim {
namespace cuda {

// ---- scorers --------------------------------------------------------------------------------
template <class Scorer>
struct device_scorer;  // no device path for this scorer (a compile error names it)

// Whether a scorer has a device path (cuda::make_method reports the others at run time).
template <class Scorer, class = void>
struct has_device_scorer : std::false_type {};
template <class Scorer>
struct has_device_scorer<Scorer, std::void_t<decltype(sizeof(device_scorer<Scorer>))>>
    : std::true_type {};

template <>
struct device_scorer<window_attention> {
  static aggregation agg(const window_attention& s) { return s.aggregate; }
  static window_params params(const window_attention& s) {
    return window_params{s.pool, s.kernel, false, 0.0f, s.layer_stats};
  }
  template <class T>
  static std::size_t workspace(const window_attention&, const head_table& t, index_t n, index_t w) {
    return window_scores_workspace_bytes<T>(t, n, w);
  }
  template <class T>
  static device_scores score(const window_attention& s, int, const layer_kv<T>& kv,
                             const head_table& t, void* ws, std::size_t b, cudaStream_t st) {
    return window_scores(kv, t, params(s), ws, b, st);
  }
};

template <>
struct device_scorer<cake_scores> {
  static aggregation agg(const cake_scores& s) { return s.aggregate; }
  template <class T>
  static std::size_t workspace(const cake_scores&, const head_table& t, index_t n, index_t w) {
    return window_scores_workspace_bytes<T>(t, n, w);
  }
  template <class T>
  static device_scores score(const cake_scores& s, int, const layer_kv<T>& kv, const head_table& t,
                             void* ws, std::size_t b, cudaStream_t st) {
    return window_scores(kv, t, window_params{s.pool, s.kernel, true, static_cast<float>(s.gamma), true},
                         ws, b, st);
  }
};

template <>
struct device_scorer<streaming> {
  static aggregation agg(const streaming& s) { return s.aggregate; }
  template <class T>
  static std::size_t workspace(const streaming&, const head_table& t, index_t n, index_t w) {
    return simple_scores_workspace_bytes(t.rows, n, w);
  }
  template <class T>
  static device_scores score(const streaming& s, int, const layer_kv<T>& kv, const head_table& t,
                             void* ws, std::size_t b, cudaStream_t st) {
    return streaming_scores(t.kv_heads, t.shared, kv.prompt_length(), kv.window(), s.sinks, ws, b, st);
  }
};

template <>
struct device_scorer<random_scores> {
  static aggregation agg(const random_scores& s) { return s.aggregate; }
  template <class T>
  static std::size_t workspace(const random_scores&, const head_table& t, index_t n, index_t w) {
    return simple_scores_workspace_bytes(t.rows, n, w);
  }
  template <class T>
  static device_scores score(const random_scores& s, int layer, const layer_kv<T>& kv,
                             const head_table& t, void* ws, std::size_t b, cudaStream_t st) {
    return random_scores_device(t.kv_heads, kv.kv_head_offset, t.shared, layer, s.seed,
                                kv.prompt_length(), kv.window(), ws, b, st);
  }
};

template <>
struct device_scorer<knorm> {
  static aggregation agg(const knorm&) { return aggregation::per_kv_head; }
  template <class T>
  static std::size_t workspace(const knorm&, const head_table& t, index_t n, index_t w) {
    return simple_scores_workspace_bytes(t.kv_heads, n, w);
  }
  template <class T>
  static device_scores score(const knorm&, int, const layer_kv<T>& kv, const head_table&, void* ws,
                             std::size_t b, cudaStream_t st) {
    return knorm_scores<T>(kv.keys, kv.prompt_length(), kv.window(), ws, b, st);
  }
};

template <>
struct device_scorer<no_scores> {
  static aggregation agg(const no_scores&) { return aggregation::shared; }
  template <class T>
  static std::size_t workspace(const no_scores&, const head_table&, index_t n, index_t w) {
    return simple_scores_workspace_bytes(1, n, w);
  }
  template <class T>
  static device_scores score(const no_scores&, int, const layer_kv<T>& kv, const head_table& t,
                             void* ws, std::size_t b, cudaStream_t st) {
    // every candidate is kept (keep_all): the scores are never ranked, zeros suffice
    device_scores s = detail::simple_out(ws, b, 1, true, t.kv_heads, kv.prompt_length(), kv.window());
    if (s.candidates > 0)
      detail::check_cuda(cudaMemsetAsync(s.values, 0, sizeof(float) * s.candidates, st), "memset");
    return s;
  }
};

namespace detail {
// chunked<Inner> (score/chunked.hpp): every candidate takes its chunk's total, summed in the
// host's order (one thread per chunk, float adds), so the scores are bit-identical.
static __global__ void chunk_sum_kernel(float* values, index_t c, index_t size) {
  const index_t b = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) * size;
  if (b >= c) return;
  float* row = values + static_cast<index_t>(blockIdx.y) * c;
  const index_t e = b + size < c ? b + size : c;
  float total = 0.0f;
  for (index_t j = b; j < e; ++j) total = __fadd_rn(total, row[j]);
  for (index_t j = b; j < e; ++j) row[j] = total;
}
}  // namespace detail

template <class Inner>
struct device_scorer<chunked<Inner>> {
  using inner = device_scorer<Inner>;
  static aggregation agg(const chunked<Inner>& s) { return inner::agg(s.inner); }
  template <class T>
  static std::size_t workspace(const chunked<Inner>& s, const head_table& t, index_t n, index_t w) {
    return inner::template workspace<T>(s.inner, t, n, w);
  }
  template <class T>
  static device_scores score(const chunked<Inner>& s, int layer, const layer_kv<T>& kv,
                             const head_table& t, void* ws, std::size_t b, cudaStream_t st) {
    kvtrim::detail::require(s.size >= 1, "chunked: chunk size ", s.size, " must be >= 1");
    device_scores out = inner::score(s.inner, layer, kv, t, ws, b, st);
    const index_t chunks = (out.candidates + s.size - 1) / s.size;
    if (chunks > 0) {
      const dim3 grid(static_cast<unsigned>((chunks + 255) / 256), static_cast<unsigned>(out.rows));
      detail::chunk_sum_kernel<<<grid, 256, 0, st>>>(out.values, out.candidates, s.size);
      detail::check_cuda(cudaGetLastError(), "chunk_sum_kernel");
    }
    return out;
  }
};

// ---- allocators -----------------------------------------------------------------------------
enum class budget_site { plan_time, device_adaptive, host_stats };

template <class Alloc>
struct device_allocator {  // default: budgets known at plan time (uniform, pyramid, ...)
  static constexpr budget_site site = budget_site::plan_time;
  static const Alloc& plan_allocator(const Alloc& a) { return a; }
};
template <class Inner>
struct device_allocator<head_adaptive<Inner>> {
  static constexpr budget_site site = budget_site::device_adaptive;
  static const Inner& plan_allocator(const head_adaptive<Inner>& a) { return a.inner(); }
};
template <>
struct device_allocator<cake_layers> {
  static constexpr budget_site site = budget_site::host_stats;
  static const cake_layers& plan_allocator(const cake_layers& a) { return a; }
};

// ---- the composition ------------------------------------------------------------------------
template <class Selector, class Scorer, class Alloc>
class compressor {
  using dscorer = device_scorer<Scorer>;
  using dalloc = device_allocator<Alloc>;
  using plan_alloc = std::decay_t<decltype(dalloc::plan_allocator(std::declval<const Alloc&>()))>;

 public:
  static constexpr budget_site site = dalloc::site;

  struct plan {
    index_t prompt_length = 0, window = 0, budget = 0;
    typename Alloc::state alloc{};                   // host_stats: the cascade's state
    std::vector<std::vector<index_t>> head_budgets;  // [layer][kv head]: plan-time budgets
  };

  compressor(model_shape shape, compress_options opt, Selector sel = {}, Scorer scorer = {},
             Alloc alloc = {})
      : host_(shape, opt, sel, scorer, alloc), sel_(std::move(sel)), scorer_(std::move(scorer)),
        alloc_(std::move(alloc)) {}

  const model_shape& shape() const { return host_.shape(); }
  const Selector& selector() const { return sel_; }
  const Scorer& scorer() const { return scorer_; }
  const Alloc& allocator() const { return alloc_; }

  plan begin(index_t n) const {
    auto hp = host_.begin(n);  // validates n, window, context
    plan p;
    p.prompt_length = n;
    p.window = hp.window;
    p.budget = hp.budget;
    if constexpr (site == budget_site::host_stats) {
      p.alloc = std::move(hp.alloc);
    } else {
      const plan_alloc& a = dalloc::plan_allocator(alloc_);
      auto st = a.begin(shape(), p.budget, n, p.window);
      for (int l = 0; l < shape().layers; ++l) {
        token_scores s = token_scores::make(true, shape().kv_heads, 0, n, p.window);
        p.head_budgets.push_back(a.head_budgets(st, l, s));
      }
    }
    return p;
  }

  // Workspace for one layer's compress_layer with `kv_heads` local KV heads (reusable across
  // layers; size it for the largest n of the batch).
  template <class T>
  std::size_t workspace_bytes(const plan& p, index_t kv_heads) const {
    std::size_t score = 0;  // the largest of any layer (selected heads differ per layer)
    for (int l = 0; l < shape().layers; ++l) {
      const head_table t = table_for<T>(l, p, kv_heads);
      score = std::max(score, dscorer::template workspace<T>(scorer_, t, p.prompt_length, p.window));
    }
    detail::arena a;
    carve(a, p, kv_heads, score, nullptr);
    return a.bytes();
  }

  template <class T>
  void compress_layer(plan& p, int layer, const layer_kv<T>& kv, int* lengths_dev, void* ws,
                      std::size_t bytes, cudaStream_t stream, index_t* lengths_host = nullptr) const {
    const std::vector<int> heads = sel_.heads(layer, shape());
    kvtrim::check_scoring_input(layer, kv, heads, shape());
    kvtrim::detail::require(kv.prompt_length() == p.prompt_length && kv.window() == p.window,
                            "cuda::compressor: layer ", layer, " holds ", kv.prompt_length(),
                            " tokens / window ", kv.window(), ", the plan was made for ",
                            p.prompt_length, " / ", p.window);
    const index_t H = kv.kv_heads(), n = p.prompt_length;
    const head_table t = make_head_table(kv, heads, shape(), dscorer::agg(scorer_));
    const std::size_t score_bytes = dscorer::template workspace<T>(scorer_, t, n, p.window);
    detail::arena a(ws);
    pieces x = carve(a, p, H, score_bytes, ws);
    detail::check_workspace(a, ws, bytes, "cuda::compressor");

    const device_scores s = dscorer::score(scorer_, layer, kv, t, x.score, score_bytes, stream);
    head_ints hb;
    hb.count = static_cast<int>(H);
    if constexpr (site == budget_site::host_stats) {
      double st[2] = {0.0, 0.0};
      detail::check_cuda(cudaMemcpyAsync(st, s.stats, sizeof st, cudaMemcpyDeviceToHost, stream),
                         "cudaMemcpyAsync");
      detail::check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      token_scores hs = token_scores::make(s.shared, H, kv.kv_head_offset, n, p.window);
      hs.entropy_sum = st[0];
      hs.variance_sum = st[1];
      hs.stat_heads = s.stat_heads;
      const std::vector<index_t> b = alloc_.head_budgets(p.alloc, layer, hs);
      for (index_t h = 0; h < H; ++h) hb.v[h] = static_cast<int>(b[static_cast<size_t>(h)]);
    } else {
      const auto& row = p.head_budgets.at(static_cast<size_t>(layer));
      for (index_t h = 0; h < H; ++h)
        hb.v[h] = static_cast<int>(row[static_cast<size_t>(kv.kv_head_offset + h)]);
    }
    if constexpr (site == budget_site::device_adaptive) {
      head_adaptive_budgets(s, hb, alloc_.alpha(), x.budgets, x.adaptive, x.adaptive_bytes, stream);
      select_top(s, x.budgets, x.keep, n, lengths_dev, x.select, x.select_bytes, stream);
    } else {
      select_top(s, hb, x.keep, n, lengths_dev, x.select, x.select_bytes, stream);  // by value
    }
    compact_in_place(kv.keys, kv.values, x.keep, n, lengths_dev, n, x.compact, x.compact_bytes, stream);
    if (lengths_host) {
      std::vector<int> tmp(static_cast<size_t>(H));
      detail::check_cuda(cudaMemcpyAsync(tmp.data(), lengths_dev, sizeof(int) * tmp.size(),
                                         cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
      detail::check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      for (index_t h = 0; h < H; ++h) lengths_host[h] = tmp[static_cast<size_t>(h)];
    }
  }

 private:
  struct pieces {
    void *score, *select, *adaptive, *compact;
    std::size_t select_bytes, adaptive_bytes, compact_bytes;
    int *budgets, *keep;
  };
  template <class T>
  head_table table_for(int layer, const plan& p, index_t kv_heads) const {
    layer_kv<T> fake;  // shapes only, for the head table's sizes
    fake.keys = view3<T>(reinterpret_cast<T*>(16), kv_heads, p.prompt_length, shape().head_dim,
                         p.prompt_length * shape().head_dim, shape().head_dim);
    return make_head_table(fake, sel_.heads(layer, shape()), shape(), dscorer::agg(scorer_));
  }
  pieces carve(detail::arena& a, const plan& p, index_t H, std::size_t score_bytes, void*) const {
    pieces x{};
    const index_t n = p.prompt_length;
    x.score = a.take<char>(score_bytes);
    x.budgets = a.take<int>(static_cast<size_t>(H));
    x.keep = a.take<int>(static_cast<size_t>(H * n));
    x.select_bytes = select_top_workspace_bytes(static_cast<int>(H), n, p.window);
    x.select = a.take<char>(x.select_bytes);
    x.adaptive_bytes = head_adaptive_workspace_bytes(static_cast<int>(H));
    x.adaptive = a.take<char>(x.adaptive_bytes);
    x.compact_bytes = compact_workspace_bytes<float>(H, shape().head_dim, n);  // max over T
    x.compact = a.take<char>(x.compact_bytes);
    return x;
  }

  kvtrim::compressor<Selector, Scorer, Alloc> host_;  // validation, plan, CAKE's state
  Selector sel_;
  Scorer scorer_;
  Alloc alloc_;
};

}  // namespace cuda
}  // namespace kvtrim
