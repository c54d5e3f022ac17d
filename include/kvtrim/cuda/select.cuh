#pragma once
// Exact top-k per KV head on the device, with the host's tie rule (evict/top_k.hpp): head h keeps
// its top (b_h - w) candidates by score, ties to the LOWER token index, then the w window tokens,
// ascending, b_h = clamp(budget_h, w, n). Output: keep[h * keep_stride + i] (int32 token indices)
// and lengths[h] = b_h, both on the device.
//
// How: a segmented radix select (three passes of 11 / 11 / 10 bits over order_key(score), per
// row a global histogram filled by many blocks, the digit picked by the row's last block) finds
// each row's k-th largest key t and how many of the keys equal to t are still needed; then per
// chunk of 4096 candidates the count of keys > t and == t, and a block scan writes the kept
// indices in ascending order (the first `ties` keys equal to t, by index, are kept). No sort, no
// host round trip; 6 launches per layer (init, 3 passes, count, write). Rows of at most
// block_select_max candidates take block_select.cuh instead: one block per row, the keys cached
// in shared memory, one launch. Scores must hold no NaN (the host path rejects them; this path
// does not look).
#include <cub/block/block_scan.cuh>

#include <algorithm>

#include "kvtrim/cuda/block_select.cuh"
#include "kvtrim/cuda/common.cuh"
#include "kvtrim/cuda/window_scores.cuh"

