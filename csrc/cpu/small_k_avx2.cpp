// The small-K direct conv row kernel compiled for AVX2 + FMA; see small_k.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "small_k.h"

#pragma GCC target("avx2,fma")
// acc += w * v as one FMA: ISO C++ modes (-std=c++NN) leave contraction off by default.
#pragma GCC optimize("fp-contract=fast")

namespace fastconv::cpu::avx2 {
#define FASTCONV_VEC_BYTES 32  // ymm
#include "small_k_row.inc"
}  // namespace fastconv::cpu::avx2
