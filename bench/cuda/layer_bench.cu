// GPU benchmark of the CUDA backend (scripts/gpu_check.sh runs it beside kvpress and PyTorch
// SDPA): per-layer compression of each window-scoring method, compaction alone and ragged decode,
// each beside its floor (bytes that must move over the HBM bandwidth measured in the same run).
// bf16, Llama-3.1-8B (32 / 8 heads, d 128) and SmolLM2 (9 / 3, d 64) shapes, random K / V / Q and
// synthetic profiles of the right shape (timings only). One JSON object per line on stdout.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kvtrim/allocate/error_aware.hpp"
#include "kvtrim/allocate/head_pool.hpp"
#include "kvtrim/allocate/pyramid.hpp"
#include "kvtrim/allocate/uniform.hpp"
#include "kvtrim/cuda/compressor.cuh"
#include "kvtrim/cuda/ragged_decode.cuh"
#include "kvtrim/select/all_heads.hpp"
#include "kvtrim/select/retrieval_heads.hpp"

using kvtrim::bfloat16;
using kvtrim::index_t;
namespace kc = kvtrim::cuda;

#define CK(x) kc::detail::check_cuda((x), #x)

namespace {

// KVTRIM_BENCH_ONLY="shape:n[,shape:n...]" and KVTRIM_BENCH_METHODS="snapkv,..." restrict the run
// (for profiling one case under ncu); KVTRIM_BENCH_REPS / _WARM set repetitions and warm-ups
// (default 10 / 3).
bool selected(const char* var, const std::string& item) {
  const char* v = std::getenv(var);
  if (!v || !*v) return true;
  const std::string all = std::string(",") + v + ",";
  return all.find("," + item + ",") != std::string::npos;
}
int int_from_env(const char* var, int fallback, int least) {
  const char* v = std::getenv(var);
  return v && *v ? std::max(least, std::atoi(v)) : fallback;
}

template <class F>
float time_ms(F&& f, cudaStream_t stream = 0) {
  static const int reps = int_from_env("KVTRIM_BENCH_REPS", 10, 1);
  static const int warm = int_from_env("KVTRIM_BENCH_WARM", 3, 0);
  for (int i = 0; i < warm; ++i) f();
  CK(cudaDeviceSynchronize());
  std::vector<float> ts;
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a, stream));
    f();
    CK(cudaEventRecord(b, stream));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

__global__ void fill_bf16(bfloat16* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned x = static_cast<unsigned>(i) * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    const float f = (static_cast<float>(x & 0xffffu) / 65536.0f - 0.5f) * 4.0f;
    p[i].bits = static_cast<unsigned short>(__float_as_uint(f) >> 16);
  }
}

