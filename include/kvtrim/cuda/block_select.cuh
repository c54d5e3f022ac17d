#pragma once
// One-block-per-row top-k for the rows short enough to live in one SM (select.cuh's dispatch):
// the multi-block radix select of select.cuh costs 6 launches of ~5-15 us each whatever the
// length, which is most of a layer's step at 8k-32k tokens. Here one block of 1024 threads
// caches the row's ordered keys in shared memory (at most block_select_max), runs the same
// three radix passes (11 / 11 / 10 bits) on the cached keys, and writes the kept indices in
// ascending order with warp ballots: one launch, no global histogram, no tickets.
//
// The result is the host's (evict/top_k.hpp) exactly: the row's k-th largest key t, every key
// above t, and the first k_rem keys equal to t by index (lower index wins a tie).
#include <cub/block/block_scan.cuh>

#include "kvtrim/cuda/common.cuh"

namespace kvtrim {
namespace cuda {
namespace detail {

constexpr int block_select_threads = 1024;
// Rows up to this many candidates take the one-block path (96 KiB of cached keys). Measured on
// an H200 (docs/BENCHMARKS.md): 16 us for 8 rows of 8k, against ~40 us for the 6-launch path;
// at 32k the two are about even (46 vs ~41 us), so longer rows keep the multi-block path.
constexpr index_t block_select_max = 24576;

// The radix passes of one row inside one block. key(i) returns the ordered key of candidate i
// (shared or global memory); k in [1, len - 1]. On return every thread holds the k-th largest
// key (prefix) and how many keys equal to it are kept (k_rem >= 1).
template <class KeyAt>
__device__ void block_radix_select(KeyAt key, index_t len, int k, std::uint32_t& prefix,
                                   int& k_rem) {
  __shared__ unsigned hist[2048];
  __shared__ std::uint32_t sh_prefix;
  __shared__ int sh_rem;
  using scan = cub::BlockScan<unsigned, block_select_threads>;
  __shared__ typename scan::TempStorage tmp;
  prefix = 0;
  k_rem = k;
  const unsigned lane = threadIdx.x % 32;
  for (int pass = 0; pass < 3; ++pass) {
    const int shift = pass == 0 ? 21 : (pass == 1 ? 10 : 0), bits = pass == 2 ? 10 : 11;
    const int high = shift + bits, nb = 1 << bits;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (index_t base = 0; base < len; base += block_select_threads) {
      const index_t i = base + threadIdx.x;
      unsigned digit = 0xffffffffu;
      if (i < len) {
        const std::uint32_t kk = key(i);
        if (high == 32 || (kk >> high) == (prefix >> high)) digit = (kk >> shift) & (nb - 1u);
      }
      // keys of a row share their top bits: aggregate equal digits of a warp into one atomic
      const unsigned peers = __match_any_sync(0xffffffffu, digit);
      if (digit != 0xffffffffu && lane == static_cast<unsigned>(__ffs(peers) - 1))
        atomicAdd(&hist[digit], static_cast<unsigned>(__popc(peers)));
    }
    __syncthreads();
    // thread t owns bins nb-1-t*per .. nb-per-t*per (descending); the owner of the k_rem-th
    // largest key picks the digit
    const int per = nb / block_select_threads;  // 2 or 1
    unsigned cnt[2] = {0u, 0u}, mine = 0;
    for (int j = 0; j < per; ++j) mine += cnt[j] = hist[nb - 1 - static_cast<int>(threadIdx.x) * per - j];
    unsigned before;
    scan(tmp).ExclusiveSum(mine, before);
    const unsigned want = static_cast<unsigned>(k_rem);
    if (before < want && want <= before + mine) {
      unsigned cum = before;
      for (int j = 0; j < per; ++j) {
        if (cum + cnt[j] >= want) {
          const int bin = nb - 1 - static_cast<int>(threadIdx.x) * per - j;
          sh_prefix = prefix | (static_cast<std::uint32_t>(bin) << shift);
          sh_rem = k_rem - static_cast<int>(cum);
          break;
        }
        cum += cnt[j];
      }
    }
    __syncthreads();
    prefix = sh_prefix;
    k_rem = sh_rem;
  }
}

// Writes the kept candidates of one row in ascending order: every key above t, and the first
// k_rem keys equal to t. Each warp walks its contiguous slice twice (count, then write) so the
// output positions need one scan over 32 warp totals.
template <class KeyAt>
__device__ void block_write_kept(KeyAt key, index_t len, std::uint32_t t, int k_rem, int* out) {
  __shared__ int wa[32], we[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const index_t slice = (len + 32 * 32 - 1) / (32 * 32) * 32;
  const index_t lo = warp * slice, hi = lo + slice < len ? lo + slice : len;
  int A = 0, E = 0;
  for (index_t b = lo; b < hi; b += 32) {
    const index_t i = b + lane;
    const std::uint32_t kk = i < hi ? key(i) : 0u;
    A += __popc(__ballot_sync(0xffffffffu, i < hi && kk > t));
    E += __popc(__ballot_sync(0xffffffffu, i < hi && kk == t));
  }
  if (lane == 0) {
    wa[warp] = A;
    we[warp] = E;
  }
  __syncthreads();
  if (warp == 0) {  // exclusive scans of the warp totals
    int a = wa[lane], e = we[lane];
    for (int o = 1; o < 32; o *= 2) {
      const int pa = __shfl_up_sync(0xffffffffu, a, o), pe = __shfl_up_sync(0xffffffffu, e, o);
      if (lane >= o) {
        a += pa;
        e += pe;
      }
    }
    wa[lane] = a - wa[lane];
    we[lane] = e - we[lane];
  }
  __syncthreads();
  A = wa[warp];
  E = we[warp];
  const unsigned lt = (1u << lane) - 1u;
  for (index_t b = lo; b < hi; b += 32) {
    const index_t i = b + lane;
    const std::uint32_t kk = i < hi ? key(i) : 0u;
    const unsigned ma = __ballot_sync(0xffffffffu, i < hi && kk > t);
    const unsigned me = __ballot_sync(0xffffffffu, i < hi && kk == t);
    const int a = A + __popc(ma & lt), e = E + __popc(me & lt);
    if (i < hi && kk > t) out[a + (e < k_rem ? e : k_rem)] = static_cast<int>(i);
    else if (i < hi && kk == t && e < k_rem) out[a + e] = static_cast<int>(i);
    A += __popc(ma);
    E += __popc(me);
  }
}

// Top-k per KV head, one block per head (select.cuh: select_top when n - w <= block_select_max).
// Budgets from device memory (budgets_dev) or, when that is null, by value.
static __global__ void __launch_bounds__(block_select_threads)
    block_select_kernel(const float* values, index_t row_stride, const int* budgets_dev,
                        head_ints budgets, index_t n, index_t w, int* keep, index_t keep_stride,
                        int* lengths) {
  extern __shared__ std::uint32_t cached[];  // [n - w]
  const int v = blockIdx.x;
  const index_t c = n - w;
  const index_t b = budgets_dev ? budgets_dev[v] : budgets.v[v];
  const index_t bb = b < w ? w : (b > n ? n : b), k = bb - w;
  if (threadIdx.x == 0) lengths[v] = static_cast<int>(bb);
  int* out = keep + v * keep_stride;
  for (index_t t = threadIdx.x; t < w; t += blockDim.x) out[k + t] = static_cast<int>(c + t);
  if (k == 0) return;
  if (k == c) {
    for (index_t i = threadIdx.x; i < c; i += blockDim.x) out[i] = static_cast<int>(i);
    return;
  }
  const float* row = values + v * row_stride;
  for (index_t i = threadIdx.x; i < c; i += blockDim.x) cached[i] = order_key(row[i]);
  __syncthreads();
  auto key = [&](index_t i) { return cached[i]; };
  std::uint32_t t;
  int k_rem;
  block_radix_select(key, c, static_cast<int>(k), t, k_rem);
  block_write_kept(key, c, t, k_rem, out);
}

inline void block_select(const float* values, index_t row_stride, int rows, const int* budgets_dev,
                         const head_ints& budgets, index_t n, index_t w, int* keep,
                         index_t keep_stride, int* lengths, cudaStream_t stream) {
  const std::size_t smem = sizeof(std::uint32_t) * static_cast<std::size_t>(n - w);
  if (smem > 32 * 1024)  // beside the ~12 KiB of static shared memory
    check_cuda(cudaFuncSetAttribute(block_select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)),
               "cudaFuncSetAttribute (block_select_kernel)");
  block_select_kernel<<<rows, block_select_threads, smem, stream>>>(
      values, row_stride, budgets_dev, budgets, n, w, keep, keep_stride, lengths);
  check_launch("block_select_kernel");
}

}  // namespace detail
}  // namespace cuda
}  // namespace kvtrim
