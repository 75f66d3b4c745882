// The image-lane Winograd loops compiled for AVX-512; see lane_kernels.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "cpu/winograd/lane_kernels.h"

#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
// GCC 12's widening intrinsics start from _mm512_undefined_*, which -Wall reports as uninitialised.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace fastconv::cpu::winograd::avx512 {
#define FASTCONV_LANES_AVX512  // the bfloat16 transposes in registers
#include "cpu/winograd/lane_kernels.inc"
}  // namespace fastconv::cpu::winograd::avx512
