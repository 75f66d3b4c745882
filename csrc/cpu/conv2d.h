// CPU conv2d kernels on raw pointers. Layout (NCHW or NHWC, weight K x Cg x R x S or K x R x S x Cg) is
// p.channels_last; tensors are dense in that layout. float and double; the binding widens half and bfloat16.
#pragma once
#include "conv_params.h"

namespace fastconv::cpu {

template <typename T> void conv2d_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y);
template <typename T> void conv2d_grad_input(const ConvParams& p, const T* dy, const T* w, T* dx);
template <typename T> void conv2d_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw);
template <typename T> void conv2d_grad_bias(const ConvParams& p, const T* dy, T* db);

}  // namespace fastconv::cpu