namespace kvtrim {
namespace cuda {
namespace detail {

constexpr int select_chunk = 4096;  // candidates per block (256 threads x 16)

struct select_state {
  std::uint32_t prefix;
  int k, k_rem, len;
  int trivial;  // 0: radix select, 1: keep no candidate, 2: keep every candidate
};

// Three radix passes over the 32-bit keys: 11, 11 and 10 bits (2048-bin histograms).
constexpr int radix_bins = 2048;
constexpr int radix_passes_n = 3;
__host__ __device__ constexpr int radix_shift(int pass) { return pass == 0 ? 21 : (pass == 1 ? 10 : 0); }
__host__ __device__ constexpr int radix_bits(int pass) { return pass == 2 ? 10 : 11; }

__device__ inline void init_state(select_state& s, int k, int len) {
  s.prefix = 0;
  s.k = k;
  s.k_rem = k;
  s.len = len;
  s.trivial = k <= 0 ? 1 : (k >= len ? 2 : 0);
}

// Zeroes a row's histogram and ticket (each pass's last block leaves them zero again).
__device__ inline void clear_row(unsigned* hist, unsigned* ticket, int v) {
  for (int i = threadIdx.x; i < radix_bins; i += blockDim.x) hist[v * radix_bins + i] = 0;
  if (threadIdx.x == 0) ticket[v] = 0;
}

static __global__ void select_init_budgets(const int* budgets, index_t n, index_t w, index_t len,
                                    select_state* st, unsigned* hist, unsigned* ticket, int* lengths) {
  const int v = blockIdx.x;
  if (threadIdx.x == 0) {
    const index_t b = budgets[v];
    const index_t bb = b < w ? w : (b > n ? n : b);
    lengths[v] = static_cast<int>(bb);
    init_state(st[v], static_cast<int>(bb - w), static_cast<int>(len));
  }
  clear_row(hist, ticket, v);
}

static __global__ void select_init_fixed(int k, index_t len, select_state* st, unsigned* hist,
                                  unsigned* ticket, int* counters, int ncounters) {
  if (threadIdx.x == 0) init_state(st[0], k, static_cast<int>(len));
  clear_row(hist, ticket, 0);
  for (int i = threadIdx.x; i < ncounters; i += blockDim.x) counters[i] = 0;
}

// One radix pass: every block histograms its chunk of the row's keys that still match the
// prefix (warp-aggregated shared atomics: the keys of a row share their top bits, so plain
// atomics would serialise on one bin), adds it to the row's global histogram, and the LAST
// block of the row (ticket) picks the digit holding the k_rem-th largest key, then clears the
// histogram and the ticket for the next pass. One launch per pass, no separate pick kernel.
static __global__ void __launch_bounds__(256) select_pass(const float* values, index_t row_stride,
                                                   select_state* st, unsigned* hist,
                                                   unsigned* ticket, int pass) {
  const int v = blockIdx.y;
  const select_state s = st[v];
  if (s.trivial) return;
  const int shift = radix_shift(pass), bits = radix_bits(pass), high = shift + bits;
  const unsigned mask = (1u << bits) - 1u;
  __shared__ unsigned h[radix_bins];
  __shared__ bool last;
  for (int i = threadIdx.x; i < radix_bins; i += blockDim.x) h[i] = 0;
  __syncthreads();
  const float* row = values + v * row_stride;
  const index_t a = static_cast<index_t>(blockIdx.x) * select_chunk;
  const index_t b = a + select_chunk < s.len ? a + select_chunk : s.len;
  const unsigned lane = threadIdx.x % 32;
  // All 16 keys of this thread are loaded before the first match (the loads overlap instead of
  // waiting one global latency each between matches); blockDim.x is 256.
  constexpr int items = select_chunk / 256;
  float key_f[items];
#pragma unroll
  for (int u = 0; u < items; ++u) {
    const index_t i = a + u * 256 + threadIdx.x;
    key_f[u] = i < b ? row[i] : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < items; ++u) {
    const index_t i = a + u * 256 + threadIdx.x;
    unsigned digit = 0xffffffffu;
    if (i < b) {
      const std::uint32_t key = order_key(key_f[u]);
      if (high == 32 || (key >> high) == (s.prefix >> high)) digit = (key >> shift) & mask;
    }
    const unsigned peers = __match_any_sync(0xffffffffu, digit);
    if (digit != 0xffffffffu && lane == static_cast<unsigned>(__ffs(peers) - 1))
      atomicAdd(&h[digit], static_cast<unsigned>(__popc(peers)));
  }
  __syncthreads();
  for (int i = threadIdx.x; i <= static_cast<int>(mask); i += blockDim.x)
    if (h[i]) atomicAdd(&hist[v * radix_bins + i], h[i]);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&ticket[v], 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The pick, by all 256 threads: thread t owns bins [top - 8(t+1), top - 8t) (descending).
  constexpr int per = radix_bins / 256;
  const int nb = static_cast<int>(mask) + 1, per_t = nb / 256;
  unsigned cnt[per];
  unsigned mine = 0;
#pragma unroll
  for (int j = 0; j < per; ++j) {
    const int bin = nb - 1 - (static_cast<int>(threadIdx.x) * per_t + j);
    cnt[j] = j < per_t ? __ldcg(&hist[v * radix_bins + bin]) : 0u;
    mine += cnt[j];
  }
  using scan = cub::BlockScan<unsigned, 256>;
  __shared__ typename scan::TempStorage tmp;
  unsigned before;
  scan(tmp).ExclusiveSum(mine, before);
  const unsigned want = static_cast<unsigned>(s.k_rem);
  if (before < want && want <= before + mine) {  // exactly one thread
    unsigned cum = before;
    for (int j = 0; j < per_t; ++j) {
      if (cum + cnt[j] >= want) {
        const int bin = nb - 1 - (static_cast<int>(threadIdx.x) * per_t + j);
        select_state o = s;
        o.prefix |= static_cast<std::uint32_t>(bin) << shift;
        o.k_rem -= static_cast<int>(cum);
        st[v] = o;
        break;
      }
      cum += cnt[j];
    }
  }
  __syncthreads();
  clear_row(hist, ticket, v);
}

static __global__ void __launch_bounds__(256) select_count(const float* values, index_t row_stride,
                                                    const select_state* st, int2* counts,
                                                    int chunks) {
  const int v = blockIdx.y;
  const select_state s = st[v];
  if (s.trivial) return;
  const float* row = values + v * row_stride;
  const index_t a = static_cast<index_t>(blockIdx.x) * select_chunk;
  const index_t b = a + select_chunk < s.len ? a + select_chunk : s.len;
  int above = 0, eq = 0;
  for (index_t i = a + threadIdx.x; i < b; i += blockDim.x) {
    const std::uint32_t key = order_key(row[i]);
    above += key > s.prefix;
    eq += key == s.prefix;
  }
  __shared__ int ra[256], re[256];
  ra[threadIdx.x] = above;
  re[threadIdx.x] = eq;
  __syncthreads();
  for (int o = 128; o > 0; o /= 2) {
    if (threadIdx.x < o) {
      ra[threadIdx.x] += ra[threadIdx.x + o];
      re[threadIdx.x] += re[threadIdx.x + o];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) counts[v * chunks + blockIdx.x] = make_int2(ra[0], re[0]);
}

static __global__ void __launch_bounds__(256) select_write(const float* values, index_t row_stride,
                                                    const select_state* st, const int2* counts,
                                                    int chunks, int* keep, index_t keep_stride,
                                                    index_t c, index_t w) {
  constexpr int items = select_chunk / 256;
  using scan = cub::BlockScan<unsigned, 256>;
  __shared__ typename scan::TempStorage tmp;
  __shared__ int sh_base, sh_allowed;
  const int v = blockIdx.y;
  const select_state s = st[v];
  int* out = keep + v * keep_stride;
  const index_t kept = s.trivial == 1 ? 0 : (s.trivial == 2 ? c : s.k);
  if (blockIdx.x == 0)
    for (index_t t = threadIdx.x; t < w; t += blockDim.x) out[kept + t] = static_cast<int>(c + t);
  if (s.trivial == 1) return;
  const index_t a = static_cast<index_t>(blockIdx.x) * select_chunk;
  if (s.trivial == 2) {
    for (index_t i = a + threadIdx.x; i < a + select_chunk && i < c; i += blockDim.x)
      out[i] = static_cast<int>(i);
    return;
  }
  if (threadIdx.x == 0) {
    int base = 0, eq_before = 0;
    for (int q = 0; q < static_cast<int>(blockIdx.x); ++q) {
      const int2 cq = counts[v * chunks + q];
      int allow = s.k_rem - eq_before;
      allow = allow < 0 ? 0 : (allow > cq.y ? cq.y : allow);
      base += cq.x + allow;
      eq_before += cq.y;
    }
    int allow = s.k_rem - eq_before;
    const int eq_here = counts[v * chunks + blockIdx.x].y;
    sh_allowed = allow < 0 ? 0 : (allow > eq_here ? eq_here : allow);
    sh_base = base;
  }
  const float* row = values + v * row_stride;
  const index_t i0 = a + static_cast<index_t>(threadIdx.x) * items;
  unsigned flags[items];
  unsigned mine = 0;
#pragma unroll
  for (int u = 0; u < items; ++u) {
    const index_t i = i0 + u;
    unsigned f = 0;
    if (i < s.len) {
      const std::uint32_t key = order_key(row[i]);
      f = key > s.prefix ? 1u : (key == s.prefix ? 0x10000u : 0u);
    }
    flags[u] = f;
    mine += f;
  }
  unsigned before;
  scan(tmp).ExclusiveSum(mine, before);
  __syncthreads();
  const int base = sh_base, allowed = sh_allowed;
  int A = static_cast<int>(before & 0xffffu), E = static_cast<int>(before >> 16);
#pragma unroll
  for (int u = 0; u < items; ++u) {
    const unsigned f = flags[u];
    if (f == 1u) {
      out[base + A + (E < allowed ? E : allowed)] = static_cast<int>(i0 + u);
      ++A;
    } else if (f == 0x10000u) {
      if (E < allowed) out[base + A + E] = static_cast<int>(i0 + u);
      ++E;
    }
  }
}

// The radix passes for `rows` rows (state, histograms and tickets already initialised).
inline void radix_passes(const float* values, index_t row_stride, index_t len, int rows,
                         select_state* st, unsigned* hist, unsigned* ticket, cudaStream_t stream) {
  const unsigned chunks = blocks_for(len, select_chunk);
  for (int pass = 0; pass < radix_passes_n; ++pass)
    select_pass<<<dim3(chunks, rows), 256, 0, stream>>>(values, row_stride, st, hist, ticket, pass);
  check_launch("select radix passes");
}

inline arena select_layout(void* base, int heads, index_t c, select_state** st, unsigned** hist,
                           unsigned** ticket, int2** counts, int** budgets) {
  arena a(base);
  *budgets = a.take<int>(static_cast<size_t>(heads));
  *st = a.take<select_state>(static_cast<size_t>(heads));
  *hist = a.take<unsigned>(static_cast<size_t>(heads) * radix_bins);
  *ticket = a.take<unsigned>(static_cast<size_t>(heads));
  *counts = a.take<int2>(static_cast<size_t>(heads) * (blocks_for(c, select_chunk) + 1));
  return a;
}

}  // namespace detail

inline std::size_t select_top_workspace_bytes(int kv_heads, index_t n, index_t w) {
  detail::select_state* st;
  unsigned *h, *t;
  int2* c;
  int* b;
  return detail::select_layout(nullptr, kv_heads, n - w, &st, &h, &t, &c, &b).bytes();
}

namespace detail {
static __global__ void fill_ints(head_ints v, int* out) {
  if (threadIdx.x < v.count) out[threadIdx.x] = v.v[threadIdx.x];
}

// budgets_dev null: the budgets by value (written to the workspace where the long path needs them)
inline void select_top_impl(const device_scores& s, const int* budgets_dev, const head_ints& budgets,
                            int* keep, index_t keep_stride, int* lengths, void* workspace,
                            std::size_t workspace_bytes, cudaStream_t stream) {
  const index_t c = s.candidates, w = s.window, n = c + w;
  const int H = s.kv_heads;
  kvtrim::detail::require(H >= 1 && w >= 1 && keep_stride >= n, "cuda::select_top: ", H,
                          " heads, window ", w, ", keep stride ", keep_stride, " (need >= ", n, ")");
  kvtrim::detail::require(budgets_dev || budgets.count == H, "cuda::select_top: ", budgets.count,
                          " budgets for ", H, " KV heads");
  select_state* st;
  unsigned *hist, *ticket;
  int2* counts;
  int* ws_budgets;
  const arena need = select_layout(workspace, H, c, &st, &hist, &ticket, &counts, &ws_budgets);
  check_workspace(need, workspace, workspace_bytes, "cuda::select_top");
  const index_t row_stride = s.shared ? 0 : c;
  if (c <= block_select_max) {
    block_select(s.values, row_stride, H, budgets_dev, budgets, n, w, keep, keep_stride, lengths, stream);
    return;
  }
  if (!budgets_dev) {
    fill_ints<<<1, max_kv_heads, 0, stream>>>(budgets, ws_budgets);
    check_launch("fill_ints");
    budgets_dev = ws_budgets;
  }
  select_init_budgets<<<H, 256, 0, stream>>>(budgets_dev, n, w, c, st, hist, ticket, lengths);
  check_launch("select_init_budgets");
  radix_passes(s.values, row_stride, c, H, st, hist, ticket, stream);
  const unsigned chunks = std::max(1u, blocks_for(c, select_chunk));
  select_count<<<dim3(chunks, H), 256, 0, stream>>>(s.values, row_stride, st, counts,
                                                    static_cast<int>(chunks));
  select_write<<<dim3(chunks, H), 256, 0, stream>>>(s.values, row_stride, st, counts,
                                                    static_cast<int>(chunks), keep, keep_stride, c, w);
  check_launch("select_write");
}
}  // namespace detail

// budgets: device, one per KV head (window included, clipped here to [w, n]). keep: device,
// kv_heads rows of keep_stride >= n ints. lengths: device, kv_heads ints.
inline void select_top(const device_scores& s, const int* budgets, int* keep, index_t keep_stride,
                       int* lengths, void* workspace, std::size_t workspace_bytes,
                       cudaStream_t stream) {
  kvtrim::detail::require(budgets != nullptr, "cuda::select_top: null budgets");
  detail::select_top_impl(s, budgets, head_ints{}, keep, keep_stride, lengths, workspace,
                          workspace_bytes, stream);
}

// The same with budgets known on the host (plan-time allocators): passed by value, no upload.
inline void select_top(const device_scores& s, const head_ints& budgets, int* keep,
                       index_t keep_stride, int* lengths, void* workspace,
                       std::size_t workspace_bytes, cudaStream_t stream) {
  detail::select_top_impl(s, nullptr, budgets, keep, keep_stride, lengths, workspace,
                          workspace_bytes, stream);
}

// Writes host-known per-head integers (budgets of a plan-time allocator) to device memory with
// one tiny kernel: no host-to-device copy, no sync.
inline void upload_head_ints(const head_ints& v, int* out, cudaStream_t stream) {
  detail::fill_ints<<<1, max_kv_heads, 0, stream>>>(v, out);
  detail::check_launch("fill_ints");
}

}  // namespace cuda
}  // namespace kvtrim
