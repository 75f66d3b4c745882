// Depthwise conv2d (Cg == 1, groups > 1) on raw pointers: direct loops instead of the GEMM engine.
#pragma once
#include "conv_params.h"

namespace fastconv::cpu {

template <typename T> void depthwise_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y);
template <typename T> void depthwise_grad_input(const ConvParams& p, const T* dy, const T* w, T* dx);
template <typename T> void depthwise_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw);

}  // namespace fastconv::cpu
