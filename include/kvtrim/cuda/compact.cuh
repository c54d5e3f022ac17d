#pragma once
// The eviction executors on the device (evict/compact_in_place.hpp, evict/copy_to.hpp): each KV
// head's kept rows (keep[h * keep_stride + i], ascending, lengths[h] of them, both on the device)
// move to the front of that head's rows in place, original order kept, rows at or past the new
// length never written; or are gathered into a caller's destination views.
//
// In place, one pass: a row i moves from keep[i] >= i, so only a LATER tile's writes can clobber
// rows an EARLIER tile still has to read. Each block takes a ticket (tiles are numbered in order
// per (tensor, head)), stages its tile's source rows in shared memory, publishes "read done",
// and before writing waits for the earlier tiles of its head whose source rows reach into its
// destination range (decoupled look-back: tickets are handed out in order, so every tile waited
// on is already running and never waits on a later one; no deadlock, no second buffer). Rows
// already in place (keep[i] == i, the untouched prefix) are not rewritten. Any strides; 16-byte
// vector copies when rows are contiguous and aligned.
#include <algorithm>
#include <type_traits>

#include "kvtrim/cuda/common.cuh"

namespace kvtrim {
namespace cuda {
namespace detail {

template <class T>
struct row_io {
  view3<T> v;
  __device__ bool vector_ok() const {
    return v.stride_dim() == 1 && (v.dim() * sizeof(T)) % 16 == 0 &&
           (reinterpret_cast<std::uintptr_t>(v.data()) % 16) == 0 &&
           (v.stride_head() * sizeof(T)) % 16 == 0 && (v.stride_token() * sizeof(T)) % 16 == 0;
  }
};

template <class T>
using elem_bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint16_t>;

// Copies rows [i0, i0 + nr) of head h (sources keep[i]) into smem, then (after `wait`) to
// destination positions i (dst head h). Src and dst may be the same memory.
template <class T, bool InPlace>
static __global__ void __launch_bounds__(256) move_rows_kernel(view3<T> k_src, view3<T> v_src, view3<T> k_dst,
                                                        view3<T> v_dst, const int* keep,
                                                        index_t keep_stride, const int* lengths,
                                                        int tile_rows,
                                                        unsigned* ticket, int* flags) {
  extern __shared__ uint4 stage4[];
  __shared__ int tk, sh_total, sh_first[max_kv_heads + 1];
  const int heads = static_cast<int>(k_src.heads());
  if (threadIdx.x == 0) {  // tiles that exist: per (tensor, head) ceil(len / tile_rows)
    int total = 0;
    for (int h = 0; h < heads; ++h) {
      sh_first[h] = total;
      total += (lengths[h] + tile_rows - 1) / tile_rows;
    }
    sh_first[heads] = total;
    sh_total = 2 * total;
  }
  __syncthreads();
  const int per_tensor = sh_first[heads];
  using E = elem_bits<T>;
  const int d = static_cast<int>(k_src.dim());
  const bool vec = row_io<T>{k_src}.vector_ok() && row_io<T>{k_dst}.vector_ok() &&
                   row_io<T>{v_src}.vector_ok() && row_io<T>{v_dst}.vector_ok();
  const int per_row = d * static_cast<int>(sizeof(T)) / 16;
  for (;;) {  // a persistent grid: tickets in order, one tile each
    if (threadIdx.x == 0) tk = static_cast<int>(atomicAdd(ticket, 1u));
    __syncthreads();
    const int t = tk;
    if (t >= sh_total) return;
    const int tensor = t / per_tensor, rest = t % per_tensor;
    int h = 0;
    while (sh_first[h + 1] <= rest) ++h;
    const int tile = rest - sh_first[h];
    const view3<T> src = tensor == 0 ? k_src : v_src;
    const view3<T> dst = tensor == 0 ? k_dst : v_dst;
    const int* kp = keep + h * keep_stride;
    const int len = lengths[h];
    const int i0 = tile * tile_rows;
    const int nr = len - i0 < tile_rows ? len - i0 : tile_rows;
    // 1. read
    if (vec) {
      for (int idx = threadIdx.x; idx < nr * per_row; idx += blockDim.x) {
        const int r = idx / per_row, q = idx % per_row;
        const int from = kp[i0 + r];
        if (InPlace && from == i0 + r) continue;
        stage4[idx] = reinterpret_cast<const uint4*>(src.row(h, from))[q];
      }
    } else {
      E* stage = reinterpret_cast<E*>(stage4);
      for (int idx = threadIdx.x; idx < nr * d; idx += blockDim.x) {
        const int r = idx / d, e = idx % d;
        const int from = kp[i0 + r];
        if (InPlace && from == i0 + r) continue;
        stage[idx] = reinterpret_cast<const E&>(src(h, from, e));
      }
    }
    __syncthreads();
    if (InPlace) {
      if (threadIdx.x == 0) {
        __threadfence();
        atomicExch(flags + t, 1);
        // 2. wait for the earlier tiles of this head that read rows in [i0, i0 + nr): reads
        // ascend with the tile, so they are the tiles x < tile with first read < i0 + nr
        // (binary search for the last one) and last read >= i0 (walk down from it).
        int lo = 0, hi = tile;  // last x in [0, tile) with kp[x * tile_rows] < i0 + nr, or -1
        while (lo < hi) {
          const int mid = (lo + hi) / 2;
          if (kp[mid * tile_rows] < i0 + nr) lo = mid + 1;
          else hi = mid;
        }
        for (int x = lo - 1; x >= 0; --x) {
          if (kp[(x + 1) * tile_rows - 1] < i0) break;
          volatile int* f = flags + (t - tile + x);
          while (*f == 0) {
          }
        }
        __threadfence();
      }
      __syncthreads();
    }
    // 3. write
    if (vec) {
      for (int idx = threadIdx.x; idx < nr * per_row; idx += blockDim.x) {
        const int r = idx / per_row, q = idx % per_row;
        if (InPlace && kp[i0 + r] == i0 + r) continue;
        reinterpret_cast<uint4*>(dst.row(h, i0 + r))[q] = stage4[idx];
      }
    } else {
      const E* stage = reinterpret_cast<const E*>(stage4);
      for (int idx = threadIdx.x; idx < nr * d; idx += blockDim.x) {
        const int r = idx / d, e = idx % d;
        if (InPlace && kp[i0 + r] == i0 + r) continue;
        reinterpret_cast<E&>(dst(h, i0 + r, e)) = stage[idx];
      }
    }
    __syncthreads();  // the stage and tk are reused by the next ticket
  }
}

template <class T>
int tile_rows_for(index_t dim) {
  const index_t row_bytes = dim * static_cast<index_t>(sizeof(T));
  index_t r = 32768 / row_bytes;
  return static_cast<int>(r < 1 ? 1 : (r > 64 ? 64 : r));
}

inline arena compact_layout(void* base, int heads, int tiles_per_head, unsigned** ticket,
                            int** flags) {
  arena a(base);
  *ticket = a.take<unsigned>(1);
  *flags = a.take<int>(2 * static_cast<size_t>(heads) * tiles_per_head);
  return a;
}

template <class T, bool InPlace>
void move_rows(const view3<T>& ks, const view3<T>& vs, const view3<T>& kd, const view3<T>& vd,
               const int* keep, index_t keep_stride, const int* lengths, index_t max_len,
               void* ws, std::size_t bytes, cudaStream_t stream, const char* who) {
  kvtrim::detail::check_view(ks, "keys");
  kvtrim::detail::check_view(vs, "values");
  kvtrim::detail::require(ks.heads() == vs.heads() && ks.dim() == vs.dim() && ks.heads() == kd.heads() &&
                              ks.dim() == kd.dim() && vd.heads() == kd.heads() && vd.dim() == kd.dim(),
                          who, ": K/V views of different heads or dim");
  kvtrim::detail::require(ks.dim() * static_cast<index_t>(sizeof(T)) <= 32768, who, ": rows of ",
                          ks.dim(), " elements exceed 32 KiB");
  const int rows = tile_rows_for<T>(ks.dim());
  const int tiles = static_cast<int>((max_len + rows - 1) / rows);
  unsigned* ticket;
  int* flags;
  const arena need = compact_layout(ws, static_cast<int>(ks.heads()), tiles, &ticket, &flags);
  check_workspace(need, ws, bytes, who);
  if (tiles == 0) return;
  check_cuda(cudaMemsetAsync(ws, 0, need.bytes(), stream), "cudaMemsetAsync");
  kvtrim::detail::require(ks.heads() <= max_kv_heads, who, ": ", ks.heads(), " KV heads, at most ",
                          max_kv_heads);
  // A persistent grid (tiles are taken by ticket): enough blocks to fill the GPU, never more
  // than the tiles that can exist.
  const std::size_t smem = static_cast<std::size_t>(rows) * ks.dim() * sizeof(T);
  const index_t most = 2 * ks.heads() * tiles;
  const unsigned blocks = static_cast<unsigned>(std::min<index_t>(most, 8 * device_sms()));
  move_rows_kernel<T, InPlace><<<blocks, 256, smem, stream>>>(ks, vs, kd, vd, keep, keep_stride,
                                                              lengths, rows, ticket, flags);
  check_launch(who);
}

}  // namespace detail

// Workspace for compact_in_place / copy_to of views with `heads` KV heads, head_dim `dim`, whose
// per-head lengths are at most max_len (n, the prompt length, always suffices).
template <class T>
std::size_t compact_workspace_bytes(index_t heads, index_t dim, index_t max_len) {
  unsigned* t;
  int* f;
  const int rows = detail::tile_rows_for<T>(dim);
  return detail::compact_layout(nullptr, static_cast<int>(heads),
                                static_cast<int>((max_len + rows - 1) / rows), &t, &f)
      .bytes();
}

// Moves each head's kept rows to the front of its rows, in place. keep / lengths on the device
// (select_top's output); max_len bounds every lengths[h] (n suffices).
template <class T>
void compact_in_place(const view3<T>& keys, const view3<T>& values, const int* keep,
                      index_t keep_stride, const int* lengths, index_t max_len, void* workspace,
                      std::size_t workspace_bytes, cudaStream_t stream) {
  kvtrim::detail::require(keys.data() != values.data(), "cuda::compact_in_place: keys and values alias");
  detail::move_rows<T, true>(keys, values, keys, values, keep, keep_stride, lengths, max_len,
                             workspace, workspace_bytes, stream, "cuda::compact_in_place");
}

// Gathers each head's kept rows into dst_keys / dst_values [kv_head][capacity][dim] (any
// strides); the source is only read. Each lengths[h] must be <= the destination's capacity
// (the caller's contract: a device-side length cannot be checked without a sync).
template <class T>
void copy_to(const view3<T>& keys, const view3<T>& values, const view3<T>& dst_keys,
             const view3<T>& dst_values, const int* keep, index_t keep_stride, const int* lengths,
             index_t max_len, void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  kvtrim::detail::check_view(dst_keys, "copy_to destination keys");
  kvtrim::detail::check_view(dst_values, "copy_to destination values");
  kvtrim::detail::require(max_len <= dst_keys.tokens() && max_len <= dst_values.tokens(),
                          "cuda::copy_to: max_len ", max_len, " exceeds the destination capacity ",
                          dst_keys.tokens());
  detail::move_rows<T, false>(keys, values, dst_keys, dst_values, keep, keep_stride, lengths,
                              max_len, workspace, workspace_bytes, stream, "cuda::copy_to");
}

}  // namespace cuda
}  // namespace kvtrim
