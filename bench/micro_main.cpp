// kvtrim_micro_bench: the machine's floors (memory bandwidth, GEMM rate), measured with the same
// threads in the same run as the kvtrim benchmarks of the other micro_*.cpp files, so every
// figure can be stated as a fraction of its floor (docs/BENCHMARKS.md).
//
// Floors measured once at start-up (median of 5: the kvtrim figures are averages over many
// iterations on a shared machine, so a best-of floor would flatter nobody) and used by the
// `of_*` counters:
//   copy_bw : STREAM "copy" b[i] = a[i] over 1 GiB -> 1 GiB of float, counted as read + written
//             bytes (2 GiB per pass), plain stores as in STREAM (the write-allocate read is not
//             counted, as STREAM does not count it)
//   read_bw : a sum over 1 GiB of float (read only; the floor of decode attention)
//   gemm    : Eigen float GEMM 2048^3, 2 * 2048^3 flop per product
// They are also registered as benchmarks (BM_memory_copy, BM_memory_read, BM_gemm) so that the
// table shows them beside the rest.
#include <benchmark/benchmark.h>

#include "bench_common.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "kvtrim/core/element.hpp"

namespace kvtrim_bench {

int threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Deterministic pseudo-random values in [-1, 1), filled in parallel (first touch by the threads
// that will use the memory).
template <class T>
void fill_random(T* p, std::size_t n, std::uint64_t seed) {
  const auto count = static_cast<std::int64_t>(n);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t i = 0; i < count; ++i) {
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float f = static_cast<float>(z >> 40) * (1.0f / 8388608.0f) - 1.0f;
    p[i] = kvtrim::from_float<T>(f);
  }
}
template void fill_random<float>(float*, std::size_t, std::uint64_t);
template void fill_random<kvtrim::half>(kvtrim::half*, std::size_t, std::uint64_t);
template void fill_random<kvtrim::bfloat16>(kvtrim::bfloat16*, std::size_t, std::uint64_t);

namespace {

constexpr std::size_t gib_floats = (std::size_t(1) << 30) / sizeof(float);

void stream_copy(const float* a, float* b, std::int64_t n) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t i = 0; i < n; ++i) b[i] = a[i];
}

float stream_read(const float* a, std::int64_t n) {
  float total = 0.0f;
#if defined(_OPENMP)
#pragma omp parallel reduction(+ : total)
#endif
  {
    float acc[16] = {};
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::int64_t i = 0; i < n / 16; ++i)
      for (int l = 0; l < 16; ++l) acc[l] += a[i * 16 + l];
    for (float x : acc) total += x;
  }
  return total;
}

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

floors measure() {
  floors f;
  {
    std::unique_ptr<float[]> a(new float[gib_floats]), b(new float[gib_floats]);
    fill_random(a.get(), gib_floats, 1);
    fill_random(b.get(), gib_floats, 2);
    const auto n = static_cast<std::int64_t>(gib_floats);
    std::vector<double> copy_s, read_s;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      stream_copy(a.get(), b.get(), n);
      benchmark::ClobberMemory();
      copy_s.push_back(seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      float s = stream_read(b.get(), n);
      benchmark::DoNotOptimize(s);
      read_s.push_back(seconds_since(t0));
    }
    f.copy_bw = 2.0 * double(gib_floats) * sizeof(float) / median(copy_s);
    f.read_bw = double(gib_floats) * sizeof(float) / median(read_s);
  }
  {
    const int n = 2048;
    matrix a = matrix::Random(n, n), b = matrix::Random(n, n), c(n, n);
    std::vector<double> s;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      c.noalias() = a * b;
      benchmark::DoNotOptimize(c.data());
      s.push_back(seconds_since(t0));
    }
    f.gemm = 2.0 * double(n) * n * n / median(s);
  }
  return f;
}

floors g_floors;

void BM_memory_copy(benchmark::State& state) {
  std::unique_ptr<float[]> a(new float[gib_floats]), b(new float[gib_floats]);
  fill_random(a.get(), gib_floats, 1);
  fill_random(b.get(), gib_floats, 2);
  for (auto _ : state) {
    stream_copy(a.get(), b.get(), static_cast<std::int64_t>(gib_floats));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * std::int64_t(2) * std::int64_t(gib_floats * sizeof(float)));
}
BENCHMARK(BM_memory_copy)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_memory_read(benchmark::State& state) {
  std::unique_ptr<float[]> a(new float[gib_floats]);
  fill_random(a.get(), gib_floats, 1);
  for (auto _ : state) {
    float s = stream_read(a.get(), static_cast<std::int64_t>(gib_floats));
    benchmark::DoNotOptimize(s);
  }
  state.SetBytesProcessed(state.iterations() * std::int64_t(gib_floats * sizeof(float)));
}
BENCHMARK(BM_memory_read)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_gemm(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  matrix a = matrix::Random(n, n), b = matrix::Random(n, n), c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["flop/s"] = benchmark::Counter(2.0 * double(n) * n * n * double(state.iterations()),
                                                benchmark::Counter::kIsRate);
}
BENCHMARK(BM_gemm)->Arg(2048)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

const floors& measured_floors() { return g_floors; }

// Adds `name` = (rate of `amount` per second) / floor as a counter, e.g. of_copy_bw = 0.7.
void add_fraction(benchmark::State& state, const char* name, double amount_per_iteration, double floor) {
  state.counters[name] = benchmark::Counter(amount_per_iteration * double(state.iterations()) / floor,
                                            benchmark::Counter::kIsRate);
}

}  // namespace kvtrim_bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  Eigen::setNbThreads(kvtrim_bench::threads());
  kvtrim_bench::g_floors = kvtrim_bench::measure();
  const auto& f = kvtrim_bench::g_floors;
  std::fprintf(stderr,
               "floors (%d threads, median of 5): copy %.2f GB/s (read+write), read %.2f GB/s, "
               "Eigen GEMM 2048^3 %.1f GFLOP/s\n",
               kvtrim_bench::threads(), f.copy_bw / 1e9, f.read_bw / 1e9, f.gemm / 1e9);
  benchmark::AddCustomContext("threads", std::to_string(kvtrim_bench::threads()));
  benchmark::AddCustomContext("floor_copy_GBps", std::to_string(f.copy_bw / 1e9));
  benchmark::AddCustomContext("floor_read_GBps", std::to_string(f.read_bw / 1e9));
  benchmark::AddCustomContext("floor_gemm_GFLOPs", std::to_string(f.gemm / 1e9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
