#pragma once
// The observation-window scorer on the device (SnapKV / PyramidKV / Ada-KV / HeadKV / CompressKV,
// and CAKE's mean + gamma * variance with its layer statistics): the same quantities as
// score/window_softmax.hpp + pooling.hpp + aggregation.hpp, from device views, in three kernels:
//   1. logits: per (KV head, tile of 128 keys) the logits of every window query of the KV head's
//      contributing query heads, from ONE read of the K tile (a small GEMM: on the tensor cores,
//      mma.m16n8k16 with f32 accumulation, for bf16 / f16 rows of d % 16 == 0; else in f32 on the
//      CUDA cores, 4x4 outputs per thread); causal inside the window; writes the candidates'
//      logits (keys before the window) and each row's (tile max, tile sum of exp);
//   2. normalise: per window row, the softmax max and 1 / sum over all n keys (f64 sum);
//   3. scores: per (score row, tile of 256 candidates) each contributing head's sum over the
//      window of the probabilities (CAKE: mean + gamma * unbiased variance, and the entropy /
//      variance sums), pooled (avg with zero padding counted / max over the in-range part, any
//      odd kernel), summed over the row's heads (GQA per KV head, or one shared row).
// Scores agree with the host's within f32 rounding (different summation order and expf).
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kvtrim/core/layer_kv.hpp"
#include "kvtrim/core/shape.hpp"
#include "kvtrim/cuda/common.cuh"
#include "kvtrim/score/aggregation.hpp"
#include "kvtrim/score/pooling.hpp"

