// Every fastconv op's schema, and the argument checks all backends share. Kernels live in cpu/ and cuda/.
#include "op_checks.h"

#include <ATen/ATen.h>
#include <Python.h>

#include <algorithm>
#include <limits>

#include "cpu/isa.h"

namespace fastconv {

namespace {

// torch's limit (ConvUtils): a padding above it would overflow the padded size of any input.
constexpr int64_t kMaxPadding = std::numeric_limits<int64_t>::max() / 2;

void check_pair(at::IntArrayRef v, size_t n, const char* name) {
  TORCH_CHECK(v.size() == n, "fastconv: expected ", name, " to have ", n, " values, but got ", v.size());
}

void check_float_dtype(const at::Tensor& t, const char* name) {
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
              "fastconv: ", name, " must be a floating point tensor (float32, float64, float16 or bfloat16), got ",
              dt);
}

// a + b and a * b for sizes computed from user-given integers: an overflow is an error, never a wrapped size.
int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  TORCH_CHECK(!__builtin_add_overflow(a, b, &r), "fastconv: ", what, " overflows int64 (", a, " + ", b, ")");
  return r;
}

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  TORCH_CHECK(!__builtin_mul_overflow(a, b, &r), "fastconv: ", what, " overflows int64 (", a, " * ", b, ")");
  return r;
}

// torch's pooling takes its window arguments as C ints; so do we (and every size below stays far from overflow).
void check_fits_int(at::IntArrayRef values) {
  for (int64_t v : values)
    TORCH_CHECK(v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(),
                "value cannot be converted to type int without overflow: ", v);
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
  for (int64_t d : dilation) TORCH_CHECK(d > 0, "non-positive dilation is not supported");
  for (int64_t q : padding) TORCH_CHECK(q >= 0, "negative padding is not supported");
  for (size_t i = 0; i < padding.size(); ++i)
    TORCH_CHECK(padding[i] <= kMaxPadding, "Given padding=", padding[i], " at dimension ", i % 2,
                " , expected padding to be at most ", kMaxPadding);
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
  // Each padding is at most 2^62 - 1, so a padded size can still overflow with a large input: checked.
  const int64_t padded_h = checked_add(p.H, padding[0] + padding[2], "padded input height");
  const int64_t padded_w = checked_add(p.W, padding[1] + padding[3], "padded input width");
  const int64_t eff_r = checked_add(checked_mul(p.dil_h, p.R - 1, "dilated kernel height"), 1, "dilated kernel height");
  const int64_t eff_s = checked_add(checked_mul(p.dil_w, p.S - 1, "dilated kernel width"), 1, "dilated kernel width");
  TORCH_CHECK(padded_h >= eff_r && padded_w >= eff_s, "Calculated padded input size per channel: (", padded_h,
              " x ", padded_w, "). Kernel size: (", eff_r, " x ", eff_s,
              "). Kernel size can't be greater than actual input size");
  p.P = conv_output_size(p.H, padding[0], padding[2], p.R, p.stride_h, p.dil_h);
  p.Q = conv_output_size(p.W, padding[1], padding[3], p.S, p.stride_w, p.dil_w);
  checked_mul(checked_mul(p.N, p.K, "output size"), checked_mul(p.P, p.Q, "output size"), "output size");
  // With one output row the stride is never used: any stride of at least the padded height gives that row.
  // A huge one (up to 2^63 - 1) is replaced by the padded height, so that no kernel's row arithmetic (which may
  // look one row past the last) overflows.
  if (p.P == 1) p.stride_h = std::min(p.stride_h, padded_h);
  if (p.Q == 1) p.stride_w = std::min(p.stride_w, padded_w);
  // An empty batch's output is contiguous whatever the layouts, as torch's (its gradients: see _ops.py).
  p.channels_last = p.N > 0 && (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                                weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
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

at::Tensor& fill_empty_reduction(at::Tensor& out, const at::Tensor& bias) {
  return bias.defined() ? out.copy_(bias.view({1, -1, 1, 1}).expand_as(out)) : out.zero_();
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
  for (at::IntArrayRef values : {kernel_size, stride, padding, dilation}) check_fits_int(values);
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
