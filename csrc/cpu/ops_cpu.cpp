// CPU binding: validate (op_checks.h), make inputs dense in the layout torch would pick, allocate, run the
// kernel on raw pointers. float16 / bfloat16 are computed in float32 and rounded once at the end, except where a
// kernel reads bfloat16 in place: the bfloat16-pair GEMMs, the image-lane Winograd paths, the strided
// grad-input (col2im), the channels_last image-input (first layer) kernels and max_pool2d (whose backward rounds
// each add, as torch's).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "op_checks.h"
#include "cpu/conv2d.h"
#include "cpu/select.h"
#include "cpu/gemm/micro.h"
#include "cpu/memory.h"
#include "cpu/pool/maxpool2d.h"

namespace fastconv::cpu {

namespace {

at::ScalarType compute_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

// The tensor the kernel reads: dense in `fmt`, in the compute type.
at::Tensor kernel_input(const at::Tensor& t, at::MemoryFormat fmt) {
  return t.to(compute_type(t.scalar_type())).contiguous(fmt);
}

// Result in the caller's dtype; the layout of `computed` is kept.
at::Tensor finish(const at::Tensor& computed, at::ScalarType dtype) {
  return computed.scalar_type() == dtype ? computed : computed.to(dtype);
}

// bfloat16 operands multiply in bfloat16 (float accumulators) where the ISA in use has the instruction; the
// kernels still read them widened to float, so every path works, and the GEMMs convert their packed panels.
bool bf16_products_for(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == at::kBFloat16 && b.scalar_type() == at::kBFloat16 && has_bf16_products(active_isa());
}

// A bfloat16 tensor dense in `fmt` whose data starts on a 4-byte boundary (the pair path reads channel pairs as
// 32-bit elements): the tensor itself when it is, else a fresh copy (a view at an odd element offset).
at::Tensor aligned_bf16(const at::Tensor& t, at::MemoryFormat fmt) {
  at::Tensor dense = t.contiguous(fmt);
  if (reinterpret_cast<uintptr_t>(dense.const_data_ptr()) % 4 == 0) return dense;
  return dense.clone(fmt);
}

const uint16_t* bf16_bits(const at::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>());
}
uint16_t* mutable_bf16_bits(at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.mutable_data_ptr<at::BFloat16>()); }

bool both_bf16(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == at::kBFloat16 && b.scalar_type() == at::kBFloat16;
}

// How the kernels multiply operands a and b (select.h).
Arithmetic arithmetic_of(const at::Tensor& a, const at::Tensor& b) {
  if (compute_type(a.scalar_type()) != at::kFloat) return Arithmetic::kDouble;
  return bf16_products_for(a, b) ? Arithmetic::kBf16Products : Arithmetic::kFloat;
}

// A fresh output for the kernel to fill (memory.h says why it is advised).
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t.data_ptr(), t.nbytes());
  return t;
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "fastconv: expected ", name, " on the CPU, got ", t.device());
}

