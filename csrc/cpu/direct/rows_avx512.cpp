// The direct conv kernels compiled for AVX-512; see direct.h.
// Headers first: their inline functions must stay baseline code (the linker keeps one copy of each).
#include "cpu/direct/direct.h"

#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
// acc += w * v as one FMA: ISO C++ modes (-std=c++NN) leave contraction off by default.
#pragma GCC optimize("fp-contract=fast")

namespace fastconv::cpu::avx512 {
#define FASTCONV_VEC_BYTES 64  // zmm
#include "cpu/direct/rows.inc"
}  // namespace fastconv::cpu::avx512
