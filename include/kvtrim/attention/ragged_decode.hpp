#pragma once
// Decode attention against a compressed cache: one new query token ([q_head][dim], float) against
// K/V whose length differs per KV head (what the executors leave behind). The host describes its
// cache with ragged_kv, FlashInfer-style: per KV head a pointer to its K rows, a pointer to its V
// rows and a length, plus one row stride shared by all heads. A host with per-head allocations
// passes per-head pointers; a host with one strided buffer builds it with make_ragged_kv.
//
// Query head q belongs to KV head q / group (the usual GQA layout). The G query heads of a KV head
// are served from one pass over its rows: each K and V row is read from memory once and updates G
// online-softmax states, in float. Work is split into fixed chunks of tokens (split-KV, as in
// flash-decoding) so that heads of very different lengths and fewer heads than threads still load
// every thread; the chunks' partial states are merged in a fixed order, so the result does not
// depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include <Eigen/Core>

#include "kvtrim/core/element.hpp"
#include "kvtrim/core/error.hpp"
#include "kvtrim/core/view.hpp"

namespace kvtrim {

// Per-KV-head variable-length K/V of one layer. Row t of head h's keys is keys[h] + t*row_stride
// (head_dim contiguous elements); the same for values. Non-owning.
template <class T>
struct ragged_kv {
  static_assert(is_element_v<T> && !std::is_const_v<T>,
                "ragged_kv<T>: T is float, kvtrim::half or kvtrim::bfloat16 (not const)");
  std::vector<const T*> keys;    // per KV head: its token-0 K row (may be null when length 0)
  std::vector<const T*> values;  // per KV head: its token-0 V row (may be null when length 0)
  std::vector<index_t> lengths;  // per KV head: tokens held
  index_t row_stride = 0;        // elements between consecutive tokens of one head, >= head_dim
  index_t head_dim = 0;