at::Tensor conv2d_op(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const ConvParams p = make_conv_params(input, weight, stride, padding, dilation, groups);
  check_conv_bias(bias, input, weight);
  check_cpu(input, "input");
  const auto fmt = conv_memory_format(p);
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? kernel_input(*bias, at::MemoryFormat::Contiguous) : at::Tensor();
  if (bf16_products_for(input, weight) && conv2d_forward_bf16_applies(p)) {  // bfloat16 read in place
    const at::Tensor xb = aligned_bf16(input, fmt), wb = aligned_bf16(weight, fmt);
    at::Tensor y = empty_output({p.N, p.K, p.P, p.Q}, xb.options().memory_format(fmt));
    const ScopedBf16Products products(true);
    conv2d_forward_bf16(p, bf16_bits(xb), bf16_bits(wb), has_bias ? b.const_data_ptr<float>() : nullptr,
                        mutable_bf16_bits(y));
    return y;
  }
  if (both_bf16(input, weight) && conv2d_forward_winograd_bf16_applies(p, arithmetic_of(input, weight))) {
    const at::Tensor xb = input.contiguous(fmt), w = kernel_input(weight, fmt);
    at::Tensor y = empty_output({p.N, p.K, p.P, p.Q}, xb.options().memory_format(fmt));
    if (conv2d_forward_winograd_bf16(p, arithmetic_of(input, weight), bf16_bits(xb), w.const_data_ptr<float>(),
                                     has_bias ? b.const_data_ptr<float>() : nullptr, mutable_bf16_bits(y)))
      return y;
  }  // (not all finite: computed again below, on float copies)
  if (both_bf16(input, weight) && conv2d_forward_image_bf16_applies(p, arithmetic_of(input, weight))) {
    const at::Tensor xb = input.contiguous(fmt), w = kernel_input(weight, fmt);
    at::Tensor y = empty_output({p.N, p.K, p.P, p.Q}, xb.options().memory_format(fmt));
    conv2d_forward_image_bf16(p, arithmetic_of(input, weight), bf16_bits(xb), w.const_data_ptr<float>(),
                              has_bias ? b.const_data_ptr<float>() : nullptr, mutable_bf16_bits(y));
    return y;
  }
  const at::Tensor x = kernel_input(input, fmt), w = kernel_input(weight, fmt);
  at::Tensor y = empty_output({p.N, p.K, p.P, p.Q}, x.options().memory_format(fmt));
  if (p.Cg() == 0) return finish(fill_empty_reduction(y, b), input.scalar_type());
  const ScopedBf16Products products(bf16_products_for(input, weight));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "fastconv_conv2d", [&] {
    conv2d_forward<scalar_t>(p, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             has_bias ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>());
  });
  return finish(y, input.scalar_type());
}

at::Tensor conv2d_grad_input_op(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups) {
  const ConvParams p = make_conv_params(input, weight, stride, padding, dilation, groups);
  check_grad_output(grad_output, p, input);
  check_cpu(input, "input");
  const auto fmt = conv_memory_format(p);
  if (bf16_products_for(grad_output, weight) && conv2d_grad_input_bf16_applies(p)) {  // bfloat16 read in place
    const at::Tensor dyb = aligned_bf16(grad_output, fmt), wb = aligned_bf16(weight, fmt);
    at::Tensor dx = empty_output(input.sizes(), dyb.options().memory_format(fmt));
    const ScopedBf16Products products(true);
    conv2d_grad_input_bf16(p, bf16_bits(dyb), bf16_bits(wb), mutable_bf16_bits(dx));
    return dx;
  }
  if (both_bf16(grad_output, weight) && conv2d_grad_input_winograd_bf16_applies(p, arithmetic_of(grad_output, weight))) {
    const at::Tensor dyb = grad_output.contiguous(fmt), w = kernel_input(weight, fmt);
    at::Tensor dx = empty_output(input.sizes(), dyb.options().memory_format(fmt));
    if (conv2d_grad_input_winograd_bf16(p, arithmetic_of(grad_output, weight), bf16_bits(dyb),
                                        w.const_data_ptr<float>(), mutable_bf16_bits(dx)))
      return dx;
  }
  if (both_bf16(grad_output, weight) && conv2d_grad_input_col2im_bf16_applies(p, arithmetic_of(grad_output, weight))) {
    const at::Tensor dyb = grad_output.contiguous(fmt), w = kernel_input(weight, fmt);
    at::Tensor dx = empty_output(input.sizes(), dyb.options().memory_format(fmt));
    conv2d_grad_input_col2im_bf16(p, arithmetic_of(grad_output, weight), bf16_bits(dyb), w.const_data_ptr<float>(),
                                  mutable_bf16_bits(dx));
    return dx;
  }
  const at::Tensor dy = kernel_input(grad_output, fmt), w = kernel_input(weight, fmt);
  at::Tensor dx = empty_output(input.sizes(), dy.options().memory_format(fmt));
  const ScopedBf16Products products(bf16_products_for(grad_output, weight));
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "fastconv_conv2d_grad_input", [&] {
    conv2d_grad_input<scalar_t>(p, dy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                dx.mutable_data_ptr<scalar_t>());
  });
  return finish(dx, input.scalar_type());
}

