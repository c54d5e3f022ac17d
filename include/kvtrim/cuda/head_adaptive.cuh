#pragma once
// Ada-KV's head-adaptive split of a layer's budget (allocate/head_adaptive.hpp) on the device:
// the layer-wide top-S over all (head, candidate) pairs -- one radix select over the flattened
// [head][candidate] scores, whose index order IS the host's tie order (lower head, then lower
// token) -- the pairs each head wins, the floor alpha, and the exact largest-remainder
// apportioning (apportion.hpp, the host's arithmetic in one device thread). Layers of at most
// block_select_max pairs do it all in one block, one launch (block_select.cuh). The inner
// allocator's budgets are known on the host (plan time); the adaptive budgets never leave the
// device: select_top reads them where they are. No host sync.
#include "kvtrim/cuda/apportion.hpp"
#include "kvtrim/cuda/select.cuh"

namespace kvtrim {
namespace cuda {
namespace detail {

static __global__ void __launch_bounds__(256) adaptive_count(const float* values, index_t c,
                                                      const select_state* st, int* above, int* eq) {
  const int h = blockIdx.y;
  const std::uint32_t t = st[0].prefix;
  const float* row = values + h * c;
  const index_t a = static_cast<index_t>(blockIdx.x) * select_chunk;
  const index_t b = a + select_chunk < c ? a + select_chunk : c;
  int na = 0, ne = 0;
  for (index_t i = a + threadIdx.x; i < b; i += blockDim.x) {
    const std::uint32_t key = order_key(row[i]);
    na += key > t;
    ne += key == t;
  }
  for (int o = 16; o > 0; o /= 2) {
    na += __shfl_xor_sync(0xffffffffu, na, o);
    ne += __shfl_xor_sync(0xffffffffu, ne, o);
  }
  if (threadIdx.x % 32 == 0) {
    if (na) atomicAdd(above + h, na);
    if (ne) atomicAdd(eq + h, ne);
  }
}

// The pairs each head wins (every key above the threshold, then the equal ones in head order),
// then the floor and the largest-remainder apportioning. One device thread.
__device__ inline void apportion_budgets(int k_rem, const int* above, const int* eq, int heads,
                                         index_t slots, index_t c, index_t w, double alpha,
                                         int* budgets) {
  index_t left = k_rem;
  double quota[apportion_max_items];
  std::int64_t hi[apportion_max_items], cap[apportion_max_items];
  const double floor_share = alpha * static_cast<double>(slots) / static_cast<double>(heads);
  for (int h = 0; h < heads; ++h) {
    const index_t more = eq[h] < left ? eq[h] : left;
    left -= more;
    const index_t won = above[h] + more;
    // the host's explicit fused multiply-add (allocate/head_adaptive.hpp): the same rounding
    quota[h] = fma(1.0 - alpha, static_cast<double>(won), floor_share);
    hi[h] = c;
  }
  apportion_small(quota, heads, slots, hi, cap);
  for (int h = 0; h < heads; ++h) budgets[h] = static_cast<int>(cap[h] + w);
}

static __global__ void adaptive_apportion(const select_state* st, const int* above, const int* eq,
                                   int heads, index_t slots, index_t c, index_t w, double alpha,
                                   int* budgets) {
  if (threadIdx.x == 0) apportion_budgets(st[0].k_rem, above, eq, heads, slots, c, w, alpha, budgets);
}

// The whole split in one block, the flattened scores cached in shared memory (layers of at most
// block_select_max pairs; reading them from L2 on each pass instead measured slower than the
// multi-block path): the radix select, the per-head counts, the apportioning.
static __global__ void __launch_bounds__(block_select_threads)
    block_adaptive_kernel(const float* values, int heads, index_t c, index_t w, int slots,
                          double alpha, int* budgets) {
  extern __shared__ std::uint32_t cached[];
  __shared__ int above[max_kv_heads], eq[max_kv_heads];
  const index_t len = heads * c;
  for (index_t i = threadIdx.x; i < len; i += blockDim.x) cached[i] = order_key(values[i]);
  for (int h = threadIdx.x; h < heads; h += blockDim.x) above[h] = eq[h] = 0;
  __syncthreads();
  auto key = [&](index_t i) { return cached[i]; };
  std::uint32_t t;
  int k_rem;
  block_radix_select(key, len, slots, t, k_rem);
  for (int h = 0; h < heads; ++h) {
    int na = 0, ne = 0;
    for (index_t i = h * c + threadIdx.x; i < (h + 1) * c; i += blockDim.x) {
      const std::uint32_t kk = key(i);
      na += kk > t;
      ne += kk == t;
    }
    for (int o = 16; o > 0; o /= 2) {
      na += __shfl_xor_sync(0xffffffffu, na, o);
      ne += __shfl_xor_sync(0xffffffffu, ne, o);
    }
    if (threadIdx.x % 32 == 0 && (na || ne)) {
      atomicAdd(above + h, na);
      atomicAdd(eq + h, ne);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) apportion_budgets(k_rem, above, eq, heads, slots, c, w, alpha, budgets);
}

}  // namespace detail

inline std::size_t head_adaptive_workspace_bytes(int kv_heads) {
  detail::arena a;
  a.take<detail::select_state>(1);
  a.take<unsigned>(detail::radix_bins);
  a.take<unsigned>(1);
  a.take<int>(2 * static_cast<size_t>(kv_heads));
  return a.bytes();
}

// Per-KV-head budgets (window included) of one layer from per-head scores s (not shared) and the
// inner allocator's budgets (host). Writes budgets_out (device, s.kv_heads ints). When nothing
// can move (all window, or every candidate kept) the inner budgets are written unchanged, as on
// the host.
inline void head_adaptive_budgets(const device_scores& s, const head_ints& inner, double alpha,
                                  int* budgets_out, void* workspace, std::size_t workspace_bytes,
                                  cudaStream_t stream) {
  const int H = s.kv_heads;
  const index_t c = s.candidates, w = s.window;
  kvtrim::detail::require(inner.count == H && H <= detail::apportion_max_items,
                          "cuda::head_adaptive_budgets: ", inner.count, " inner budgets for ", H,
                          " KV heads (at most ", detail::apportion_max_items, ")");
  index_t slots = 0;
  for (int h = 0; h < H; ++h) slots += inner.v[h] - w;
  if (s.shared || slots == 0 || slots >= H * c) {
    upload_head_ints(inner, budgets_out, stream);
    return;
  }
  detail::arena a(workspace);
  auto* st = a.take<detail::select_state>(1);
  auto* hist = a.take<unsigned>(detail::radix_bins);
  auto* ticket = a.take<unsigned>(1);
  int* counters = a.take<int>(2 * static_cast<size_t>(H));
  detail::check_workspace(a, workspace, workspace_bytes, "cuda::head_adaptive_budgets");
  if (H * c <= detail::block_select_max) {
    const std::size_t smem = sizeof(std::uint32_t) * static_cast<std::size_t>(H * c);
    if (smem > 32 * 1024)
      detail::check_cuda(cudaFuncSetAttribute(detail::block_adaptive_kernel,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              static_cast<int>(smem)),
                         "cudaFuncSetAttribute (block_adaptive_kernel)");
    detail::block_adaptive_kernel<<<1, detail::block_select_threads, smem, stream>>>(
        s.values, H, c, w, static_cast<int>(slots), alpha, budgets_out);
    detail::check_launch("block_adaptive_kernel");
    return;
  }
  detail::select_init_fixed<<<1, 256, 0, stream>>>(static_cast<int>(slots), H * c, st, hist,
                                                   ticket, counters, 2 * H);
  detail::check_launch("select_init_fixed");
  detail::radix_passes(s.values, 0, H * c, 1, st, hist, ticket, stream);
  detail::adaptive_count<<<dim3(detail::blocks_for(c, detail::select_chunk), H), 256, 0, stream>>>(
      s.values, c, st, counters, counters + H);
  detail::adaptive_apportion<<<1, 32, 0, stream>>>(st, counters, counters + H, H, slots, c, w,
                                                   alpha, budgets_out);
  detail::check_launch("adaptive_apportion");
}

}  // namespace cuda
}  // namespace kvtrim
