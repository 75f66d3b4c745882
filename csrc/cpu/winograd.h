// Winograd conv2d for stride-1 3x3 float convs, NCHW and NHWC: F(2x2, 3x3) forward, F(3x3, 2x2) weight gradient
// (see winograd.cpp). Stride-1 grad-input is a forward conv, so it takes the forward's path.
#pragma once
#include "../conv_params.h"

namespace fastconv::cpu {

// Whether winograd_forward handles p (and pays off); FASTCONV_WINOGRAD=0 turns it off, for tests of the
// GEMM path and for comparisons.
bool winograd_applies(const ConvParams& p);
// flipped: w is the weight of the conv whose grad-input p is (see grad_input_as_forward), used as the
// rotated, transposed kernel without a copy.
template <typename T>
void winograd_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, bool flipped = false);
template <typename T> void winograd_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw);

}  // namespace fastconv::cpu
