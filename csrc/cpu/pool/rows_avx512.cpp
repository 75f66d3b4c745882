// max_pool2d row kernels compiled for avx512; see rows.h.
// The headers come before the target pragma: their inline functions must stay baseline code, since the
// linker may keep any one copy of them for the whole library.
#include "cpu/pool/rows.h"

#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")

namespace fastconv::cpu::avx512 {
#define FASTCONV_POOL_VEC_BYTES 64  // zmm
#include "cpu/pool/rows.inc"
}  // namespace fastconv::cpu::avx512
