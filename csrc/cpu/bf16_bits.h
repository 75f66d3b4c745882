// bfloat16 values as their raw 16 bits, for the kernels that read bfloat16 tensors in place: widening to float is
// exact (the bits are a float's upper half), narrowing rounds to nearest even as c10::BFloat16 does, so a finite
// result written here is the one torch's .to(torch.bfloat16) of the float result would give (a NaN is 0x7FC0,
// c10's scalar NaN; ATen's vectorised conversion writes another NaN pattern).
#pragma once

#include <cstdint>
#include <cstring>

namespace fastconv::cpu {

inline float widen_bf16(uint16_t bits) {
  const uint32_t u = uint32_t{bits} << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t round_to_bf16(float f) {
  if (f != f) return 0x7FC0;  // a quiet NaN, as c10
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// n values into dst as float (a copy for float sources).
template <typename In>
inline void widen_run(const In* src, int64_t n, float* dst) {
  if constexpr (sizeof(In) == sizeof(float)) {
    std::memcpy(dst, src, n * sizeof(float));
  } else {
    static_assert(sizeof(In) == sizeof(uint16_t), "float or bfloat16 bits");
    for (int64_t i = 0; i < n; ++i) dst[i] = widen_bf16(src[i]);
  }
}

// n floats into dst as Out: a copy, or rounded to bfloat16 bits.
template <typename Out>
inline void store_run(const float* src, int64_t n, Out* dst) {
  if constexpr (sizeof(Out) == sizeof(float)) {
    std::memcpy(dst, src, n * sizeof(float));
  } else {
    static_assert(sizeof(Out) == sizeof(uint16_t), "float or bfloat16 bits");
    for (int64_t i = 0; i < n; ++i) dst[i] = round_to_bf16(src[i]);
  }
}

}  // namespace fastconv::cpu
