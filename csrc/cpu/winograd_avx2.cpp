// The image-lane Winograd loops compiled for AVX2; see winograd_lanes.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "winograd_lanes.h"

#pragma GCC target("avx2,fma")

namespace fastconv::cpu::winograd::avx2 {
#include "winograd_lanes.inc"
}  // namespace fastconv::cpu::winograd::avx2
