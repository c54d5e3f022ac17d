#pragma once
// What every header of the CUDA backend shares: error checks, element loads in f32, the float ->
// ordered-key map of the selection kernels, and the workspace carving that makes every entry
// point a two-step "ask the size, then run" call (as CUB's temp-storage query and FlashInfer's
// plan/run): nothing here allocates device memory, and no entry point synchronises the stream
// unless its header says so.
//
// Conventions of every entry point in kvtrim::cuda:
//   - views are the library's view3 over DEVICE pointers, any strides, float / half / bfloat16,
//     arithmetic in f32;
//   - `void* workspace, size_t workspace_bytes` is caller-owned device memory of at least the
//     size the matching *_workspace_bytes() query returned (null + 0 for a size query);
//   - `cudaStream_t stream` orders all work; host-side validation throws kvtrim::error before
//     anything is enqueued, a failed launch throws kvtrim::error naming the CUDA error.
#include <cuda_runtime.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "kvtrim/core/element.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {
namespace cuda {

// Most KV heads (per shard) and query heads the kernels' fixed-size parameter blocks describe.
// Per-head tables travel as kernel parameters (no host-to-device copy, no sync).
constexpr int max_kv_heads = 64;
constexpr int max_q_heads = 256;

namespace detail {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) kvtrim::detail::fail("cuda: ", what, ": ", cudaGetErrorString(e));
}
inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

// f32 value of one stored element (exact for half and bfloat16).
__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const bfloat16* p) {
  return __uint_as_float(static_cast<std::uint32_t>(p->bits) << 16);
}
__device__ __forceinline__ float load_f32(const half* p) {
  return __half2float(__ushort_as_half(p->bits));
}

// A float as an unsigned key that orders like the float (larger float -> larger key); -0 and +0
// map to the same key, as they compare equal on the host. NaN is rejected before selection.
__host__ __device__ __forceinline__ std::uint32_t order_key(float f) {
#if defined(__CUDA_ARCH__)
  std::uint32_t u = __float_as_uint(f);
#else
  std::uint32_t u = kvtrim::detail::float_bits(f);
#endif
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline constexpr std::size_t align_up(std::size_t x, std::size_t a) { return (x + a - 1) / a * a; }

// Carves typed pieces out of a workspace; with a null base it only adds up the size, so the size
// query and the run share one description of the layout.
class arena {
 public:
  explicit arena(void* base = nullptr) : base_(static_cast<char*>(base)) {}
  template <class T>
  T* take(std::size_t count) {
    off_ = align_up(off_, 256);
    T* p = base_ ? reinterpret_cast<T*>(base_ + off_) : nullptr;
    off_ += count * sizeof(T);
    return p;
  }
  std::size_t bytes() const { return align_up(off_, 256); }

 private:
  char* base_;
  std::size_t off_ = 0;
};

inline void check_workspace(const arena& need, void* ws, std::size_t bytes, const char* who) {
  kvtrim::detail::require(ws != nullptr || need.bytes() == 0, who, ": null workspace");
  kvtrim::detail::require(bytes >= need.bytes(), who, ": workspace of ", bytes,
                          " bytes, needs ", need.bytes(), " (ask the *_workspace_bytes query)");
}

inline int device_sms() {
  int dev = 0, sms = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev),
             "cudaDeviceGetAttribute");
  return sms;
}

inline unsigned blocks_for(index_t work, int per_block) {
  return static_cast<unsigned>((work + per_block - 1) / per_block);
}

}  // namespace detail

// Per-KV-head integers passed by value to a kernel (budgets, lengths known on the host).
struct head_ints {
  int count = 0;
  int v[max_kv_heads] = {};
};

}  // namespace cuda
}  // namespace kvtrim
