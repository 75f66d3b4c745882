// The image-lane Winograd loops compiled for AVX2; see lane_kernels.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "cpu/winograd/lane_kernels.h"

#pragma GCC target("avx2,fma")

namespace fastconv::cpu::winograd::avx2 {
#include "cpu/winograd/lane_kernels.inc"
}  // namespace fastconv::cpu::winograd::avx2
