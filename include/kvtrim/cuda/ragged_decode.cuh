#pragma once
// Decode attention on the device against a compressed cache (attention/ragged_decode.hpp's
// contract): one new token's queries q [kv_head * G + g][dim] (f32, device) against K/V views
// [kv_head][token][dim] whose head h holds lengths[h] tokens (device ints, e.g. select_top's
// lengths after compact_in_place). Flash-decoding: the rows of each head are split into chunks,
// one block per (chunk, head); each warp streams its tokens four at a time, and every K and V
// row read serves all G query heads of the KV head (online softmax in f32 per query head); the
// block's 8 warp states merge in shared memory, then one small kernel merges the chunks in chunk
// order. Head dim up to 256, G up to 8, any token / head strides (elements of a row may be
// strided too). A head of length 0 gives zeros, as on the host.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kvtrim/cuda/common.cuh"

namespace kvtrim {
namespace cuda {
namespace detail {

constexpr int decode_warps = 8;
constexpr int decode_unroll = 4;

// EPL elements of one row into f32: contiguous lane slice [lane * EPL, +EPL) in one vector load
// (VEC: stride_dim 1, d == 32 * EPL, rows aligned), else elements lane + 32 i, strided.
template <class T, int EPL, bool VEC>
__device__ __forceinline__ void load_slice(const T* row, index_t sd, int d, int lane, float (&out)[EPL]) {
  if constexpr (VEC) {
    constexpr int bytes = EPL * static_cast<int>(sizeof(T));
    using word = std::conditional_t<sizeof(T) == 4, unsigned, unsigned short>;
    union {
      uint4 q[(bytes + 15) / 16];
      uint2 h2;
      unsigned h1;
      unsigned short h0;
      word w[EPL];
    } u;
    const char* p = reinterpret_cast<const char*>(row + lane * EPL);
    if constexpr (bytes >= 16) {
#pragma unroll
      for (int i = 0; i < bytes / 16; ++i) u.q[i] = reinterpret_cast<const uint4*>(p)[i];
    } else if constexpr (bytes == 8) {
      u.h2 = *reinterpret_cast<const uint2*>(p);
    } else if constexpr (bytes == 4) {
      u.h1 = *reinterpret_cast<const unsigned*>(p);
    } else {
      u.h0 = *reinterpret_cast<const unsigned short*>(p);
    }
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      if constexpr (std::is_same_v<std::remove_const_t<T>, float>) out[i] = __uint_as_float(u.w[i]);
      else if constexpr (std::is_same_v<std::remove_const_t<T>, bfloat16>) out[i] = __uint_as_float(unsigned(u.w[i]) << 16);
      else out[i] = __half2float(__ushort_as_half(u.w[i]));
    }
  } else {
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      const int e = lane + 32 * i;
      out[i] = e < d ? load_f32(row + e * sd) : 0.0f;
    }
  }
}

template <class T, int G, int EPL, bool VEC>
static __global__ void __launch_bounds__(decode_warps * 32) decode_partial_kernel(
    const float* q, view3<const T> K, view3<const T> V, const int* lengths, index_t chunk,
    int max_chunks, float scale, float* part_acc, float2* part_ml) {
  extern __shared__ float sm[];  // [warps][G][d] acc, then [warps][G] (m, l)
  constexpr int U = EPL >= 4 ? 4 : 8;  // tokens per warp step: loads in flight before the math
  const int h = blockIdx.y, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int d = static_cast<int>(K.dim());
  const index_t len = lengths[h];
  const index_t b0 = static_cast<index_t>(blockIdx.x) * chunk;
  if (b0 >= len) return;
  const index_t end = b0 + chunk < len ? b0 + chunk : len;
  auto elem = [&](int i) { return VEC ? lane * EPL + i : lane + 32 * i; };
  float qr[G][EPL], acc[G][EPL], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      const int e = elem(i);
      qr[g][i] = e < d ? q[(static_cast<index_t>(h) * G + g) * d + e] * scale : 0.0f;
      acc[g][i] = 0.0f;
    }
  }
  const T* k0 = K.row(h, 0);
  const T* v0 = V.row(h, 0);
  const index_t kst = K.stride_token(), vst = V.stride_token(), ksd = K.stride_dim(), vsd = V.stride_dim();
  for (index_t base = b0 + warp * U; base < end; base += decode_warps * U) {
    float kv[U][EPL], vv[U][EPL];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const index_t t = base + u < end ? base + u : end - 1;  // clamped: read, then masked
      load_slice<T, EPL, VEC>(k0 + t * kst, ksd, d, lane, kv[u]);
      load_slice<T, EPL, VEC>(v0 + t * vst, vsd, d, lane, vv[u]);
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float s[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float x = 0.0f;
#pragma unroll
        for (int i = 0; i < EPL; ++i) x += qr[g][i] * kv[u][i];
        s[u] = x;
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2)
#pragma unroll
        for (int u = 0; u < U; ++u) s[u] += __shfl_xor_sync(0xffffffffu, s[u], o);
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (base + u >= end) s[u] = -INFINITY;
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < U; ++u) mx = fmaxf(mx, s[u]);
      const float corr = expf(m[g] - mx);  // m = -inf: 0 (mx is finite: token `base` is valid)
      float p[U], psum = 0.0f;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        p[u] = expf(s[u] - mx);
        psum += p[u];
      }
      l[g] = l[g] * corr + psum;