at::Tensor conv2d_grad_weight_op(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                              int64_t groups) {
  const ConvParams p = make_conv_params(input, weight, stride, padding, dilation, groups);
  check_grad_output(grad_output, p, input);
  check_cpu(input, "input");
  const auto fmt = conv_memory_format(p);
  if (bf16_products_for(grad_output, input) && conv2d_grad_weight_bf16_applies(p)) {  // bfloat16 read in place
    const at::Tensor dyb = grad_output.contiguous(fmt), xb = input.contiguous(fmt);
    at::Tensor dw = at::empty(weight.sizes(), dyb.options().dtype(at::kFloat).memory_format(fmt));
    const ScopedBf16Products products(true);
    conv2d_grad_weight_bf16(p, bf16_bits(dyb), bf16_bits(xb), dw.mutable_data_ptr<float>());
    return finish(dw, weight.scalar_type());
  }
  if (both_bf16(grad_output, input) && conv2d_grad_weight_winograd_bf16_applies(p, arithmetic_of(grad_output, input))) {
    const at::Tensor dyb = grad_output.contiguous(fmt), xb = input.contiguous(fmt);
    at::Tensor dw = at::empty(weight.sizes(), dyb.options().dtype(at::kFloat).memory_format(fmt));
    if (conv2d_grad_weight_winograd_bf16(p, arithmetic_of(grad_output, input), bf16_bits(dyb), bf16_bits(xb),
                                         dw.mutable_data_ptr<float>()))
      return finish(dw, weight.scalar_type());
  }
  if (both_bf16(grad_output, input) && conv2d_grad_weight_image_bf16_applies(p, arithmetic_of(grad_output, input))) {
    const at::Tensor dyb = grad_output.contiguous(fmt), xb = input.contiguous(fmt);
    at::Tensor dw = at::empty(weight.sizes(), dyb.options().dtype(at::kFloat).memory_format(fmt));
    conv2d_grad_weight_image_bf16(p, arithmetic_of(grad_output, input), bf16_bits(dyb), bf16_bits(xb),
                                  dw.mutable_data_ptr<float>());
    return finish(dw, weight.scalar_type());
  }
  const at::Tensor dy = kernel_input(grad_output, fmt), x = kernel_input(input, fmt);
  at::Tensor dw = at::empty(weight.sizes(), dy.options().memory_format(fmt));
  const ScopedBf16Products products(bf16_products_for(grad_output, input));
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "fastconv_conv2d_grad_weight", [&] {
    conv2d_grad_weight<scalar_t>(p, dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                 dw.mutable_data_ptr<scalar_t>());
  });
  return finish(dw, weight.scalar_type());
}

