// The depthwise loops compiled for AVX-512 (+ FMA); see rows.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "cpu/depthwise/rows.h"

#include <cmath>

#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")

namespace fastconv::cpu::avx512 {
#include "cpu/depthwise/rows.inc"
}  // namespace fastconv::cpu::avx512