#pragma unroll
      for (int i = 0; i < EPL; ++i) {
        float a = acc[g][i] * corr;
#pragma unroll
        for (int u = 0; u < U; ++u) a += p[u] * vv[u][i];
        acc[g][i] = a;
      }
      m[g] = mx;
    }
  }
  float* sacc = sm;
  float2* sml = reinterpret_cast<float2*>(sm + decode_warps * G * d);
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      const int e = elem(i);
      if (e < d) sacc[(warp * G + g) * d + e] = acc[g][i];
    }
    if (lane == 0) sml[warp * G + g] = make_float2(m[g], l[g]);
  }
  __syncthreads();
  const index_t slot = static_cast<index_t>(h) * max_chunks + blockIdx.x;
  for (int idx = threadIdx.x; idx < G * d; idx += blockDim.x) {
    const int g = idx / d, e = idx % d;
    float M = -INFINITY;
    for (int w = 0; w < decode_warps; ++w) M = fmaxf(M, sml[w * G + g].x);
    float A = 0.0f, L = 0.0f;
    for (int w = 0; w < decode_warps; ++w) {
      const float2 ml = sml[w * G + g];
      if (ml.x == -INFINITY) continue;  // a warp without tokens
      const float f = expf(ml.x - M);
      A += f * sacc[(w * G + g) * d + e];
      L += f * ml.y;
    }
    part_acc[(slot * G + g) * d + e] = A;
    if (e == 0) part_ml[slot * G + g] = make_float2(M, L);
  }
}

static __global__ void decode_merge_kernel(const float* part_acc, const float2* part_ml,
                                    const int* lengths, int group, int d, index_t chunk,
                                    int max_chunks, float* out) {
  const int qh = blockIdx.x, h = qh / group, g = qh % group;
  const index_t len = lengths[h];
  const int nch = static_cast<int>((len + chunk - 1) / chunk);
  float M = -INFINITY;
  for (int c = 0; c < nch; ++c)
    M = fmaxf(M, part_ml[(static_cast<index_t>(h) * max_chunks + c) * group + g].x);
  float L = 0.0f;
  for (int c = 0; c < nch; ++c) {
    const float2 ml = part_ml[(static_cast<index_t>(h) * max_chunks + c) * group + g];
    L += ml.y * expf(ml.x - M);
  }
  for (int e = threadIdx.x; e < d; e += blockDim.x) {
    float A = 0.0f;
    for (int c = 0; c < nch; ++c) {
      const index_t slot = (static_cast<index_t>(h) * max_chunks + c) * group + g;
      A += part_acc[slot * d + e] * expf(part_ml[slot].x - M);
    }
    out[static_cast<index_t>(qh) * d + e] = nch == 0 ? 0.0f : A / L;
  }
}

inline index_t decode_chunk(index_t heads, index_t max_len) {
  const index_t target = 4 * static_cast<index_t>(device_sms());
  index_t chunk = 256;
  while (chunk < 16384 && heads * ((max_len + chunk - 1) / chunk) > target) chunk *= 2;
  return chunk;
}

inline arena decode_layout(void* base, index_t heads, int group, index_t dim, index_t max_len,
                           index_t chunk, float** acc, float2** ml) {
  arena a(base);
  const index_t chunks = std::max<index_t>(1, (max_len + chunk - 1) / chunk);
  *acc = a.take<float>(static_cast<size_t>(heads * chunks * group * dim));
  *ml = a.take<float2>(static_cast<size_t>(heads * chunks * group));
  return a;
}

