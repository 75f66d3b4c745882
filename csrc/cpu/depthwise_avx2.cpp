// The depthwise loops compiled for AVX2 + FMA; see depthwise_rows.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "depthwise_rows.h"

#include <cmath>

#pragma GCC target("avx2,fma")

namespace fastconv::cpu::avx2 {
#include "depthwise_rows.inc"
}  // namespace fastconv::cpu::avx2
