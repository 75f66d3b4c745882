// The direct conv kernels for any x86-64 CPU (baseline flags: SSE2); see direct.h.
#include "cpu/direct/direct.h"

namespace fastconv::cpu::scalar {
#define FASTCONV_VEC_BYTES 16  // xmm
#include "cpu/direct/rows.inc"
}  // namespace fastconv::cpu::scalar
