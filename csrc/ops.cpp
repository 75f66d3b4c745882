// Every fastconv op's schema, and the argument checks all backends share. Kernels live in cpu/ and cuda/.
#include "op_checks.h"

#include <ATen/ATen.h>
#include <Python.h>

#include "cpu/gemm_micro.h"

namespace fastconv {

namespace {

void check_pair(at::IntArrayRef v, size_t n, const char* name) {
  TORCH_CHECK(v.size() == n, "fastconv: expected ", name, " to have ", n, " values, but got ", v.size());
}

void check_float_dtype(const at::Tensor& t, const char* name) {
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              "fastconv: ", name, " must be a floating point tensor (float32, float64, float16 or bfloat16), got ",
              dt);
}

}  // namespace

ConvParams make_conv_params(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_pair(stride, 2, "stride");
  check_pair(padding, 4, "padding");
  check_pair(dilation, 2, "dilation");
  TORCH_CHECK(input.dim() == 4, "Expected 4D (batched) input to fastconv::conv2d, but got input of size: ",
              input.sizes());
  TORCH_CHECK(weight.dim() == 4, "Expected 4D weight to conv2d, but got weight of size: ", weight.sizes());
  check_float_dtype(input, "input");
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(), "expected scalar type ", input.scalar_type(),
              " but found ", weight.scalar_type(), " (input and weight must have the same dtype)");
  TORCH_CHECK(input.device() == weight.device(), "Expected input and weight to be on the same device, but got ",
              input.device(), " and ", weight.device());
  for (int64_t s : stride) TORCH_CHECK(s > 0, "non-positive stride is not supported");
  for (int64_t d : dilation) TORCH_CHECK(d > 0, "dilation should be greater than zero");
  for (int64_t q : padding) TORCH_CHECK(q >= 0, "negative padding is not supported");
  TORCH_CHECK(groups > 0, "non-positive groups is not supported");

  ConvParams p{};
  p.N = input.size(0); p.C = input.size(1); p.H = input.size(2); p.W = input.size(3);
  p.K = weight.size(0); p.R = weight.size(2); p.S = weight.size(3);
  p.stride_h = stride[0]; p.stride_w = stride[1];
  p.pad_h = padding[0]; p.pad_w = padding[1];
  p.dil_h = dilation[0]; p.dil_w = dilation[1];
  p.groups = groups;

  TORCH_CHECK(p.K >= groups && p.K % groups == 0, "Given groups=", groups, ", expected weight to be divisible by ",
              groups, " at dimension 0, but got weight of size ", weight.sizes(), " instead");
  TORCH_CHECK(p.C == weight.size(1) * groups, "Given groups=", groups, ", weight of size ", weight.sizes(),
              ", expected input", input.sizes(), " to have ", weight.size(1) * groups,
              " channels, but got ", p.C, " channels instead");
  TORCH_CHECK(p.R > 0 && p.S > 0, "fastconv: kernel size must be positive, got weight of size ", weight.sizes());
  const int64_t padded_h = p.H + padding[0] + padding[2], padded_w = p.W + padding[1] + padding[3];
  const int64_t eff_r = p.dil_h * (p.R - 1) + 1, eff_s = p.dil_w * (p.S - 1) + 1;
  TORCH_CHECK(padded_h >= eff_r && padded_w >= eff_s, "Calculated padded input size per channel: (", padded_h,
              " x ", padded_w, "). Kernel size: (", eff_r, " x ", eff_s,
              "). Kernel size can't be greater than actual input size");
  p.P = conv_output_size(p.H, padding[0], padding[2], p.R, p.stride_h, p.dil_h);
  p.Q = conv_output_size(p.W, padding[1], padding[3], p.S, p.stride_w, p.dil_w);
  p.channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                    weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return p;
}

void check_conv_bias(const std::optional<at::Tensor>& bias, const at::Tensor& input, const at::Tensor& weight) {
  if (!bias.has_value() || !bias->defined()) return;
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "Given weight of size ", weight.sizes(),
              ", expected bias to be 1-dimensional with ", weight.size(0), " elements, but got bias of size ",
              bias->sizes(), " instead");
  TORCH_CHECK(bias->scalar_type() == input.scalar_type(), "expected scalar type ", input.scalar_type(),
              " but found ", bias->scalar_type(), " (bias must have the dtype of input)");
  TORCH_CHECK(bias->device() == input.device(), "Expected input and bias to be on the same device, but got ",
              input.device(), " and ", bias->device());
}

void check_grad_output(const at::Tensor& grad_output, const ConvParams& p, const at::Tensor& input) {
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == p.N && grad_output.size(1) == p.K &&
                  grad_output.size(2) == p.P && grad_output.size(3) == p.Q,
              "fastconv: expected grad_output of size [", p.N, ", ", p.K, ", ", p.P, ", ", p.Q, "], but got ",
              grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), "expected scalar type ", input.scalar_type(),
              " but found ", grad_output.scalar_type(), " (grad_output)");
  TORCH_CHECK(grad_output.device() == input.device(), "Expected grad_output and input on the same device, got ",
              grad_output.device(), " and ", input.device());
}

