// The small-K direct conv row kernel for any x86-64 CPU (baseline flags: SSE2); see small_k.h.
#include "small_k.h"

namespace fastconv::cpu::scalar {
#define FASTCONV_VEC_BYTES 16  // xmm
#include "small_k_row.inc"
}  // namespace fastconv::cpu::scalar
