#pragma once
// Element types of the host's KV memory: float, IEEE half and bfloat16. All arithmetic is done in
// float; these are storage types only, so plain bit conversions suffice (no dependency on a
// compiler's _Float16 or on a GPU header).
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace kvtrim {

struct half {
  std::uint16_t bits = 0;
};
struct bfloat16 {
  std::uint16_t bits = 0;
};

namespace detail {

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);
  // subnormal half: normalise
  int e = -1;
  do {
    ++e;
    mant <<= 1;
  } while ((mant & 0x400u) == 0);
  return bits_float(sign | (std::uint32_t(112 - e) << 23) | ((mant & 0x3ffu) << 13));
}

inline std::uint16_t float_to_half(float f) {  // round to nearest even
  const std::uint32_t u = float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t au = u & 0x7fffffffu;
  if (au >= 0x7f800000u) return std::uint16_t(sign | 0x7c00u | (au > 0x7f800000u ? 0x200u : 0u));
  if (au >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // overflow -> inf
  if (au < 0x38800000u) {                                        // subnormal or zero
    if (au < 0x33000000u) return std::uint16_t(sign);
    const std::uint32_t e = au >> 23;
    const std::uint32_t m = (au & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // 14..24
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return std::uint16_t(sign | r);
  }
  std::uint32_t r = ((au >> 13) - (112u << 10));
  const std::uint32_t rem = au & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return std::uint16_t(sign | r);
}

inline float bf16_to_float(std::uint16_t b) { return bits_float(std::uint32_t(b) << 16); }
inline std::uint16_t float_to_bf16(float f) {  // round to nearest even, nan kept quiet
  const std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40u);
  return std::uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace detail

inline float to_float(float x) { return x; }
inline float to_float(half x) { return detail::half_to_float(x.bits); }
inline float to_float(bfloat16 x) { return detail::bf16_to_float(x.bits); }

template <class T>
T from_float(float x);
template <>
inline float from_float<float>(float x) { return x; }
template <>
inline half from_float<half>(float x) { return half{detail::float_to_half(x)}; }
template <>
inline bfloat16 from_float<bfloat16>(float x) { return bfloat16{detail::float_to_bf16(x)}; }

template <class T>
inline constexpr bool is_element_v =
    std::is_same_v<std::remove_const_t<T>, float> || std::is_same_v<std::remove_const_t<T>, half> ||
    std::is_same_v<std::remove_const_t<T>, bfloat16>;

}  // namespace kvtrim
