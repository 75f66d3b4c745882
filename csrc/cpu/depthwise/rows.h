// The innermost depthwise loops, compiled once per ISA (rows_<isa>.cpp) and chosen at run time like the
// GEMM micro-kernels; the threading and the tap bounds stay in depthwise.cpp.
//
// Each output element is one fused multiply-add per tap in (r, s) order, the bias added first (NCHW) or last
// (NHWC), and each grad-input element gathers its taps the same way: the order and rounding of oneDNN's
// depthwise kernels, which torch's CPU conv runs for float32 groups > 1, so the forward and the undilated
// grad-input agree with torch's bit for bit there, on every ISA (see rows.inc).
#pragma once
#include <cstdint>

#include "cpu/isa.h"

namespace fastconv::cpu {

template <typename T>
struct DepthwiseLoops {
  // out[q] += w * in[q * stride], q < n: one tap along an NCHW output row.
  void (*row_axpy)(T* out, const T* in, int64_t stride, T w, int64_t n);
  // out[q * stride] += w * g[q], q < n: one tap of an NCHW dy row scattered into a dx row.
  void (*row_scatter)(T* out, int64_t stride, const T* g, T w, int64_t n);
  // sum + a[0] * b[0] + a[a_stride] * b[b_stride] + ... (n terms, in order): a weight-gradient row.
  T (*row_dot)(const T* a, int64_t a_stride, const T* b, int64_t b_stride, int64_t n, T sum);
  // out[k] += w[k] * in[k / Kg], k < K: one tap of an NHWC pixel (channel multiplier Kg).
  void (*pixel_axpy)(T* out, const T* w, const T* in, int64_t K, int64_t Kg);
  // in[k / Kg] += w[k] * g[k], k < K: one tap of an NHWC dy pixel scattered into dx.
  void (*pixel_scatter)(T* in, const T* w, const T* g, int64_t K, int64_t Kg);
};

namespace scalar { template <typename T> DepthwiseLoops<T> depthwise_loops(); }
namespace avx2 { template <typename T> DepthwiseLoops<T> depthwise_loops(); }
namespace avx512 { template <typename T> DepthwiseLoops<T> depthwise_loops(); }

}  // namespace fastconv::cpu