namespace kvtrim {
namespace cuda {

// Which query heads score which row: the host's detail::group_heads, as a kernel parameter.
struct head_table {
  int kv_heads = 0, group = 0, rows = 0, count = 0, dim = 0;
  bool shared = false;
  bool per_head = false;  // one score row per contributing query head (the tensor-parallel split)
  short local[max_q_heads] = {};          // contributing local query heads, ascending
  short first_of_kv[max_kv_heads + 1] = {};  // per KV head: its first index into `local`
  __host__ __device__ int begin(int r) const { return per_head ? r : (shared ? 0 : first_of_kv[r]); }
  __host__ __device__ int end(int r) const {
    return per_head ? r + 1 : (shared ? count : first_of_kv[r + 1]);
  }
};

template <class T>
head_table make_head_table(const layer_kv<T>& in, const std::vector<int>& heads,
                           const model_shape& shape, aggregation agg) {
  const auto p = kvtrim::group_heads(in, heads, shape, agg);
  kvtrim::detail::require(in.kv_heads() <= max_kv_heads && p.count() <= max_q_heads,
                          "cuda: ", in.kv_heads(), " KV heads / ", p.count(),
                          " query heads per shard exceed the backend's ", max_kv_heads, " / ",
                          max_q_heads);
  head_table t;
  t.kv_heads = static_cast<int>(in.kv_heads());
  t.dim = static_cast<int>(in.keys.dim());
  t.group = static_cast<int>(p.group);
  t.rows = static_cast<int>(p.rows);
  t.count = static_cast<int>(p.count());
  t.shared = p.shared;
  for (int i = 0; i < t.count; ++i) t.local[i] = static_cast<short>(p.local[static_cast<size_t>(i)]);
  for (int g = 0; g <= t.kv_heads; ++g)
    t.first_of_kv[g] = static_cast<short>(p.first_of_kv[static_cast<size_t>(g)]);
  return t;
}

// What the scorer leaves on the device: rows x candidates scores (row-major) and, when asked,
// CAKE's two layer sums (f64) over the `count` contributing heads.
struct device_scores {
  float* values = nullptr;
  double* stats = nullptr;  // [0] entropy_sum, [1] variance_sum
  int rows = 0;
  bool shared = false;
  int kv_heads = 0;
  index_t candidates = 0, window = 0;
  double stat_heads = 0;
};

struct window_params {
  pooling pool = pooling::max;
  int kernel = 7;
  bool cake = false;     // key score = mean + gamma * variance (else the window sum)
  float gamma = 200.0f;
  bool stats = false;    // fill the layer entropy / variance sums
};

namespace detail {

constexpr int logit_keys = 128;  // keys per logits block
constexpr int logit_rows = 32;   // window rows per pass of a logits block
constexpr int score_tile = 256;  // candidates per scores block

__host__ __device__ inline int padded_dim(index_t d) { return static_cast<int>((d + 3) / 4 * 4 + 4); }

// Window queries of the plan heads in f32, pre-scaled by 1/sqrt(d) as the host does: row
// i * w + t for plan head i (one block per row).
template <class T>
static __global__ void window_queries_kernel(view3<const T> Q, head_table tab, index_t w,
                                             float scale, float* qf) {
  const index_t row = blockIdx.x, i = row / w, t = row % w;
  const int d = static_cast<int>(Q.dim());
  for (int e = threadIdx.x; e < d; e += blockDim.x)
    qf[row * d + e] = load_f32(&Q(tab.local[i], t, e)) * scale;
}

template <class T>
static __global__ void __launch_bounds__(256) window_logits_kernel(view3<const T> K, const float* qf,
                                                            head_table tab, index_t n, index_t w,
                                                            bool vec_k,
                                                            float* logits, float2* tile_stats) {
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  const int g = blockIdx.y;
  const int h0 = tab.first_of_kv[g], nh = tab.first_of_kv[g + 1] - h0;
  if (nh == 0) return;
  const int d = static_cast<int>(K.dim()), dp = padded_dim(d);
  const index_t c = n - w, t0 = static_cast<index_t>(blockIdx.x) * logit_keys;
  const index_t nb = gridDim.x;
  float* ks = smem;                       // [logit_keys][dp]
  float* qs = smem + logit_keys * dp;     // [logit_rows][dp]
  if (vec_k) {  // 16-byte loads: 16 / sizeof(T) elements of a row each
    constexpr int per = 16 / static_cast<int>(sizeof(T));
    const int cpr = d / per;  // chunks per row
    for (int idx = threadIdx.x; idx < logit_keys * cpr; idx += blockDim.x) {
      const int key = idx / cpr, c0 = (idx - key * cpr) * per;
      const index_t t = t0 + key;
      float* dst = ks + key * dp + c0;
      if (t < n) {
        const uint4 raw = *reinterpret_cast<const uint4*>(K.row(g, t) + c0);
        const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int i = 0; i < per; ++i) dst[i] = load_f32(v + i);
      } else {
#pragma unroll
        for (int i = 0; i < per; ++i) dst[i] = 0.0f;
      }
    }
    for (int idx = threadIdx.x; idx < logit_keys * (dp - d); idx += blockDim.x)
      ks[(idx / (dp - d)) * dp + d + idx % (dp - d)] = 0.0f;  // the padding columns
  } else {
    for (int idx = threadIdx.x; idx < logit_keys * dp; idx += blockDim.x) {
      const int key = idx / dp, e = idx % dp;
      const index_t t = t0 + key;
      ks[idx] = (e < d && t < n) ? load_f32(&K(g, t, e)) : 0.0f;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows = nh * static_cast<int>(w);
  for (int rc0 = 0; rc0 < rows; rc0 += logit_rows) {
    __syncthreads();
    // the pre-scaled f32 window queries (window_queries_kernel), rows h0 * w + rr
    const float* qsrc = qf + (static_cast<index_t>(h0) * w + rc0) * d;
    for (int idx = threadIdx.x; idx < logit_rows * dp; idx += blockDim.x) {
      const int r = idx / dp, e = idx - (idx / dp) * dp;
      qs[idx] = (e < d && rc0 + r < rows) ? qsrc[r * d + e] : 0.0f;
    }
    __syncthreads();
    float acc[4][4] = {};
    const float* q0 = qs + (warp * 4) * dp;
    for (int e = 0; e < dp; e += 4) {
      float4 qv[4], kv[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) qv[a] = *reinterpret_cast<const float4*>(q0 + a * dp + e);
#pragma unroll
      for (int b = 0; b < 4; ++b)
        kv[b] = *reinterpret_cast<const float4*>(ks + (lane + 32 * b) * dp + e);
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b)
          acc[a][b] += qv[a].x * kv[b].x + qv[a].y * kv[b].y + qv[a].z * kv[b].z + qv[a].w * kv[b].w;
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int rr = rc0 + warp * 4 + a;
      if (rr >= rows) continue;  // uniform across the warp
      const index_t i = rr % w;
      const index_t grow = static_cast<index_t>(h0) * w + rr;  // row index over all plan heads
      float m = -INFINITY;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const index_t j = t0 + lane + 32 * b;
        if (j < n && j <= c + i) m = fmaxf(m, acc[a][b]);
        if (j < c) logits[grow * c + j] = acc[a][b];
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
      float s = 0.0f;
      if (m != -INFINITY) {
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          const index_t j = t0 + lane + 32 * b;
          if (j < n && j <= c + i) s += expf(acc[a][b] - m);
        }
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0) tile_stats[grow * nb + blockIdx.x] = make_float2(m, s);
    }
  }
}

// ---- the logits on the tensor cores (bf16 / f16 K and Q, d a multiple of 16, rows aligned) -----
// The same tile and outputs as window_logits_kernel, but the products run as mma.m16n8k16 with
// f32 accumulation: the stored (unscaled) queries and keys are the A and B operands exactly as
// stored, so only the summation order and the place of the 1/sqrt(d) scale differ from the f32
// path (within f32 rounding). Per block: 128 keys of one KV head staged raw in shared memory
// (rows padded by 8 elements, so the fragment loads hit 32 different banks), 8 warps of 16 keys
// each, the window rows 32 at a time (two m16 tiles).
constexpr int mma_rows = 32;

template <class T>
struct mma_m16n8k16;
// One specialisation per element type; the PTX type name is the only difference.
#define KVTRIM_MMA_M16N8K16(CPP_TYPE, PTX_TYPE)                                                   \
  template <>                                                                                    \
  struct mma_m16n8k16<CPP_TYPE> {                                                                \
    static __device__ __forceinline__ void run(float (&c)[4], const unsigned (&a)[4], unsigned b0, \
                                               unsigned b1) {                                    \
      KVTRIM_MMA_ASM(PTX_TYPE)                                                                   \
    }                                                                                            \
  };
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define KVTRIM_MMA_ASM(PTX_TYPE)                                                                 \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE                    \
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                     \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                  \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
#define KVTRIM_MMA_ASM(PTX_TYPE) __trap();
#endif
KVTRIM_MMA_M16N8K16(bfloat16, "bf16")
KVTRIM_MMA_M16N8K16(half, "f16")
#undef KVTRIM_MMA_ASM
#undef KVTRIM_MMA_M16N8K16

__host__ __device__ inline int mma_ld(index_t d) { return static_cast<int>(d) + 8; }
inline std::size_t mma_smem_bytes(index_t d) {
  return sizeof(unsigned short) * static_cast<std::size_t>(logit_keys + mma_rows) * mma_ld(d);
}

template <class T>
static __global__ void __launch_bounds__(256) window_logits_mma_kernel(view3<const T> K, view3<const T> Q,
                                                                head_table tab, index_t n, index_t w,
                                                                float scale, bool vec_q,
                                                                float* logits, float2* tile_stats) {
  extern __shared__ uint4 smem_mma[];
  __shared__ float red[8][mma_rows];
  __shared__ float rowmax[mma_rows];
  const int g = blockIdx.y;
  const int h0 = tab.first_of_kv[g], nh = tab.first_of_kv[g + 1] - h0;
  if (nh == 0) return;
  const int d = static_cast<int>(K.dim()), ld = mma_ld(d);
  unsigned short* ks = reinterpret_cast<unsigned short*>(smem_mma);  // [logit_keys][ld]
  unsigned short* qs = ks + logit_keys * ld;                         // [mma_rows][ld]
  const index_t c = n - w, t0 = static_cast<index_t>(blockIdx.x) * logit_keys, nb = gridDim.x;
  {  // the K tile, raw: 8 independent 16-byte loads per thread before the stores
    const int cpr = d / 8, total = logit_keys * cpr;
    for (int base = threadIdx.x; base < total; base += 256 * 8) {
      uint4 v[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int idx = base + u * 256, key = idx / cpr;
        v[u] = make_uint4(0u, 0u, 0u, 0u);
        if (idx < total && t0 + key < n)
          v[u] = reinterpret_cast<const uint4*>(K.row(g, t0 + key))[idx - key * cpr];
      }
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const int idx = base + u * 256, key = idx / cpr;
        if (idx < total) *reinterpret_cast<uint4*>(ks + key * ld + (idx - key * cpr) * 8) = v[u];
      }
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane >> 2, tq = lane & 3;
  const int rows = nh * static_cast<int>(w);
  for (int rc0 = 0; rc0 < rows; rc0 += mma_rows) {
    __syncthreads();  // the K tile is in; the previous rows' qs / red / rowmax are consumed
    if (vec_q) {  // 16-byte loads, all of a thread's issued before its stores
      const int cpr = d / 8, total = mma_rows * cpr;
      for (int base = threadIdx.x; base < total; base += 256 * 4) {
        uint4 v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int idx = base + u * 256, r = idx / cpr, rr = rc0 + r;
          v[u] = make_uint4(0u, 0u, 0u, 0u);
          if (idx < total && rr < rows)
            v[u] = reinterpret_cast<const uint4*>(
                Q.row(tab.local[h0 + rr / static_cast<int>(w)], rr % w))[idx - r * cpr];
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int idx = base + u * 256, r = idx / cpr;
          if (idx < total) *reinterpret_cast<uint4*>(qs + r * ld + (idx - r * cpr) * 8) = v[u];
        }
      }
    } else {
      for (int idx = threadIdx.x; idx < mma_rows * (d / 2); idx += blockDim.x) {
        const int r = idx / (d / 2), e = (idx - r * (d / 2)) * 2, rr = rc0 + r;
        unsigned word = 0;
        if (rr < rows) {
          const int qh = tab.local[h0 + rr / static_cast<int>(w)];
          const index_t t = rr % w;
          word = static_cast<unsigned>(Q(qh, t, e).bits) | (static_cast<unsigned>(Q(qh, t, e + 1).bits) << 16);
        }
        *reinterpret_cast<unsigned*>(qs + r * ld + e) = word;
      }
    }
    __syncthreads();
    float acc[2][2][4] = {};  // [m tile][n tile][fragment]
    for (int k0 = 0; k0 < d; k0 += 16) {
      unsigned a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const unsigned short* qa = qs + (mt * 16 + gq) * ld + k0 + 2 * tq;
        a[mt][0] = *reinterpret_cast<const unsigned*>(qa);
        a[mt][1] = *reinterpret_cast<const unsigned*>(qa + 8 * ld);
        a[mt][2] = *reinterpret_cast<const unsigned*>(qa + 8);
        a[mt][3] = *reinterpret_cast<const unsigned*>(qa + 8 * ld + 8);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const unsigned short* kb = ks + (warp * 16 + nt * 8 + gq) * ld + k0 + 2 * tq;
        const unsigned b0 = *reinterpret_cast<const unsigned*>(kb);
        const unsigned b1 = *reinterpret_cast<const unsigned*>(kb + 8);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) mma_m16n8k16<T>::run(acc[mt][nt], a[mt], b0, b1);
      }
    }
    // acc[mt][nt][2 hh + cc]: row rc0 + 16 mt + gq + 8 hh, key t0 + 16 warp + 8 nt + 2 tq + cc
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int lr = mt * 16 + gq + 8 * hh, rr = rc0 + lr;
        const index_t i = rr % w, grow = static_cast<index_t>(h0) * w + rr;
        float* lrow = logits + grow * c;  // this row's logits (64-bit math once per row)
        float m = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int cc = 0; cc < 2; ++cc) {
            const index_t j = t0 + warp * 16 + nt * 8 + 2 * tq + cc;
            const float x = acc[mt][nt][2 * hh + cc] * scale;
            acc[mt][nt][2 * hh + cc] = x;
            if (rr < rows && j < n && j <= c + i) m = fmaxf(m, x);
            if (rr < rows && j < c) lrow[j] = x;
          }
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        if (tq == 0) red[warp][lr] = m;
      }
    __syncthreads();
    if (threadIdx.x < mma_rows) {
      float M = -INFINITY;
      for (int q = 0; q < 8; ++q) M = fmaxf(M, red[q][threadIdx.x]);
      rowmax[threadIdx.x] = M;
    }
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int lr = mt * 16 + gq + 8 * hh, rr = rc0 + lr;
        const index_t i = rr % w;
        const float M = rowmax[lr];
        float sum = 0.0f;
        if (M != -INFINITY)
