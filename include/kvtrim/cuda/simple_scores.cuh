#pragma once
// Scorers that read no attention, on the device: StreamingLLM's sinks + recent and the random
// baseline, bit-identical to score/streaming.hpp and score/random.hpp (integer arithmetic only),
// and the key norm (score/knorm.hpp).
#include <cstdint>

#include "kvtrim/cuda/common.cuh"
#include "kvtrim/cuda/window_scores.cuh"

namespace kvtrim {
namespace cuda {
namespace detail {

__host__ __device__ inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static __global__ void streaming_kernel(float* out, index_t c, index_t sinks) {
  const index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < c)
    out[blockIdx.y * c + j] = static_cast<float>(j < sinks ? c + (sinks - j) : j + 1);
}

static __global__ void random_kernel(float* out, index_t c, std::uint64_t seed, int layer,
                              index_t kv_head_offset, bool shared) {
  const index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= c) return;
  const std::uint64_t kv =
      shared ? ~std::uint64_t{0} : static_cast<std::uint64_t>(kv_head_offset + blockIdx.y);
  const std::uint64_t key =
      splitmix64(seed ^ splitmix64((static_cast<std::uint64_t>(layer) << 32) ^ kv));
  out[blockIdx.y * c + j] =
      static_cast<float>(splitmix64(key + static_cast<std::uint64_t>(j)) >> 40) * (1.0f / 16777216.0f);
}

// -||k|| per candidate, summed in the host's order with no fused multiply-add (the host's
// `sq += x * x` in f32), so the scores are bit-identical to score/knorm.hpp built without FMA
// contraction (x86-64 without -march, or -ffp-contract=off); sqrtf is IEEE-rounded.
template <class T>
static __global__ void knorm_kernel(view3<const T> K, index_t c, float* out) {
  const index_t j = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= c) return;
  const int h = blockIdx.y;
  float sq = 0.0f;
  for (index_t e = 0; e < K.dim(); ++e) {
    const float x = load_f32(&K(h, j, e));
    sq = __fadd_rn(sq, __fmul_rn(x, x));
  }
  out[h * c + j] = -sqrtf(sq);
}

}  // namespace detail

inline std::size_t simple_scores_workspace_bytes(int rows, index_t n, index_t w) {
  detail::arena a;
  a.take<float>(static_cast<size_t>(rows * (n - w)));
  return a.bytes();
}

namespace detail {
inline device_scores simple_out(void* ws, std::size_t bytes, int rows, bool shared, int kv_heads,
                                index_t n, index_t w) {
  arena a(ws);
  device_scores s;
  s.values = a.take<float>(static_cast<size_t>(rows * (n - w)));
  check_workspace(a, ws, bytes, "cuda scorer");
  s.rows = rows;
  s.shared = shared;
  s.kv_heads = kv_heads;
  s.candidates = n - w;
  s.window = w;
  return s;
}
}  // namespace detail

inline device_scores streaming_scores(int kv_heads, bool shared, index_t n, index_t w,
                                      index_t sinks, void* ws, std::size_t bytes,
                                      cudaStream_t stream) {
  const int rows = shared ? 1 : kv_heads;
  device_scores s = detail::simple_out(ws, bytes, rows, shared, kv_heads, n, w);
  if (s.candidates > 0) {
    detail::streaming_kernel<<<dim3(detail::blocks_for(s.candidates, 256), rows), 256, 0, stream>>>(
        s.values, s.candidates, sinks);
    detail::check_launch("streaming_kernel");
  }
  return s;
}

inline device_scores random_scores_device(int kv_heads, index_t kv_head_offset, bool shared,
                                          int layer, std::uint64_t seed, index_t n, index_t w,
                                          void* ws, std::size_t bytes, cudaStream_t stream) {
  const int rows = shared ? 1 : kv_heads;
  device_scores s = detail::simple_out(ws, bytes, rows, shared, kv_heads, n, w);
  if (s.candidates > 0) {
    detail::random_kernel<<<dim3(detail::blocks_for(s.candidates, 256), rows), 256, 0, stream>>>(
        s.values, s.candidates, seed, layer, kv_head_offset, shared);
    detail::check_launch("random_kernel");
  }
  return s;
}

template <class T>
device_scores knorm_scores(const view3<const T>& keys, index_t n, index_t w, void* ws,
                           std::size_t bytes, cudaStream_t stream) {
  const int rows = static_cast<int>(keys.heads());
  device_scores s = detail::simple_out(ws, bytes, rows, false, rows, n, w);
  if (s.candidates > 0) {
    detail::knorm_kernel<T><<<dim3(detail::blocks_for(s.candidates, 128), rows), 128, 0, stream>>>(
        keys, s.candidates, s.values);
    detail::check_launch("knorm_kernel");
  }
  return s;
}

}  // namespace cuda
}  // namespace kvtrim