__global__ void read_kernel(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

struct shape_case {
  const char* name;
  int q, kv, d;
  std::vector<index_t> lens;
};

double copy_tbps = 0, read_tbps = 0;

void out(const std::string& s) { std::printf("%s\n", s.c_str()), std::fflush(stdout); }

template <class Sel, class Scorer, class Alloc>
void bench_method(const char* method, const shape_case& sc, index_t n, index_t B, Sel sel,
                  Scorer scr, Alloc al, const kvtrim::layer_kv<bfloat16>& kv) {
  if (!selected("KVTRIM_BENCH_METHODS", method)) return;
  const kvtrim::model_shape shape{32, sc.q, sc.kv, sc.d, 0};
  kc::compressor<Sel, Scorer, Alloc> c(shape, {kvtrim::budget::tokens(B), 8}, sel, scr, al);
  auto p = c.begin(n);
  const std::size_t bytes = c.template workspace_bytes<bfloat16>(p, sc.kv);
  void* ws = nullptr;
  CK(cudaMalloc(&ws, bytes));
  int* lens = nullptr;
  CK(cudaMalloc(&lens, sizeof(int) * sc.kv));
  const bool cascade = kc::compressor<Sel, Scorer, Alloc>::site == kc::budget_site::host_stats;
  int layer = 16;
  auto run = [&] {
    if (cascade) {  // CAKE: layers in order; a fresh cascade per call, layer 0
      p = c.begin(n);
      layer = 0;
    }
    c.compress_layer(p, layer, kv, lens, ws, bytes, 0);
  };
  const float ms = time_ms(run);
  // The same step captured once into a CUDA graph and replayed (what an engine that captures its
  // prefill gets: every parameter is passed by value, the workspace is fixed). CAKE's step syncs
  // the stream for its cascade and cannot be captured.
  float graph_ms = -1.0f;
  if (!cascade) {
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
    c.compress_layer(p, layer, kv, lens, ws, bytes, st);
    CK(cudaStreamEndCapture(st, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    graph_ms = time_ms([&] { CK(cudaGraphLaunch(ge, st)); }, st);
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaStreamDestroy(st));
  }
  const double kbytes = double(sc.kv) * n * sc.d * 2;
  const double gather = 2.0 * 2.0 * double(sc.kv) * std::min(B, n) * sc.d * 2;  // K,V read+write
  const double floor_ms = (kbytes + gather) / (copy_tbps * 1e9);
  char buf[640];
  std::snprintf(buf, sizeof buf,
                "{\"what\":\"kvtrim_cuda_compress_layer\",\"shape\":\"%s\",\"n\":%lld,\"budget\":%lld,"
                "\"method\":\"%s\",\"ms\":%.4f,\"graph_ms\":%.4f,\"floor_ms\":%.4f,\"x_floor\":%.2f,\"host_sync\":%s}",
                sc.name, (long long)n, (long long)B, method, ms, graph_ms, floor_ms, ms / floor_ms,
                cascade ? "true" : "false");
  out(buf);
  CK(cudaFree(ws));
  CK(cudaFree(lens));
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  {
    const size_t bytes = size_t(1) << 32;  // 4 GiB each way
    void *x, *y;
    CK(cudaMalloc(&x, bytes));
    CK(cudaMalloc(&y, bytes));
    CK(cudaMemset(x, 1, bytes));
    const float ms = time_ms([&] { CK(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice)); });
    copy_tbps = 2.0 * bytes / (ms * 1e9);
    unsigned* sink;
    CK(cudaMalloc(&sink, 4));
    const float rms = time_ms([&] {
      read_kernel<<<prop.multiProcessorCount * 8, 512>>>(static_cast<const uint4*>(x), bytes / 16, sink);
    });
    read_tbps = bytes / (rms * 1e9);
    char buf[640];
    std::snprintf(buf, sizeof buf, "{\"what\":\"hbm\",\"gpu\":\"%s\",\"copy_TBps\":%.3f,\"read_TBps\":%.3f}",
                  prop.name, copy_tbps, read_tbps);
    out(buf);
    CK(cudaFree(x));
    CK(cudaFree(y));
    CK(cudaFree(sink));
  }
  const std::vector<shape_case> shapes = {{"llama31_8b", 32, 8, 128, {8192, 32768, 131072}},
                                          {"smollm2_135m", 9, 3, 64, {8192, 32768}}};
  for (const auto& sc : shapes) {
    const int G = sc.q / sc.kv;
    for (index_t n : sc.lens) {
      if (!selected("KVTRIM_BENCH_ONLY", std::string(sc.name) + ":" + std::to_string(n))) continue;
      const index_t w = 8;
      const size_t kvn = size_t(sc.kv) * n * sc.d;
      bfloat16 *K, *V, *Q;
      CK(cudaMalloc(&K, kvn * 2));
      CK(cudaMalloc(&V, kvn * 2));
      CK(cudaMalloc(&Q, size_t(sc.q) * w * sc.d * 2));
      fill_bf16<<<1024, 256>>>(K, kvn, 1);
      fill_bf16<<<1024, 256>>>(V, kvn, 2);
      fill_bf16<<<64, 256>>>(Q, size_t(sc.q) * w * sc.d, 3);
      CK(cudaDeviceSynchronize());
      kvtrim::layer_kv<bfloat16> kv;  // [kv_head][token][dim], as kvpress's [B, H, n, d]
      kv.keys = kvtrim::view3<bfloat16>::head_major(K, sc.kv, n, sc.d);
      kv.values = kvtrim::view3<bfloat16>::head_major(V, sc.kv, n, sc.d);
      kv.queries = kvtrim::view3<const bfloat16>::head_major(Q, sc.q, w, sc.d);
      kvtrim::window_attention snap;
      snap.pool = kvtrim::pooling::max;
      snap.kernel = 7;
      kvtrim::window_attention shared = snap;
      shared.aggregate = kvtrim::aggregation::shared;
      kvtrim::cake_scores cake;
      cake.pool = kvtrim::pooling::max;
      cake.kernel = 7;
      std::mt19937 rng(5);
      std::vector<std::vector<double>> hs(32, std::vector<double>(static_cast<size_t>(sc.q)));
      for (auto& l : hs)
        for (auto& x : l) x = std::uniform_real_distribution<double>(0, 1)(rng);
      std::vector<double> le(32);
      for (auto& x : le) x = std::uniform_real_distribution<double>(0.1, 1)(rng);
      for (index_t B : {index_t(256), index_t(1024)}) {
        using namespace kvtrim;
        bench_method("snapkv", sc, n, B, all_heads{}, snap, uniform{}, kv);
        bench_method("pyramidkv", sc, n, B, all_heads{}, snap, pyramid(20), kv);
        bench_method("adakv", sc, n, B, all_heads{}, snap, head_adaptive<uniform>(0.2), kv);
        bench_method("headkv", sc, n, B, all_heads{}, snap, head_pool(hs, 1.01, head_pool::total::exact), kv);
        bench_method("compresskv", sc, n, B, kvtrim::retrieval_heads(hs, 4), shared, error_aware(le, 32), kv);
        bench_method("cake", sc, n, B, all_heads{}, cake, cake_layers(), kv);
      }
      // compaction alone: every other token kept (half the rows move), and B = 1024
      for (index_t keep_n : {n / 2, index_t(1024)}) {
        std::vector<int> keep(static_cast<size_t>(sc.kv) * n), lens(static_cast<size_t>(sc.kv), static_cast<int>(keep_n));
        for (int h = 0; h < sc.kv; ++h)
          for (index_t i = 0; i < keep_n; ++i)
            keep[static_cast<size_t>(h * n + i)] = static_cast<int>(i * (n / keep_n) + (n / keep_n) - 1);
        int *dk, *dl;
        CK(cudaMalloc(&dk, keep.size() * 4));
        CK(cudaMalloc(&dl, lens.size() * 4));
        CK(cudaMemcpy(dk, keep.data(), keep.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dl, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
        const std::size_t wb = kc::compact_workspace_bytes<bfloat16>(sc.kv, sc.d, n);
        void* ws;
        CK(cudaMalloc(&ws, wb));
        const float ms = time_ms([&] { kc::compact_in_place(kv.keys, kv.values, dk, n, dl, n, ws, wb, 0); });
        const double moved = 2.0 * 2.0 * double(sc.kv) * keep_n * sc.d * 2;  // K and V, read + write
        char buf[640];
        std::snprintf(buf, sizeof buf,
                      "{\"what\":\"kvtrim_cuda_compact\",\"shape\":\"%s\",\"n\":%lld,\"kept\":%lld,\"ms\":%.4f,"
                      "\"TBps\":%.3f,\"of_copy\":%.3f}",
                      sc.name, (long long)n, (long long)keep_n, ms, moved / (ms * 1e9),
                      moved / (ms * 1e9) / copy_tbps);
        out(buf);
        CK(cudaFree(dk));
        CK(cudaFree(dl));
        CK(cudaFree(ws));
      }
      // ragged decode: every head at length n (uncompressed) and at 1024 (compressed)
      for (index_t len : {n, index_t(1024)}) {
        std::vector<int> lens(static_cast<size_t>(sc.kv), static_cast<int>(len));
        int* dl;
        float *q, *o;
        CK(cudaMalloc(&dl, lens.size() * 4));
        CK(cudaMemcpy(dl, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&q, sizeof(float) * sc.q * sc.d));
        CK(cudaMalloc(&o, sizeof(float) * sc.q * sc.d));
        CK(cudaMemset(q, 0, sizeof(float) * sc.q * sc.d));
        const std::size_t wb = kc::ragged_decode_workspace_bytes<bfloat16>(sc.kv, G, sc.d, n);
        void* ws;
        CK(cudaMalloc(&ws, wb));
        const kvtrim::view3<const bfloat16> ck = kv.keys, cv = kv.values;
        const float ms = time_ms([&] {
          kc::ragged_decode<bfloat16>(q, ck, cv, dl, n, G, 0.088f, o, ws, wb, 0);
        });
        const double bytes = 2.0 * double(sc.kv) * len * sc.d * 2;
        char buf[640];
        std::snprintf(buf, sizeof buf,
                      "{\"what\":\"kvtrim_cuda_decode\",\"shape\":\"%s\",\"n\":%lld,\"length\":%lld,\"ms\":%.4f,"
                      "\"TBps\":%.3f,\"of_read\":%.3f}",
                      sc.name, (long long)n, (long long)len, ms, bytes / (ms * 1e9),
                      bytes / (ms * 1e9) / read_tbps);
        out(buf);
        CK(cudaFree(dl));
        CK(cudaFree(q));
        CK(cudaFree(o));
        CK(cudaFree(ws));
      }
      CK(cudaFree(K));
      CK(cudaFree(V));
      CK(cudaFree(Q));
    }
  }
  return 0;
}
