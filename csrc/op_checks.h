// Validation shared by every backend's binding: a bad call fails here with torch's wording, before
// any kernel runs. Each helper returns the filled problem struct that kernels receive.
#pragma once
#include <torch/library.h>
#include <ATen/core/Tensor.h>

#include "conv_params.h"
#include "pool_params.h"

namespace fastconv {

// padding is {top, left, bottom, right}. The layout follows torch: channels_last when input or weight is (over a
// non-empty batch).
ConvParams make_conv_params(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
void check_conv_bias(const std::optional<at::Tensor>& bias, const at::Tensor& input, const at::Tensor& weight);
// A conv over zero input channels sums nothing: its output is the bias (undefined: none), or zeros, as torch's.
at::Tensor& fill_empty_reduction(at::Tensor& out, const at::Tensor& bias);
// grad_output must have exactly the forward output's shape, dtype and device.
void check_grad_output(const at::Tensor& grad_output, const ConvParams& p, const at::Tensor& input);
at::MemoryFormat conv_memory_format(const ConvParams& p);

PoolParams make_pool_params(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode);
at::MemoryFormat pool_memory_format(const PoolParams& p);
// max_pool2d_grad: checks grad_output / input / indices agree (shape, dtype, device); the problem they describe.
PoolParams make_pool_grad_params(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices);

}  // namespace fastconv
