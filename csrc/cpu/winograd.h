// Winograd F(2x2, 3x3) conv2d forward for stride-1 3x3 float convs in NCHW (see winograd.cpp).
#pragma once
#include "../conv_params.h"

namespace fastconv::cpu {

// Whether winograd_forward handles p (and pays off); FASTCONV_WINOGRAD=0 turns it off, for tests of the
// GEMM path and for comparisons.
bool winograd_applies(const ConvParams& p);
template <typename T> void winograd_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y);

}  // namespace fastconv::cpu
