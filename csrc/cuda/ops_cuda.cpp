// CUDA implementations of the fastconv ops (schemas in ops.cpp). Validation is shared with the CPU backend
// (op_checks.h); here we add the CUDA-only limits, pick the device and stream, bring every operand into the
// memory format the kernels expect (conv_memory_format / pool_memory_format), allocate outputs and
// workspaces with the caching allocator, and raise on any launch error.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "../op_checks.h"
#include "launchers.h"

namespace fastconv {
namespace {

cuda::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return cuda::DType::Float32;
    case at::kDouble: return cuda::DType::Float64;
    case at::kHalf: return cuda::DType::Float16;
    case at::kBFloat16: return cuda::DType::BFloat16;
    default: break;
  }
  TORCH_CHECK(false, "fastconv (CUDA): unsupported dtype ", t.scalar_type(),
              "; expected float32, float64, float16 or bfloat16");
  return cuda::DType::Float32;  // not reached
}

void check_on_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "fastconv (CUDA): expected ", name, " to be a CUDA tensor, but it is on ", t.device());
}

void check_supported(const ConvParams& p) {
  const char* why = cuda::conv_unsupported_reason(p);
  TORCH_CHECK(why == nullptr, why, " (got input [", p.N, ", ", p.C, ", ", p.H, ", ", p.W, "], weight [", p.K, ", ",
              p.Cg(), ", ", p.R, ", ", p.S, "])");
}

void check_supported(const PoolParams& p) {
  const char* why = cuda::pool_unsupported_reason(p);
  TORCH_CHECK(why == nullptr, why, " (got input [", p.N, ", ", p.C, ", ", p.H, ", ", p.W, "])");
}

// The tensor-core kernels (conv_tc*.cu) are compile-checked but not yet validated on a GPU: opt-in only.
bool tensor_cores_enabled() {
  const char* v = std::getenv("FASTCONV_TENSOR_CORES");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

bool use_tc(const at::Tensor& t, const ConvParams& p, bool* allow_tf32) {
  if (!tensor_cores_enabled()) return false;
  *allow_tf32 = at::globalContext().allowTF32CuDNN();
  if (!cuda::conv2d_tc_supported(dtype_of(t), p, *allow_tf32)) return false;  // (GPUs below sm_80 included)
  const char* why_not = cuda::tc_code_for_device();
  TORCH_CHECK(why_not == nullptr, why_not);  // asked for tensor cores on a build without code for them
  return true;
}

void* ptr_or_null(const at::Tensor& t) { return t.defined() && t.numel() > 0 ? t.data_ptr() : nullptr; }

at::Tensor workspace(size_t bytes, const at::Tensor& like) {
  return bytes > 0 ? at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte)) : at::Tensor();
}

void check_launch(cudaError_t err) {
  C10_CUDA_CHECK(err);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor conv2d_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const ConvParams p = make_conv_params(input, weight, stride, padding, dilation, groups);
  check_conv_bias(bias, input, weight);
  check_on_cuda(input, "input");
  check_supported(p);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = conv_memory_format(p);
  at::Tensor out = at::empty({p.N, p.K, p.P, p.Q}, input.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  const at::Tensor x = input.contiguous(fmt), w = weight.contiguous(fmt);
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  if (p.Cg() == 0) return fill_empty_reduction(out, b);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  bool tf32 = false;
  if (use_tc(input, p, &tf32)) {
    check_launch(cuda::conv2d_forward_tc(dtype_of(input), ptr_or_null(x), ptr_or_null(w), ptr_or_null(b),
                                         out.data_ptr(), p, tf32, stream));
  } else {
    check_launch(cuda::conv2d_forward(dtype_of(input), ptr_or_null(x), ptr_or_null(w), ptr_or_null(b), out.data_ptr(),
                                      p, stream));
  }
  return out;
}

at::Tensor conv2d_grad_input_cuda(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                  int64_t groups) {
  const ConvParams p = make_conv_params(input, weight, stride, padding, dilation, groups);
  check_grad_output(grad_output, p, input);
  check_on_cuda(input, "input");
  check_supported(p);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = conv_memory_format(p);
  at::Tensor grad_input = at::empty(input.sizes(), input.options().memory_format(fmt));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor go = grad_output.contiguous(fmt), w = weight.contiguous(fmt);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  bool tf32 = false;
  if (use_tc(input, p, &tf32)) {
    check_launch(cuda::conv2d_backward_input_tc(dtype_of(input), ptr_or_null(go), ptr_or_null(w),
                                                grad_input.data_ptr(), p, tf32, stream));
  } else {
    check_launch(cuda::conv2d_backward_input(dtype_of(input), ptr_or_null(go), ptr_or_null(w), grad_input.data_ptr(),
                                             p, stream));
  }
  return grad_input;
}

at::Tensor conv2d_grad_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                   int64_t groups) {
  const ConvParams p = make_conv_params(input, weight, stride, padding, dilation, groups);
  check_grad_output(grad_output, p, input);
  check_on_cuda(input, "input");
  check_supported(p);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = conv_memory_format(p);
  at::Tensor grad_weight = at::empty(weight.sizes(), weight.options().memory_format(fmt));
  if (grad_weight.numel() == 0) return grad_weight;
  const at::Tensor go = grad_output.contiguous(fmt), x = input.contiguous(fmt);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const cuda::DType dt = dtype_of(input);
  bool tf32 = false;
  if (use_tc(input, p, &tf32)) {
    const at::Tensor ws = workspace(cuda::conv2d_backward_weight_tc_workspace_bytes(dt, p), input);
    check_launch(cuda::conv2d_backward_weight_tc(dt, ptr_or_null(go), ptr_or_null(x), grad_weight.data_ptr(),
                                                 ptr_or_null(ws), p, tf32, stream));
  } else {
    const at::Tensor ws = workspace(cuda::conv2d_backward_weight_workspace_bytes(dt, p), input);
    check_launch(cuda::conv2d_backward_weight(dt, ptr_or_null(go), ptr_or_null(x), grad_weight.data_ptr(),
                                              ptr_or_null(ws), p, stream));
  }
  return grad_weight;
}

