// The depthwise loops for any x86-64 CPU (baseline flags: SSE2, no FMA); see depthwise_rows.h.
#include "depthwise_rows.h"

#include <cmath>

namespace fastconv::cpu::scalar {
#include "depthwise_rows.inc"
}  // namespace fastconv::cpu::scalar