#pragma unroll
          for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int cc = 0; cc < 2; ++cc) {
              const index_t j = t0 + warp * 16 + nt * 8 + 2 * tq + cc;
              if (rr < rows && j < n && j <= c + i) sum += expf(acc[mt][nt][2 * hh + cc] - M);
            }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if (tq == 0) red[warp][lr] = sum;
      }
    __syncthreads();
    if (threadIdx.x < mma_rows && rc0 + static_cast<int>(threadIdx.x) < rows) {
      float S = 0.0f;
      for (int q = 0; q < 8; ++q) S += red[q][threadIdx.x];
      tile_stats[(static_cast<index_t>(h0) * w + rc0 + threadIdx.x) * nb + blockIdx.x] =
          make_float2(rowmax[threadIdx.x], S);
    }
  }
}

// Whether rows of a bf16 / f16 view are contiguous and 16-byte aligned (8 elements at a time).
template <class T>
bool rows_16b(const view3<const T>& X) {
  return X.stride_dim() == 1 && reinterpret_cast<std::uintptr_t>(X.data()) % 16 == 0 &&
         X.stride_token() % 8 == 0 && X.stride_head() % 8 == 0;
}

// Whether the tensor-core logits apply: bf16 / f16 elements, d a multiple of 16 (at most 256),
// key rows contiguous and 16-byte aligned.
template <class T>
bool mma_logits_ok(const view3<const T>& K) {
  if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, half>) {
    const index_t d = K.dim();
    return d % 16 == 0 && d <= 256 && rows_16b(K);
  } else {
    return false;
  }
}