at::Tensor conv2d_grad_bias_cuda(const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.dim() == 4, "fastconv: expected a 4D grad_output for conv2d_grad_bias, but got size ",
              grad_output.sizes());
  check_on_cuda(grad_output, "grad_output");
  const cuda::DType dt = dtype_of(grad_output);
  ConvParams p{};
  p.N = grad_output.size(0); p.K = grad_output.size(1); p.P = grad_output.size(2); p.Q = grad_output.size(3);
  p.groups = 1;
  p.channels_last = grad_output.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  TORCH_CHECK(p.K < (int64_t{1} << 31), "fastconv (CUDA): conv2d_grad_bias supports fewer than 2^31 channels");
  const c10::cuda::CUDAGuard guard(grad_output.device());
  at::Tensor grad_bias = at::empty({p.K}, grad_output.options());
  if (p.K == 0) return grad_bias;
  const at::Tensor go = grad_output.contiguous(conv_memory_format(p));
  const at::Tensor ws = workspace(cuda::conv2d_backward_bias_workspace_bytes(dt, p), grad_output);
  check_launch(cuda::conv2d_backward_bias(dt, ptr_or_null(go), grad_bias.data_ptr(), ptr_or_null(ws), p,
                                          c10::cuda::getCurrentCUDAStream()));
  return grad_bias;
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                                   at::IntArrayRef dilation, bool ceil_mode) {
  const PoolParams p = make_pool_params(input, kernel_size, stride, padding, dilation, ceil_mode);
  check_on_cuda(input, "input");
  check_supported(p);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = pool_memory_format(p);
  at::Tensor out = at::empty({p.N, p.C, p.P, p.Q}, input.options().memory_format(fmt));
  at::Tensor indices = at::empty({p.N, p.C, p.P, p.Q}, input.options().dtype(at::kLong).memory_format(fmt));
  if (out.numel() == 0) return {out, indices};
  const at::Tensor x = input.contiguous(fmt);
  check_launch(cuda::max_pool2d_forward(dtype_of(input), x.data_ptr(), out.data_ptr(),
                                        indices.data_ptr<int64_t>(), p, c10::cuda::getCurrentCUDAStream()));
  return {out, indices};
}

at::Tensor max_pool2d_grad_cuda(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices) {
  const PoolParams p = make_pool_grad_params(grad_output, input, indices);
  check_on_cuda(input, "input");
  const cuda::DType dt = dtype_of(input);
  check_supported(p);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::MemoryFormat fmt = pool_memory_format(p);
  at::Tensor grad_input = at::empty(input.sizes(), input.options().memory_format(fmt));
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor go = grad_output.contiguous(fmt), idx = indices.contiguous(fmt);
  const at::Tensor ws = workspace(cuda::max_pool2d_backward_workspace_bytes(p), input);
  check_launch(cuda::max_pool2d_backward(dt, ptr_or_null(go), static_cast<const int64_t*>(ptr_or_null(idx)),
                                         grad_input.data_ptr(), ptr_or_null(ws), p,
                                         c10::cuda::getCurrentCUDAStream()));
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastconv, CUDA, m) {
  m.impl("conv2d", TORCH_FN(conv2d_cuda));
  m.impl("conv2d_grad_input", TORCH_FN(conv2d_grad_input_cuda));
  m.impl("conv2d_grad_weight", TORCH_FN(conv2d_grad_weight_cuda));
  m.impl("conv2d_grad_bias", TORCH_FN(conv2d_grad_bias_cuda));
  m.impl("max_pool2d", TORCH_FN(max_pool2d_cuda));
  m.impl("max_pool2d_grad", TORCH_FN(max_pool2d_grad_cuda));
}

}  // namespace fastconv