  index_t kv_heads() const { return static_cast<index_t>(lengths.size()); }
};

// From strided views [kv_head][token][dim] (dim contiguous, equal token strides for K and V) and
// per-head lengths, e.g. those compact_in_place::apply returned.
template <class T>
ragged_kv<std::remove_const_t<T>> make_ragged_kv(const view3<T>& keys, const view3<T>& values,
                                                 const std::vector<index_t>& lengths) {
  detail::check_view(keys, "keys");
  detail::check_view(values, "values");
  detail::require(values.heads() == keys.heads() && values.tokens() == keys.tokens() &&
                      values.dim() == keys.dim(),
                  "make_ragged_kv: values shape [", values.heads(), "][", values.tokens(), "][",
                  values.dim(), "] differs from keys shape [", keys.heads(), "][", keys.tokens(),
                  "][", keys.dim(), "]");
  detail::require(keys.stride_dim() == 1 && values.stride_dim() == 1,
                  "make_ragged_kv: dim strides (", keys.stride_dim(), ", ", values.stride_dim(),
                  ") must be 1 (contiguous rows)");
  detail::require(keys.stride_token() == values.stride_token(), "make_ragged_kv: keys token stride ",
                  keys.stride_token(), " differs from values token stride ", values.stride_token());
  detail::require(lengths.size() == static_cast<size_t>(keys.heads()), "make_ragged_kv: ",
                  lengths.size(), " lengths for ", keys.heads(), " KV heads");
  ragged_kv<std::remove_const_t<T>> r;
  r.row_stride = keys.stride_token();
  r.head_dim = keys.dim();
  r.lengths = lengths;
  for (index_t h = 0; h < keys.heads(); ++h) {
    const index_t len = lengths[static_cast<size_t>(h)];
    detail::require(len >= 0 && len <= keys.tokens(), "make_ragged_kv: length ", len, " of head ",
                    h, " outside [0, ", keys.tokens(), "]");
    r.keys.push_back(keys.row(h, 0));
    r.values.push_back(values.row(h, 0));
  }
  return r;
}

namespace detail {

constexpr index_t ragged_chunk = 512;  // tokens per work item (one partial softmax state)
constexpr index_t ragged_block = 32;   // tokens per online-softmax rescale

template <class T>
void check_ragged(const float* q, const ragged_kv<T>& kv, int group, float scale, const float* out,
                  const char* who) {
  require(q != nullptr && out != nullptr, who, ": null q or out pointer");
  require(group >= 1, who, ": group ", group, " must be >= 1");
  require(kv.kv_heads() >= 1, who, ": ", kv.kv_heads(), " KV heads, need >= 1");
  require(kv.keys.size() == kv.lengths.size() && kv.values.size() == kv.lengths.size(), who, ": ",
          kv.keys.size(), " key pointers and ", kv.values.size(), " value pointers for ",
          kv.lengths.size(), " lengths");
  require(kv.head_dim >= 1, who, ": head_dim ", kv.head_dim, " must be >= 1");
  require(kv.row_stride >= kv.head_dim, who, ": row_stride ", kv.row_stride, " must be >= head_dim ",
          kv.head_dim);
  require(std::isfinite(scale), who, ": scale ", scale, " must be finite");
  for (size_t h = 0; h < kv.lengths.size(); ++h) {
    require(kv.lengths[h] >= 0, who, ": length ", kv.lengths[h], " of head ", h, " must be >= 0");
    require(kv.lengths[h] == 0 || (kv.keys[h] != nullptr && kv.values[h] != nullptr), who,
            ": head ", h, " holds ", kv.lengths[h], " tokens but has a null K or V pointer");
  }
}

// Branch-free half -> float (exact, subnormals included, no float subnormal arithmetic) that
// compilers vectorise; the F16C instruction does it when the build targets it.
inline float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t em = h & 0x7fffu;
  const std::uint32_t e = em >> 10;
  // normal: rebias 15 -> 127; inf/nan (e == 31): exponent 255
  const std::uint32_t normal = (em << 13) + ((e == 31u ? 224u : 112u) << 23);
  // zero/subnormal: m * 2^-24, computed in float from the integer mantissa
  const std::uint32_t sub = float_bits(static_cast<float>(em & 0x3ffu) * 5.9604644775390625e-8f);
  return bits_float(sign | (e == 0u ? sub : normal));
}

// Row of `d` elements as float: float rows are used where they lie, others converted into buf.
inline const float* load_row(const float* row, index_t, float*) { return row; }
inline const float* load_row(const bfloat16* row, index_t d, float* buf) {
  for (index_t i = 0; i < d; ++i) buf[i] = bits_float(std::uint32_t(row[i].bits) << 16);
  return buf;
}
inline const float* load_row(const half* row, index_t d, float* buf) {
  index_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= d; i += 8)
    _mm256_storeu_ps(buf + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i))));
#endif
  for (; i < d; ++i) buf[i] = half_bits_to_float(row[i].bits);
  return buf;
}

// Software prefetch of `nb` rows of d elements: out of cache the block's math and its memory
// traffic otherwise serialise (spread over the math, one block ahead: measured 1.3-1.6x faster
// on this project's machine).
template <class T>
inline void prefetch_rows(const T* src, index_t nb, index_t stride, index_t d) {
#if defined(__GNUC__)
  constexpr index_t line = 64 / sizeof(T);
  for (index_t j = 0; j < nb; ++j)
    for (index_t i = 0; i < d; i += line) __builtin_prefetch(src + j * stride + i, 0, 3);
#else
  (void)src, (void)nb, (void)stride, (void)d;
#endif
}

// A block of `nb` rows (row j at src + j * stride) as float. Float rows are used where they lie
// (returns src, row stride `stride`); others are converted into buf (row stride d).
inline const float* load_block(const float* src, index_t, index_t, index_t, float*) { return src; }
template <class T>
const float* load_block(const T* src, index_t nb, index_t stride, index_t d, float* buf) {
  for (index_t j = 0; j < nb; ++j) load_row(src + j * stride, d, buf + j * d);
  return buf;
}
template <class T>
index_t block_stride(index_t stride, index_t d) {
  return std::is_same_v<T, float> ? stride : d;
}