at::MemoryFormat conv_memory_format(const ConvParams& p) {
  return p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

PoolParams make_pool_params(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  check_pair(kernel_size, 2, "kernel_size");
  check_pair(stride, 2, "stride");
  check_pair(padding, 2, "padding");
  check_pair(dilation, 2, "dilation");
  TORCH_CHECK(input.dim() == 4, "Expected 4D (batched) input to fastconv::max_pool2d, but got input of size: ",
              input.sizes());
  TORCH_CHECK_NOT_IMPLEMENTED(
      at::isFloatingType(input.scalar_type()) || at::isIntegralType(input.scalar_type(), false),
      "\"max_pool2d\" not implemented for '", input.scalar_type(), "'");
  for (int64_t k : kernel_size) TORCH_CHECK(k > 0, "kernel size should be greater than zero, but got ", kernel_size);
  for (int64_t s : stride) TORCH_CHECK(s > 0, "stride should be greater than zero, but got ", stride);
  for (int64_t d : dilation) TORCH_CHECK(d > 0, "dilation should be greater than zero, but got ", dilation);
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(padding[i] >= 0, "pad must be non-negative, but got pad: ", padding[i]);
    TORCH_CHECK(padding[i] <= ((kernel_size[i] - 1) * dilation[i] + 1) / 2,
                "pad should be at most half of effective kernel size, but got pad=", padding[i],
                ", kernel_size=", kernel_size[i], " and dilation=", dilation[i]);
    TORCH_CHECK(padding[i] <= kernel_size[i] / 2,
                "pad should be smaller than or equal to half of kernel size, but got padW = ", padding[1],
                ", padH = ", padding[0], ", kW = ", kernel_size[1], ", kH = ", kernel_size[0]);
  }
  TORCH_CHECK(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0,
              "Expected input to have non-zero size for non-batch dimensions, but got ", input.sizes());
  PoolParams p{};
  p.N = input.size(0); p.C = input.size(1); p.H = input.size(2); p.W = input.size(3);
  p.kernel_h = kernel_size[0]; p.kernel_w = kernel_size[1];
  p.stride_h = stride[0]; p.stride_w = stride[1];
  p.pad_h = padding[0]; p.pad_w = padding[1];
  p.dil_h = dilation[0]; p.dil_w = dilation[1];
  p.P = pool_output_size(p.H, p.kernel_h, p.pad_h, p.stride_h, p.dil_h, ceil_mode);
  p.Q = pool_output_size(p.W, p.kernel_w, p.pad_w, p.stride_w, p.dil_w, ceil_mode);
  TORCH_CHECK(p.P >= 1 && p.Q >= 1, "Given input size: (", p.C, "x", p.H, "x", p.W, "). Calculated output size: (",
              p.C, "x", p.P, "x", p.Q, "). Output size is too small");
  p.channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return p;
}

PoolParams make_pool_grad_params(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices) {
  TORCH_CHECK(input.dim() == 4 && grad_output.dim() == 4 && grad_output.size(0) == input.size(0) &&
                  grad_output.size(1) == input.size(1),
              "fastconv: max_pool2d_grad expects 4D grad_output and input with equal N and C, got ",
              grad_output.sizes(), " and ", input.sizes());
  TORCH_CHECK(indices.sizes() == grad_output.sizes() && indices.scalar_type() == at::kLong,
              "fastconv: expected int64 indices of size ", grad_output.sizes(), ", got ", indices.scalar_type(),
              " of size ", indices.sizes());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(), "expected scalar type ", input.scalar_type(),
              " but found ", grad_output.scalar_type(), " (grad_output)");
  TORCH_CHECK(grad_output.device() == input.device() && indices.device() == input.device(),
              "Expected grad_output, input and indices on the same device, but got ", grad_output.device(), ", ",
              input.device(), " and ", indices.device());
  PoolParams p{};
  p.N = input.size(0); p.C = input.size(1); p.H = input.size(2); p.W = input.size(3);
  p.P = grad_output.size(2); p.Q = grad_output.size(3);
  p.channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return p;
}

at::MemoryFormat pool_memory_format(const PoolParams& p) {
  return p.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

TORCH_LIBRARY(fastconv, m) {
  // padding = [top, left, bottom, right]; the Python layer turns int / tuple / 'same' / 'valid' into it.
  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, int[2] dilation, "
        "int groups) -> Tensor");
  // input / weight give the shape and memory format of the gradient they stand for; their values are not read.
  m.def("conv2d_grad_input(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[4] padding, "
        "int[2] dilation, int groups) -> Tensor");
  m.def("conv2d_grad_weight(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[4] padding, "
        "int[2] dilation, int groups) -> Tensor");
  m.def("conv2d_grad_bias(Tensor grad_output) -> Tensor");
  // Returns (output, indices); indices hold h * W + w within each input plane, as torch's do.
  m.def("max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode) -> (Tensor, Tensor)");
  m.def("max_pool2d_grad(Tensor grad_output, Tensor input, Tensor indices) -> Tensor");
  // [ISA the CPU kernels use now (FASTCONV_ISA may force one), CPU model and the ISAs it has]
  m.def("cpu_info() -> str[]", [] {
    try {
      return std::vector<std::string>{cpu::isa_name(cpu::active_isa()), cpu::cpu_description()};
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK_VALUE(false, e.what());
    }
  });
}

}  // namespace fastconv

// `import fastconv._C` loads the library, which runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
