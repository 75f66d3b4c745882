// The depthwise loops compiled for AVX2 + FMA; see rows.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "cpu/depthwise/rows.h"

#include <cmath>

#pragma GCC target("avx2,fma")

namespace fastconv::cpu::avx2 {
#include "cpu/depthwise/rows.inc"
}  // namespace fastconv::cpu::avx2
