#pragma once
// What every micro-benchmark file shares: the measured floors (micro_main.cpp measures them once
// per run), the model shapes, the observation window and the range of prompt lengths.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>

#include "kvtrim/core/view.hpp"

namespace kvtrim_bench {

struct floors {
  double copy_bw = 0;  // bytes/s, read + written
  double read_bw = 0;  // bytes/s
  double gemm = 0;     // flop/s
};
const floors& measured_floors();
void add_fraction(benchmark::State&, const char*, double, double);
template <class T>
void fill_random(T* p, std::size_t n, std::uint64_t seed);

using kvtrim::index_t;

struct llama8b {  // Llama-3.1-8B
  static constexpr index_t q_heads = 32, kv_heads = 8, dim = 128;
};
struct smollm2 {  // SmolLM2-135M
  static constexpr index_t q_heads = 9, kv_heads = 3, dim = 64;
};
constexpr index_t window = 8;

}  // namespace kvtrim_bench

#define KVTRIM_N_RANGE RangeMultiplier(2)->Range(4096, 131072)->UseRealTime()->Unit(benchmark::kMillisecond)