// Register-blocked block kernels for GT = G query heads (1..8). A GEMM call would pack (copy)
// every K and V element to use it only G times; here each K/V element is loaded once into a
// register and feeds GT multiply-adds directly. The registers are fixed-size Eigen arrays one
// SIMD register wide (`lane`), so the public Eigen API vectorises them for whatever the build
// targets (16 floats with AVX-512, 8 with AVX, 4 with SSE/NEON, 1 without SIMD).
constexpr index_t lane_width =
    EIGEN_MAX_STATIC_ALIGN_BYTES >= 16 ? index_t(EIGEN_MAX_STATIC_ALIGN_BYTES / sizeof(float)) : 1;
using lane = Eigen::Array<float, lane_width, 1>;
inline Eigen::Map<const lane> load_lane(const float* p) { return Eigen::Map<const lane>(p); }

// S[g][j] = Q[g] . K[j] for j < nb, two tokens at a time (2 x GT independent accumulators).
template <int GT>
void block_scores(const float* Q, const float* K, index_t ks, index_t nb, index_t d, float* S,
                  index_t sB) {
  constexpr index_t W = lane_width;
  const index_t dv = d - d % W;
  index_t j = 0;
  for (; j + 2 <= nb; j += 2) {
    const float* k0 = K + j * ks;
    const float* k1 = k0 + ks;
    lane a0[GT], a1[GT];
    for (int g = 0; g < GT; ++g) a0[g] = a1[g] = lane::Zero();
    for (index_t c = 0; c < dv; c += W) {
      const lane x0 = load_lane(k0 + c), x1 = load_lane(k1 + c);
      for (int g = 0; g < GT; ++g) {
        const lane qv = load_lane(Q + g * d + c);
        a0[g] += qv * x0;
        a1[g] += qv * x1;
      }
    }
    for (int g = 0; g < GT; ++g) {
      float s0 = a0[g].sum(), s1 = a1[g].sum();
      for (index_t c = dv; c < d; ++c) {
        s0 += Q[g * d + c] * k0[c];
        s1 += Q[g * d + c] * k1[c];
      }
      S[g * sB + j] = s0;
      S[g * sB + j + 1] = s1;
    }
  }
  for (; j < nb; ++j) {
    const float* k0 = K + j * ks;
    lane a0[GT];
    for (int g = 0; g < GT; ++g) a0[g] = lane::Zero();
    for (index_t c = 0; c < dv; c += W) {
      const lane x0 = load_lane(k0 + c);
      for (int g = 0; g < GT; ++g) a0[g] += load_lane(Q + g * d + c) * x0;
    }
    for (int g = 0; g < GT; ++g) {
      float s0 = a0[g].sum();
      for (index_t c = dv; c < d; ++c) s0 += Q[g * d + c] * k0[c];
      S[g * sB + j] = s0;
    }
  }
}

// A[g][:] += sum_j S[g][j] V[j][:]: one lane-wide slice of A per query head stays in registers
// across the block's tokens.
template <int GT>
void block_pv(const float* S, index_t sB, const float* V, index_t vs, index_t nb, index_t d,
              float* A) {
  constexpr index_t W = lane_width;
  const index_t dv = d - d % W;
  for (index_t c = 0; c < dv; c += W) {
    lane o[GT];
    for (int g = 0; g < GT; ++g) o[g] = load_lane(A + g * d + c);
    for (index_t j = 0; j < nb; ++j) {
      const lane x = load_lane(V + j * vs + c);
      for (int g = 0; g < GT; ++g) o[g] += S[g * sB + j] * x;
    }
    for (int g = 0; g < GT; ++g) Eigen::Map<lane>(A + g * d + c) = o[g];
  }
  for (index_t c = dv; c < d; ++c)
    for (index_t j = 0; j < nb; ++j)
      for (int g = 0; g < GT; ++g) A[g * d + c] += S[g * sB + j] * V[j * vs + c];
}

