// The image-lane Winograd loops compiled for AVX-512; see winograd_lanes.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "winograd_lanes.h"

#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")

namespace fastconv::cpu::winograd::avx512 {
#include "winograd_lanes.inc"
}  // namespace fastconv::cpu::winograd::avx512
