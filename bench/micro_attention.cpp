// Ragged decode attention (one query token against every KV head's rows) on Llama-3.1-8B and
// SmolLM2 shapes, n = 4k .. 128k tokens per KV head, float / half / bfloat16 caches.
//
// bytes = K and V rows read: kv_heads x n x d x 2 x sizeof(T) (the query and output are
// negligible). of_read_bw = that rate / the measured read bandwidth (the floor of an operation
// that only reads); of_copy_bw the same against the STREAM copy rate.
// BM_ragged_decode_skewed: same total rows, head lengths spread from n/8 to 15n/8 (what a
// head-adaptive budget leaves), to show the split-KV work keeps both threads busy.
#include <benchmark/benchmark.h>

#include "bench_common.hpp"

#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvtrim/attention/ragged_decode.hpp"


namespace {

using kvtrim::index_t;

using kvtrim_bench::llama8b;
using kvtrim_bench::smollm2;

template <class M, class T>
void run_decode(benchmark::State& state, const std::vector<index_t>& lengths) {
  const index_t H = M::kv_heads, d = M::dim, G = M::q_heads / M::kv_heads;
  index_t total = 0;
  for (index_t l : lengths) total += l;
  // One buffer, heads back to back (as a host with per-head allocations would have them).
  const auto elems = static_cast<std::size_t>(total * d);
  std::unique_ptr<T[]> k(new T[elems]), v(new T[elems]);
  kvtrim_bench::fill_random(k.get(), elems, 3);
  kvtrim_bench::fill_random(v.get(), elems, 4);
  kvtrim::ragged_kv<T> kv;
  kv.head_dim = d;
  kv.row_stride = d;
  kv.lengths = lengths;
  index_t off = 0;
  for (index_t h = 0; h < H; ++h) {
    kv.keys.push_back(k.get() + off * d);
    kv.values.push_back(v.get() + off * d);
    off += lengths[static_cast<size_t>(h)];
  }
  std::vector<float> q(static_cast<size_t>(M::q_heads * d)), out(q.size());
  kvtrim_bench::fill_random(q.data(), q.size(), 5);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (auto _ : state) {
    kvtrim::ragged_decode_attention(q.data(), kv, static_cast<int>(G), scale, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  const double bytes = double(total) * double(d) * 2.0 * sizeof(T);
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * double(state.iterations())));
  const auto& f = kvtrim_bench::measured_floors();
  kvtrim_bench::add_fraction(state, "of_read_bw", bytes, f.read_bw);
  kvtrim_bench::add_fraction(state, "of_copy_bw", bytes, f.copy_bw);
}

template <class M, class T>
void BM_ragged_decode(benchmark::State& state) {
  run_decode<M, T>(state, std::vector<index_t>(static_cast<size_t>(M::kv_heads), state.range(0)));
}

template <class M, class T>
void BM_ragged_decode_skewed(benchmark::State& state) {
  const index_t n = state.range(0), H = M::kv_heads;
  std::vector<index_t> lengths(static_cast<size_t>(H));
  for (index_t h = 0; h < H; ++h)  // n/8 .. 15n/8, mean n
    lengths[static_cast<size_t>(h)] = H == 1 ? n : n / 8 + (14 * n / 8) * h / (H - 1);
  run_decode<M, T>(state, lengths);
}


BENCHMARK_TEMPLATE(BM_ragged_decode, llama8b, float)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_ragged_decode, llama8b, kvtrim::half)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_ragged_decode, llama8b, kvtrim::bfloat16)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_ragged_decode, smollm2, float)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_ragged_decode, smollm2, kvtrim::half)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_ragged_decode, smollm2, kvtrim::bfloat16)->KVTRIM_N_RANGE;
BENCHMARK_TEMPLATE(BM_ragged_decode_skewed, llama8b, float)->Arg(32768)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_ragged_decode_skewed, smollm2, float)->Arg(32768)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