// Processes tokens [begin, end) of one KV head for its G query heads, leaving per query head g
// the online-softmax state: running max m[g], l[g] = sum of exp(s - m[g]) and
// acc[g*d, (g+1)*d) = sum of exp(s - m[g]) * v (unnormalised output).
// Per block of B tokens: S = (scale Q) K_blk^T and acc += P V_blk over the G query heads at once
// (each K/V row is read once for all G), exp is Eigen's vectorised one, and the running max and
// the rescale of acc happen once per block, not per token. GT = G in 1..8 uses the
// register-blocked kernels above; GT = 0 (any other G) does the two products with Eigen GEMMs.
template <int GT, class T>
void ragged_chunk_pass(const float* q, const T* k0, const T* v0, index_t stride, index_t d,
                       index_t begin, index_t end, int group, float scale, float* acc, float* m,
                       float* l, std::vector<float>& scratch) {
  using rowmat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using strided = Eigen::Map<const rowmat, Eigen::Unaligned, Eigen::OuterStride<>>;
  const index_t B = ragged_block, G = group;
  const bool convert = !std::is_same_v<T, float>;
  // Every thread's scratch starts on a 64-byte boundary: Eigen's vectorised exp, max and sum
  // peel unaligned heads with scalar code, so another alignment would round differently and
  // the result would depend on which thread ran the chunk.
  scratch.resize(static_cast<size_t>(G * B + G * d + (convert ? 2 * B * d : 0) + 16));
  const auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
  float* sp = scratch.data() + ((64 - addr % 64) % 64) / sizeof(float);  // [G][B] scores, then p
  float* qs = sp + G * B;      // [G][d] scaled queries
  float* kbuf = qs + G * d;    // [B][d] converted K rows (non-float caches)
  float* vbuf = kbuf + B * d;  // [B][d] converted V rows
  Eigen::Map<rowmat> Q(qs, G, d), A(acc, G, d), S(sp, G, B);
  Q = Eigen::Map<const rowmat>(q, G, d) * scale;
  A.setZero();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (index_t g = 0; g < G; ++g) {
    m[g] = neg_inf;
    l[g] = 0.0f;
  }
  const index_t bs = block_stride<T>(stride, d);
  for (index_t b0 = begin; b0 < end; b0 += B) {
    const index_t nb = std::min(B, end - b0);
    const index_t next = std::min(B, end - b0 - B);  // rows of the next block (<= 0: none)
    auto Sb = S.leftCols(nb);
    if constexpr (GT > 0) {
      // Scores in steps of 8 rows; each step first asks for 8 K and V rows of the NEXT block, so
      // prefetches are spread over the math and arrive a block ahead.
      for (index_t j0 = 0; j0 < nb; j0 += 8) {
        const index_t n8 = std::min<index_t>(8, nb - j0), p8 = std::min<index_t>(8, next - j0);
        if (p8 > 0) {
          prefetch_rows(k0 + (b0 + B + j0) * stride, p8, stride, d);
          prefetch_rows(v0 + (b0 + B + j0) * stride, p8, stride, d);
        }
        const float* kb = load_block(k0 + (b0 + j0) * stride, n8, stride, d, kbuf);
        block_scores<GT>(qs, kb, bs, n8, d, sp + j0, B);
      }
    } else {
      if (next > 0) prefetch_rows(k0 + (b0 + B) * stride, next, stride, d);
      const strided K(load_block(k0 + b0 * stride, nb, stride, d, kbuf), nb, d, Eigen::OuterStride<>(bs));
      Sb.noalias() = Q * K.transpose();
    }
    for (index_t g = 0; g < G; ++g) {
      const float mb = std::max(m[g], Sb.row(g).maxCoeff());
      if (mb == neg_inf) {  // every score so far -inf: weights 0
        Sb.row(g).setZero();
        continue;
      }
      const float alpha = std::exp(m[g] - mb);  // 0 on the first block (m = -inf)
      Sb.row(g).array() = (Sb.row(g).array() - mb).exp();
      l[g] = alpha * l[g] + Sb.row(g).sum();
      if (alpha != 1.0f) A.row(g) *= alpha;
      m[g] = mb;
    }
    if constexpr (GT > 0) {
      block_pv<GT>(sp, B, load_block(v0 + b0 * stride, nb, stride, d, vbuf), bs, nb, d, acc);
    } else {
      if (next > 0) prefetch_rows(v0 + (b0 + B) * stride, next, stride, d);
      const strided V(load_block(v0 + b0 * stride, nb, stride, d, vbuf), nb, d, Eigen::OuterStride<>(bs));
      A.noalias() += Sb * V;
    }
  }
}

}  // namespace detail

