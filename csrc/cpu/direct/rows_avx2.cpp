// The direct conv kernels compiled for AVX2 + FMA; see direct.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "cpu/direct/direct.h"

#pragma GCC target("avx2,fma")
// acc += w * v as one FMA: ISO C++ modes (-std=c++NN) leave contraction off by default.
#pragma GCC optimize("fp-contract=fast")

namespace fastconv::cpu::avx2 {
#define FASTCONV_VEC_BYTES 32  // ymm
#include "cpu/direct/rows.inc"
}  // namespace fastconv::cpu::avx2
