// max_pool2d row kernels for any x86-64 CPU (the baseline flags); see rows.h.
#include "cpu/pool/rows.h"

namespace fastconv::cpu::scalar {
#define FASTCONV_POOL_VEC_BYTES 16  // SSE2 xmm, part of every x86-64
#include "cpu/pool/rows.inc"
}  // namespace fastconv::cpu::scalar
