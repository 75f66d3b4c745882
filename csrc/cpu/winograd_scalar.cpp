// The image-lane Winograd loops compiled for any x86-64 CPU (baseline flags: SSE2); see winograd_lanes.h.
#include "winograd_lanes.h"

namespace fastconv::cpu::winograd::scalar {
#include "winograd_lanes.inc"
}  // namespace fastconv::cpu::winograd::scalar