static __global__ void window_normalise_kernel(const float2* tile_stats, index_t nb, float2* norm) {
  const index_t row = blockIdx.x;
  const float2* st = tile_stats + row * nb;
  __shared__ float red_m[256];
  __shared__ double red_z[256];
  float m = -INFINITY;
  for (index_t b = threadIdx.x; b < nb; b += blockDim.x)
    if (st[b].y > 0.0f) m = fmaxf(m, st[b].x);
  red_m[threadIdx.x] = m;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) red_m[threadIdx.x] = fmaxf(red_m[threadIdx.x], red_m[threadIdx.x + s]);
    __syncthreads();
  }
  m = red_m[0];
  double z = 0.0;
  for (index_t b = threadIdx.x; b < nb; b += blockDim.x)
    if (st[b].y > 0.0f) z += static_cast<double>(st[b].y) * exp(static_cast<double>(st[b].x - m));
  red_z[threadIdx.x] = z;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) red_z[threadIdx.x] += red_z[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) norm[row] = make_float2(m, static_cast<float>(1.0 / red_z[0]));
}

// Heads of a score row handled per round of the scores kernel: their window sums for the
// block's span are computed together (all their loads can be in flight), then pooled and summed.
constexpr int score_heads = 8;

static __global__ void __launch_bounds__(score_tile) window_scores_kernel(
    const float* logits, const float2* norm, head_table tab, index_t c, index_t w,
    window_params prm, float* scores, double* stats) {
  extern __shared__ float raw[];  // [score_heads][score_tile + 2p]
  const int r = blockIdx.y, p = prm.kernel / 2;
  const index_t j0 = static_cast<index_t>(blockIdx.x) * score_tile;
  const index_t j = j0 + threadIdx.x;
  const int span = score_tile + 2 * p;
  const float inv_w = 1.0f / static_cast<float>(w);
  const bool need_var = (prm.cake || prm.stats) && w >= 2;
  float acc = 0.0f;
  double ent = 0.0, var_sum = 0.0;
  for (int h0 = tab.begin(r); h0 < tab.end(r); h0 += score_heads) {
    const int nh = tab.end(r) - h0 < score_heads ? tab.end(r) - h0 : score_heads;
    // 1. the window's probabilities of each (head, span position), summed in t order as on the
    //    host; 8 window rows loaded at a time (w is a run-time value)
    for (int it = threadIdx.x; it < nh * span; it += blockDim.x) {
      const int hi = h0 + it / span, u = it % span;
      const index_t jj = j0 - p + u;
      float v = 0.0f;
      if (jj >= 0 && jj < c) {
        const bool centre = u >= p && u < p + score_tile;
        const float* col = logits + static_cast<index_t>(hi) * w * c + jj;
        const float2* nz = norm + static_cast<index_t>(hi) * w;
        float s = 0.0f, var = 0.0f, pv[8];
        double e_part = 0.0;
        auto load8 = [&](index_t t0) {  // one 64-bit multiply per 8 rows, then pointer steps
          const float* pr = col + t0 * c;
#pragma unroll
          for (int q = 0; q < 8; ++q, pr += c) pv[q] = t0 + q < w ? *pr : 0.0f;
        };
        for (index_t t0 = 0; t0 < w; t0 += 8) {
          load8(t0);
#pragma unroll
          for (int q = 0; q < 8; ++q) {
            if (t0 + q >= w) break;
            const float a = expf(pv[q] - nz[t0 + q].x) * nz[t0 + q].y;
            s += a;
            if (prm.stats && centre) e_part -= static_cast<double>(a) * log(static_cast<double>(a) + 1e-10);
          }
        }
        if (need_var) {
          const float mean = s / static_cast<float>(w);
          for (index_t t0 = 0; t0 < w; t0 += 8) {
            load8(t0);
#pragma unroll
            for (int q = 0; q < 8; ++q) {
              if (t0 + q >= w) break;
              const float e = expf(pv[q] - nz[t0 + q].x) * nz[t0 + q].y - mean;
              var += e * e;
            }
          }
          var /= static_cast<float>(w - 1);
        }
        if (prm.stats && centre) {
          ent += e_part / static_cast<double>(w);
          var_sum += var;
        }
        v = prm.cake ? s * inv_w + prm.gamma * var : s;
      }
      raw[it] = v;
    }
    __syncthreads();
    // 2. pooled per head (avg: zero padding counted; max: the in-range part), summed in head order
    if (j < c)
      for (int q = 0; q < nh; ++q) {
        const float* x = raw + q * span + threadIdx.x + p;  // x[0] is candidate j
        if (prm.pool == pooling::none || prm.kernel == 1) {
          acc += x[0];
        } else if (prm.pool == pooling::avg) {
          float s = 0.0f;
          for (int u = -p; u <= p; ++u) s += x[u];
          acc += s / static_cast<float>(prm.kernel);
        } else {
          float m = -INFINITY;
          for (int u = -p; u <= p; ++u)
            if (j + u >= 0 && j + u < c) m = fmaxf(m, x[u]);
          acc += m;
        }
      }
    __syncthreads();
  }
  if (j < c) scores[static_cast<index_t>(r) * c + j] = acc;
  if (prm.stats) {
    __shared__ double red[2][score_tile];
    red[0][threadIdx.x] = ent;
    red[1][threadIdx.x] = var_sum;
    __syncthreads();
    for (int s = score_tile / 2; s > 0; s /= 2) {
      if (threadIdx.x < s) {
        red[0][threadIdx.x] += red[0][threadIdx.x + s];
        red[1][threadIdx.x] += red[1][threadIdx.x + s];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      atomicAdd(stats, red[0][0]);
      atomicAdd(stats + 1, red[1][0]);
    }
  }
}

template <class T>
arena window_layout(void* base, const head_table& tab, index_t n, index_t w, index_t d,
                    float** qf, float** logits, float2** tiles, float2** norm, float** scores,
                    double** stats) {
  arena a(base);
  *qf = a.take<float>(static_cast<size_t>(tab.count * w * d));
  const index_t c = n - w, rows = static_cast<index_t>(tab.count) * w;
  const index_t nb = (n + logit_keys - 1) / logit_keys;
  *logits = a.take<float>(static_cast<size_t>(rows * c));
  *tiles = a.take<float2>(static_cast<size_t>(rows * nb));
  *norm = a.take<float2>(static_cast<size_t>(rows));
  *scores = a.take<float>(static_cast<size_t>(tab.rows * c));
  *stats = a.take<double>(2);
  return a;
}

}  // namespace detail

