// The depthwise loops for any x86-64 CPU (baseline flags: SSE2, no FMA); see rows.h.
#include "cpu/depthwise/rows.h"

#include <cmath>

namespace fastconv::cpu::scalar {
#include "cpu/depthwise/rows.inc"
}  // namespace fastconv::cpu::scalar