at::Tensor conv2d_grad_bias_op(const at::Tensor& grad_output) {
  TORCH_CHECK(grad_output.dim() == 4, "fastconv: expected a 4D grad_output, got ", grad_output.sizes());
  check_cpu(grad_output, "grad_output");
  ConvParams p{};
  p.N = grad_output.size(0); p.K = grad_output.size(1); p.P = grad_output.size(2); p.Q = grad_output.size(3);
  p.channels_last = grad_output.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const at::Tensor dy = kernel_input(grad_output, conv_memory_format(p));
  at::Tensor db = at::empty({p.K}, dy.options());
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "fastconv_conv2d_grad_bias", [&] {
    conv2d_grad_bias<scalar_t>(p, dy.const_data_ptr<scalar_t>(), db.mutable_data_ptr<scalar_t>());
  });
  return finish(db, grad_output.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_op(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode) {
  const PoolParams p = make_pool_params(input, kernel_size, stride, padding, dilation, ceil_mode);
  check_cpu(input, "input");
  const auto fmt = pool_memory_format(p);
  if (input.scalar_type() == at::kBFloat16) {  // pooled as its bits (compared as float: exact), no float copies
    const at::Tensor x = input.contiguous(fmt);
    at::Tensor y = empty_output({p.N, p.C, p.P, p.Q}, x.options().memory_format(fmt));
    at::Tensor indices = empty_output({p.N, p.C, p.P, p.Q}, x.options().dtype(at::kLong).memory_format(fmt));
    max_pool2d_forward<uint16_t>(p, bf16_bits(x), mutable_bf16_bits(y), indices.mutable_data_ptr<int64_t>());
    return {y, indices};
  }
  const at::Tensor x = kernel_input(input, fmt);
  at::Tensor y = empty_output({p.N, p.C, p.P, p.Q}, x.options().memory_format(fmt));
  at::Tensor indices = empty_output({p.N, p.C, p.P, p.Q}, x.options().dtype(at::kLong).memory_format(fmt));
  AT_DISPATCH_ALL_TYPES(x.scalar_type(), "fastconv_max_pool2d", [&] {
    max_pool2d_forward<scalar_t>(p, x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                 indices.mutable_data_ptr<int64_t>());
  });
  return {finish(y, input.scalar_type()), indices};
}

at::Tensor max_pool2d_grad_op(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& indices) {
  const PoolParams p = make_pool_grad_params(grad_output, input, indices);
  check_cpu(input, "input");
  const auto fmt = pool_memory_format(p);
  if (both_bf16(grad_output, input)) {  // summed in bfloat16 as torch sums it (maxpool2d.cpp: accumulate)
    const at::Tensor dy = grad_output.contiguous(fmt), idx = indices.contiguous(fmt);
    at::Tensor dx = empty_output(input.sizes(), dy.options().memory_format(fmt));
    max_pool2d_backward<uint16_t>(p, bf16_bits(dy), idx.const_data_ptr<int64_t>(), mutable_bf16_bits(dx));
    return dx;
  }
  const at::Tensor dy = kernel_input(grad_output, fmt), idx = indices.contiguous(fmt);
  at::Tensor dx = empty_output(input.sizes(), dy.options().memory_format(fmt));  // the kernel zeroes it
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "fastconv_max_pool2d_grad", [&] {
    max_pool2d_backward<scalar_t>(p, dy.const_data_ptr<scalar_t>(), idx.const_data_ptr<int64_t>(),
                                  dx.mutable_data_ptr<scalar_t>());
  });
  return finish(dx, input.scalar_type());
}

// [forward, grad-input, grad-weight]: the algorithm each pass of this problem runs (select.h); a stride-1
// grad-input that runs as a forward reads "flipped_forward:<algorithm>".
std::vector<std::string> conv2d_algorithms_op(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const ConvParams p = make_conv_params(input, weight, stride, padding, dilation, groups);
  const Arithmetic arithmetic = arithmetic_of(input, weight);
  const GradInputChoice grad_input = choose_grad_input(p, arithmetic);
  return {algo_name(choose_forward(p, arithmetic)),
          std::string(grad_input.as_flipped_forward ? "flipped_forward:" : "") + algo_name(grad_input.algo),
          algo_name(choose_grad_weight(p, arithmetic))};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastconv, m) {
  m.def("conv2d_algorithms(Tensor input, Tensor weight, int[2] stride, int[4] padding, int[2] dilation, int groups) "
        "-> str[]",
        &conv2d_algorithms_op);
  // How many tdpbf16ps the AMX emulation (isa.h: FASTCONV_AMX_EMULATION) has run in this process: tests read it
  // to see that the tile kernel, not another, computed a result.
  m.def("amx_emulated_tile_products() -> int", [] { return amx_emulation::tile_products(); });
}

TORCH_LIBRARY_IMPL(fastconv, CPU, m) {
  m.impl("conv2d", &conv2d_op);
  m.impl("conv2d_grad_input", &conv2d_grad_input_op);
  m.impl("conv2d_grad_weight", &conv2d_grad_weight_op);
  m.impl("conv2d_grad_bias", &conv2d_grad_bias_op);
  m.impl("max_pool2d", &max_pool2d_op);
  m.impl("max_pool2d_grad", &max_pool2d_grad_op);
}

}  // namespace fastconv::cpu
