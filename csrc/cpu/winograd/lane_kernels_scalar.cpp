// The image-lane Winograd loops compiled for any x86-64 CPU (baseline flags: SSE2); see lane_kernels.h.
#include "cpu/winograd/lane_kernels.h"

namespace fastconv::cpu::winograd::scalar {
#include "cpu/winograd/lane_kernels.inc"
}  // namespace fastconv::cpu::winograd::scalar