// out[qh][:] = softmax(scale * q[qh] . K_h^T) V_h for every query head qh = h*group + g, with
// q and out [kv.kv_heads()*group][kv.head_dim] contiguous float (out may alias q). A KV head
// holding 0 tokens gives its query heads an all-zero output (attention over nothing; a host that
// keeps the window never has one). Float accumulation; OpenMP over (KV head, token chunk).
// Throws kvtrim::error, writing nothing, on inconsistent input.
template <class T>
void ragged_decode_attention(const float* q, const ragged_kv<T>& kv, int group, float scale,
                             float* out) {
  detail::check_ragged(q, kv, group, scale, out, "ragged_decode_attention");
  const index_t H = kv.kv_heads(), d = kv.head_dim, G = group, C = detail::ragged_chunk;

  // Work items: (head, chunk). first[h] = index of head h's first item.
  std::vector<index_t> first(static_cast<size_t>(H + 1), 0);
  index_t work = 0;
  for (index_t h = 0; h < H; ++h) {
    const index_t len = kv.lengths[static_cast<size_t>(h)];
    first[static_cast<size_t>(h + 1)] = first[static_cast<size_t>(h)] + (len + C - 1) / C;
    work += len;
  }
  const index_t items = first[static_cast<size_t>(H)];
  // Partial states: per item and query head, acc[d], m, l.
  std::vector<float> acc(static_cast<size_t>(items * G * d));
  std::vector<float> ms(static_cast<size_t>(items * G)), ls(static_cast<size_t>(items * G));
  // Threads only pay past ~2M multiply-adds (~0.1 ms): waking a second thread costs microseconds
  // on an idle machine and a scheduler slice (~10 ms) on a busy one.
  const bool parallel = work * d * G >= (index_t(1) << 21);
  (void)parallel;

#if defined(_OPENMP)
#pragma omp parallel if (parallel)
#endif
  {
    std::vector<float> scratch;
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (index_t it = 0; it < items; ++it) {
      // Head of this item: the last h with first[h] <= it (few heads: a linear scan is fine).
      index_t h = 0;
      while (first[static_cast<size_t>(h + 1)] <= it) ++h;
      const index_t c = it - first[static_cast<size_t>(h)];
      const index_t begin = c * C;
      const index_t end = std::min(begin + C, kv.lengths[static_cast<size_t>(h)]);
      const float* qh = q + h * G * d;
      const T* kh = kv.keys[static_cast<size_t>(h)];
      const T* vh = kv.values[static_cast<size_t>(h)];
      float* ai = acc.data() + it * G * d;
      float* mi = ms.data() + it * G;
      float* li = ls.data() + it * G;
      auto pass = [&](auto gt) {  // gt: the group size as a compile-time constant (0: any)
        detail::ragged_chunk_pass<decltype(gt)::value>(qh, kh, vh, kv.row_stride, d, begin, end,
                                                        group, scale, ai, mi, li, scratch);
      };
      switch (group) {  // common GQA group sizes get the register-blocked kernels
        case 1: pass(std::integral_constant<int, 1>{}); break;
        case 2: pass(std::integral_constant<int, 2>{}); break;
        case 3: pass(std::integral_constant<int, 3>{}); break;
        case 4: pass(std::integral_constant<int, 4>{}); break;
        case 5: pass(std::integral_constant<int, 5>{}); break;
        case 6: pass(std::integral_constant<int, 6>{}); break;
        case 7: pass(std::integral_constant<int, 7>{}); break;
        case 8: pass(std::integral_constant<int, 8>{}); break;
        default: pass(std::integral_constant<int, 0>{});
      }
    }
    // Merge the chunks of each (KV head, query head) in chunk order (implicit barrier above).
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_t qh = 0; qh < H * G; ++qh) {
      const index_t h = qh / G, g = qh % G;
      const index_t b = first[static_cast<size_t>(h)], e = first[static_cast<size_t>(h + 1)];
      float* o = out + qh * d;
      float mx = -std::numeric_limits<float>::infinity();
      for (index_t it = b; it < e; ++it) mx = std::max(mx, ms[static_cast<size_t>(it * G + g)]);
      std::fill(o, o + d, 0.0f);
      if (b == e || mx == -std::numeric_limits<float>::infinity()) continue;  // length 0
      float lsum = 0.0f;
      for (index_t it = b; it < e; ++it) {
        const float wgt = std::exp(ms[static_cast<size_t>(it * G + g)] - mx);
        lsum += wgt * ls[static_cast<size_t>(it * G + g)];
        const float* a = acc.data() + (it * G + g) * d;
        for (index_t i = 0; i < d; ++i) o[i] += wgt * a[i];
      }
      const float inv = 1.0f / lsum;
      for (index_t i = 0; i < d; ++i) o[i] *= inv;
    }
  }
}

