// CPU max_pool2d kernels on raw pointers; layout p.channels_last (NCHW or NHWC), dense tensors.
#pragma once
#include "pool_params.h"

namespace fastconv::cpu {

// T: float, double, the integer types, or uint16_t holding bfloat16 bits (compared as float: exact).
template <typename T> void max_pool2d_forward(const PoolParams& p, const T* x, T* y, int64_t* indices);
// dx is overwritten: zeroed here, a slice right before its scatter (one pass over memory); each gradient goes
// to the input element its index names; an index outside its plane (a window wholly in the padding) is skipped.
template <typename T> void max_pool2d_backward(const PoolParams& p, const T* dy, const int64_t* indices, T* dx);

}  // namespace fastconv::cpu