// Workspace bytes for window_scores on a layer of n prompt tokens and window w.
template <class T>
std::size_t window_scores_workspace_bytes(const head_table& tab, index_t n, index_t w) {
  float *q, *l, *s;
  float2 *t, *m;
  double* st;
  return detail::window_layout<T>(nullptr, tab, n, w, tab.dim, &q, &l, &t, &m, &s, &st).bytes();
}

// Scores one layer (in: device views, validated by the caller with check_scoring_input). The
// returned scores point into the workspace; they live until the workspace is reused.
// scores_out: where the tab.rows x candidates scores go (null: into the workspace).
template <class T>
device_scores window_scores(const layer_kv<T>& in, const head_table& tab, const window_params& prm,
                            void* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                            float* scores_out = nullptr) {
  const index_t n = in.prompt_length(), w = in.window(), c = n - w, d = in.keys.dim();
  float *qf, *logits, *scores;
  float2 *tiles, *norm;
  double* stats;
  const detail::arena need = detail::window_layout<T>(workspace, tab, n, w, d, &qf, &logits, &tiles,
                                                      &norm, &scores, &stats);
  detail::check_workspace(need, workspace, workspace_bytes, "window_scores");
  kvtrim::detail::check_kernel(prm.kernel);
  kvtrim::detail::require(prm.kernel <= 1025, "cuda::window_scores: pooling kernel ", prm.kernel,
                          " (the device path pools at most 1025 wide)");
  if (scores_out) scores = scores_out;
  device_scores out;
  out.values = scores;
  out.stats = stats;
  out.rows = tab.rows;
  out.shared = tab.shared;
  out.kv_heads = tab.kv_heads;
  out.candidates = c;
  out.window = w;
  out.stat_heads = tab.count;
  if (prm.stats) detail::check_cuda(cudaMemsetAsync(stats, 0, 2 * sizeof(double), stream), "memset");
  if (c == 0 || tab.count == 0) {
    if (c > 0 && tab.rows > 0)
      detail::check_cuda(cudaMemsetAsync(scores, 0, sizeof(float) * tab.rows * c, stream), "memset");
    return out;
  }
  const view3<const T> K = in.keys;
  const index_t nb = (n + detail::logit_keys - 1) / detail::logit_keys;
  const int dp = detail::padded_dim(d);
  const std::size_t smem = sizeof(float) * (detail::logit_keys + detail::logit_rows) * dp;
  constexpr index_t per = 16 / static_cast<index_t>(sizeof(T));
  const bool vec_k = K.stride_dim() == 1 && d % per == 0 &&
                     reinterpret_cast<std::uintptr_t>(K.data()) % 16 == 0 &&
                     (K.stride_token() % per) == 0 && (K.stride_head() % per) == 0;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  bool on_tensor_cores = false;
  if constexpr (std::is_same_v<T, bfloat16> || std::is_same_v<T, half>) {
    on_tensor_cores = detail::mma_logits_ok(K);
    if (on_tensor_cores) {
      const std::size_t ms = detail::mma_smem_bytes(d);
      if (ms > 46 * 1024)  // dynamic + the kernel's 1 KiB of static shared memory
        detail::check_cuda(cudaFuncSetAttribute(detail::window_logits_mma_kernel<T>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(ms)),
                           "cudaFuncSetAttribute");
      detail::window_logits_mma_kernel<T><<<dim3(static_cast<unsigned>(nb), tab.kv_heads), 256, ms, stream>>>(
          K, in.queries, tab, n, w, scale, detail::rows_16b(in.queries), logits, tiles);
      detail::check_launch("window_logits_mma_kernel");
    }
  }
  if (!on_tensor_cores) {
    if (smem > 48 * 1024)
      detail::check_cuda(cudaFuncSetAttribute(detail::window_logits_kernel<T>,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              static_cast<int>(smem)),
                         "cudaFuncSetAttribute (head_dim too large?)");
    detail::window_queries_kernel<T><<<static_cast<unsigned>(tab.count * w), 128, 0, stream>>>(
        in.queries, tab, w, scale, qf);
    detail::window_logits_kernel<T><<<dim3(static_cast<unsigned>(nb), tab.kv_heads), 256, smem, stream>>>(
        K, qf, tab, n, w, vec_k, logits, tiles);
    detail::check_launch("window_logits_kernel");
  }
  detail::window_normalise_kernel<<<static_cast<unsigned>(tab.count * w), 256, 0, stream>>>(tiles, nb, norm);
  detail::check_launch("window_normalise_kernel");
  const std::size_t smem3 =
      sizeof(float) * detail::score_heads * (detail::score_tile + 2 * (prm.kernel / 2));
  detail::window_scores_kernel<<<dim3(detail::blocks_for(c, detail::score_tile), tab.rows),
                                 detail::score_tile, smem3, stream>>>(logits, norm, tab, c, w, prm,
                                                                      scores, stats);
  detail::check_launch("window_scores_kernel");
  return out;
}

}  // namespace cuda
}  // namespace kvtrim