template <class T, int G, int EPL, bool VEC>
void launch_decode_v(const float* q, const view3<const T>& K, const view3<const T>& V,
                     const int* lengths, index_t chunk, int max_chunks, float scale, float* acc,
                     float2* ml, cudaStream_t stream) {
  const std::size_t smem = sizeof(float) * decode_warps * G * K.dim() + sizeof(float2) * decode_warps * G;
  if (smem > 48 * 1024)
    check_cuda(cudaFuncSetAttribute(decode_partial_kernel<T, G, EPL, VEC>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
               "cudaFuncSetAttribute");
  decode_partial_kernel<T, G, EPL, VEC><<<dim3(max_chunks, static_cast<unsigned>(K.heads())),
                                          decode_warps * 32, smem, stream>>>(q, K, V, lengths, chunk,
                                                                             max_chunks, scale, acc, ml);
}

template <class T>
bool rows_vectorisable(const view3<const T>& v, int epl) {
  const auto a = static_cast<index_t>(sizeof(T)) * epl;  // bytes per lane slice
  return v.stride_dim() == 1 && v.dim() == 32 * epl && (a == 2 || a == 4 || a == 8 || a % 16 == 0) &&
         reinterpret_cast<std::uintptr_t>(v.data()) % static_cast<std::uintptr_t>(a < 16 ? a : 16) == 0 &&
         (v.stride_token() * static_cast<index_t>(sizeof(T))) % (a < 16 ? a : 16) == 0 &&
         (v.stride_head() * static_cast<index_t>(sizeof(T))) % (a < 16 ? a : 16) == 0;
}

template <class T, int G, int EPL>
void launch_decode(const float* q, const view3<const T>& K, const view3<const T>& V,
                   const int* lengths, index_t chunk, int max_chunks, float scale, float* acc,
                   float2* ml, cudaStream_t stream) {
  if (rows_vectorisable(K, EPL) && rows_vectorisable(V, EPL))
    launch_decode_v<T, G, EPL, true>(q, K, V, lengths, chunk, max_chunks, scale, acc, ml, stream);
  else
    launch_decode_v<T, G, EPL, false>(q, K, V, lengths, chunk, max_chunks, scale, acc, ml, stream);
}

template <class T, int G>
void launch_decode_g(const float* q, const view3<const T>& K, const view3<const T>& V,
                     const int* lengths, index_t chunk, int max_chunks, float scale, float* acc,
                     float2* ml, cudaStream_t stream) {
  const index_t d = K.dim();
  if (d <= 32) launch_decode<T, G, 1>(q, K, V, lengths, chunk, max_chunks, scale, acc, ml, stream);
  else if (d <= 64) launch_decode<T, G, 2>(q, K, V, lengths, chunk, max_chunks, scale, acc, ml, stream);
  else if (d <= 128) launch_decode<T, G, 4>(q, K, V, lengths, chunk, max_chunks, scale, acc, ml, stream);
  else launch_decode<T, G, 8>(q, K, V, lengths, chunk, max_chunks, scale, acc, ml, stream);
}

}  // namespace detail

template <class T>
std::size_t ragged_decode_workspace_bytes(index_t kv_heads, int group, index_t dim, index_t max_len) {
  float* a;
  float2* m;
  return detail::decode_layout(nullptr, kv_heads, group, dim, max_len,
                               detail::decode_chunk(kv_heads, max_len), &a, &m)
      .bytes();
}

// out[qh][:] = softmax(scale * q[qh] . K_h[0, len_h)^T) V_h[0, len_h) for qh = h * group + g.
// q, out: device f32 [kv_heads * group][dim] contiguous (out must not alias q). max_len bounds
// every lengths[h] and the views' tokens.
template <class T>
void ragged_decode(const float* q, const view3<const T>& keys, const view3<const T>& values,
                   const int* lengths, index_t max_len, int group, float scale, float* out,
                   void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  kvtrim::detail::check_view(keys, "keys");
  kvtrim::detail::check_view(values, "values");
  kvtrim::detail::require(q != nullptr && out != nullptr && lengths != nullptr,
                          "cuda::ragged_decode: null q, out or lengths");
  kvtrim::detail::require(group >= 1 && group <= 8, "cuda::ragged_decode: group ", group,
                          " outside [1, 8]");
  kvtrim::detail::require(keys.dim() <= 256 && keys.dim() == values.dim() &&
                              keys.heads() == values.heads(),
                          "cuda::ragged_decode: head_dim ", keys.dim(), " (at most 256) or K/V shapes differ");
  kvtrim::detail::require(max_len >= 0 && max_len <= keys.tokens() && max_len <= values.tokens(),
                          "cuda::ragged_decode: max_len ", max_len, " outside the views' ",
                          keys.tokens(), " tokens");
  const index_t chunk = detail::decode_chunk(keys.heads(), max_len);
  float* acc;
  float2* ml;
  const detail::arena need = detail::decode_layout(workspace, keys.heads(), group, keys.dim(),
                                                   max_len, chunk, &acc, &ml);
  detail::check_workspace(need, workspace, workspace_bytes, "cuda::ragged_decode");
  const int max_chunks = static_cast<int>(std::max<index_t>(1, (max_len + chunk - 1) / chunk));
  switch (group) {
#define KVTRIM_DECODE_G(G)                                                                       \
  case G:                                                                                        \
    detail::launch_decode_g<T, G>(q, keys, values, lengths, chunk, max_chunks, scale, acc, ml,   \
                                  stream);                                                       \
    break;
    KVTRIM_DECODE_G(1) KVTRIM_DECODE_G(2) KVTRIM_DECODE_G(3) KVTRIM_DECODE_G(4)
    KVTRIM_DECODE_G(5) KVTRIM_DECODE_G(6) KVTRIM_DECODE_G(7) KVTRIM_DECODE_G(8)
#undef KVTRIM_DECODE_G
    default: break;
  }
  detail::check_launch("decode_partial_kernel");
  detail::decode_merge_kernel<<<static_cast<unsigned>(keys.heads() * group), 128, 0, stream>>>(
      acc, ml, lengths, group, static_cast<int>(keys.dim()), chunk, max_chunks, out);
  detail::check_launch("decode_merge_kernel");
}

}  // namespace cuda
}  // namespace kvtrim
