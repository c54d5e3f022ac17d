// Selection (select_top) and in-place compaction on Llama-3.1-8B (32 q / 8 KV heads, d = 128)
// and SmolLM2 (9 / 3, d = 64) shapes, n = 4k .. 128k, w = 8, 20% of each head's tokens kept.
//
// compact: bytes = rows that move x d x 2 (K and V) x sizeof(T), read + written (x 2), counted as
// STREAM counts its copy; of_copy_bw = that rate / the measured STREAM copy rate. The selection
// is the top 20% of random scores, so kept rows are scattered as a real selection's are.
// Repeated iterations move the same rows (the data is shuffled, the traffic is identical).
#include <benchmark/benchmark.h>

#include "bench_common.hpp"

#include <cstdint>
#include <memory>
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/scores.hpp"
#include "kvtrim/evict/compact_in_place.hpp"
#include "kvtrim/evict/top_k.hpp"


namespace {

using kvtrim::index_t;

using kvtrim_bench::llama8b;
using kvtrim_bench::smollm2;
using kvtrim_bench::window;

kvtrim::token_scores random_scores(index_t heads, index_t n) {
  kvtrim::token_scores s = kvtrim::token_scores::make(false, heads, 0, n, window);
  kvtrim_bench::fill_random(s.values.data(), s.values.size(), 77);
  return s;
}

template <class M>
void BM_select_top(benchmark::State& state) {
  const index_t n = state.range(0);
  const kvtrim::token_scores s = random_scores(M::kv_heads, n);
  const std::vector<index_t> budgets(static_cast<size_t>(M::kv_heads), n / 5);
  for (auto _ : state) {
    kvtrim::selection sel = kvtrim::select_top(s, budgets);
    benchmark::DoNotOptimize(sel.keep.data());
  }
  const double bytes = double(s.values.size()) * sizeof(float);  // scores read
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * double(state.iterations())));
  kvtrim_bench::add_fraction(state, "of_read_bw", bytes, kvtrim_bench::measured_floors().read_bw);
}

template <class M, class T>
void BM_compact(benchmark::State& state) {
  const index_t n = state.range(0), H = M::kv_heads, d = M::dim;
  const auto elems = static_cast<std::size_t>(H * n * d);
  std::unique_ptr<T[]> k(new T[elems]), v(new T[elems]);
  std::vector<T> q(static_cast<std::size_t>(M::q_heads * window * d));
  kvtrim_bench::fill_random(k.get(), elems, 1);
  kvtrim_bench::fill_random(v.get(), elems, 2);
  kvtrim::layer_kv<T> kv;
  kv.keys = kvtrim::view3<T>::head_major(k.get(), H, n, d);
  kv.values = kvtrim::view3<T>::head_major(v.get(), H, n, d);
  kv.queries = kvtrim::view3<const T>::head_major(q.data(), M::q_heads, window, d);
  const kvtrim::selection sel = kvtrim::select_top(random_scores(H, n),
                                                   std::vector<index_t>(static_cast<size_t>(H), n / 5));
  index_t moved = 0;
  for (const auto& keep : sel.keep)
    for (size_t i = 0; i < keep.size(); ++i) moved += keep[i] != static_cast<index_t>(i) ? 1 : 0;
  const kvtrim::compact_in_place exec;
  for (auto _ : state) {
    auto lens = exec.apply(sel, kv);
    benchmark::DoNotOptimize(lens.data());
    benchmark::ClobberMemory();
  }
  const double bytes = double(moved) * double(d) * 2.0 * sizeof(T) * 2.0;
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * double(state.iterations())));
  kvtrim_bench::add_fraction(state, "of_copy_bw", bytes, kvtrim_bench::measured_floors().copy_bw);
  state.counters["rows_moved"] = static_cast<double>(moved);
}


BENCHMARK_TEMPLATE(BM_select_top, llama8b)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_select_top, smollm2)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_compact, llama8b, float)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_compact, llama8b, kvtrim::half)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_compact, smollm2, float)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_compact, smollm2, kvtrim::half)->KVTRIM_N_RANGE;

}  // namespace