// Scalar two-pass reference (max, then exp-sum and weighted sum), accumulating in double: the
// ground truth ragged_decode_attention is tested against. Same contract, length 0 -> zeros.
template <class T>
void ragged_decode_attention_reference(const float* q, const ragged_kv<T>& kv, int group,
                                       float scale, float* out) {
  detail::check_ragged(q, kv, group, scale, out, "ragged_decode_attention_reference");
  const index_t H = kv.kv_heads(), d = kv.head_dim, G = group;
  std::vector<double> sc, o(static_cast<size_t>(d));
  std::vector<float> res(static_cast<size_t>(H * G * d), 0.0f);  // out may alias q
  for (index_t h = 0; h < H; ++h) {
    const index_t len = kv.lengths[static_cast<size_t>(h)];
    const T* K = kv.keys[static_cast<size_t>(h)];
    const T* V = kv.values[static_cast<size_t>(h)];
    for (index_t g = 0; g < G; ++g) {
      const float* qg = q + (h * G + g) * d;
      if (len == 0) continue;
      sc.assign(static_cast<size_t>(len), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (index_t t = 0; t < len; ++t) {
        double s = 0.0;
        for (index_t i = 0; i < d; ++i) s += double(qg[i]) * double(to_float(K[t * kv.row_stride + i]));
        sc[static_cast<size_t>(t)] = s * double(scale);
        mx = std::max(mx, sc[static_cast<size_t>(t)]);
      }
      double lsum = 0.0;
      std::fill(o.begin(), o.end(), 0.0);
      for (index_t t = 0; t < len; ++t) {
        const double p = std::exp(sc[static_cast<size_t>(t)] - mx);
        lsum += p;
        for (index_t i = 0; i < d; ++i)
          o[static_cast<size_t>(i)] += p * double(to_float(V[t * kv.row_stride + i]));
      }
      for (index_t i = 0; i < d; ++i)
        res[static_cast<size_t>((h * G + g) * d + i)] = static_cast<float>(o[static_cast<size_t>(i)] / lsum);
    }
  }
  std::copy(res.begin(), res.end(), out);
}

}  // namespace kvtrim
