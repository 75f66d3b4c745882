// One conv2d problem: shapes, stride, padding, dilation, groups, layout, and the index math that
// forward and both backward passes share. Plain data, usable from C++ and CUDA (no torch headers).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FC_HOST_DEVICE __host__ __device__
#else
#define FC_HOST_DEVICE
#endif

namespace fastconv {

FC_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
FC_HOST_DEVICE inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Output extent of one spatial dim. pad_begin/pad_end may differ ('same' with an even effective kernel).
FC_HOST_DEVICE inline int64_t conv_output_size(int64_t in, int64_t pad_begin, int64_t pad_end,
                                               int64_t kernel, int64_t stride, int64_t dilation) {
  return (in + pad_begin + pad_end - dilation * (kernel - 1) - 1) / stride + 1;
}

struct ConvParams {
  int64_t N, C, H, W;   // input: batch, channels, height, width
  int64_t K, R, S;      // weight: output channels, kernel height, kernel width
  int64_t P, Q;         // output height, width
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;  // leading (top/left) padding; trailing padding only shows in P, Q
  int64_t dil_h, dil_w;
  int64_t groups;
  // false: input/output NCHW, weight K x Cg x R x S.  true: NHWC, weight K x R x S x Cg (channels_last).
  bool channels_last;

  FC_HOST_DEVICE int64_t Cg() const { return C / groups; }  // input channels per group
  FC_HOST_DEVICE int64_t Kg() const { return K / groups; }  // output channels per group
  FC_HOST_DEVICE int64_t RS() const { return R * S; }
  FC_HOST_DEVICE int64_t HW() const { return H * W; }
  FC_HOST_DEVICE int64_t PQ() const { return P * Q; }
  // Input row/column read by output row p (column q) at kernel tap r (s); may fall in the padding.
  FC_HOST_DEVICE int64_t in_row(int64_t p, int64_t r) const { return p * stride_h - pad_h + r * dil_h; }
  FC_HOST_DEVICE int64_t in_col(int64_t q, int64_t s) const { return q * stride_w - pad_w + s * dil_w; }
  // Whether padding and dilated kernel extents are small enough (< 2^16) for kernels that copy padded rows or
  // phase planes of the input, sized by them: 'same' with dilation 2^31 pads by billions around an ordinary
  // output. Other problems take the GEMM packing that reads x in place.
  FC_HOST_DEVICE bool padded_extents_small() const {
    constexpr int64_t kLimit = int64_t{1} << 16;
    return pad_h < kLimit && pad_w < kLimit && (R - 1) * dil_h < kLimit && (S - 1) * dil_w < kLimit;
  }
  FC_HOST_DEVICE bool in_bounds(int64_t h, int64_t w) const {
    return static_cast<uint64_t>(h) < static_cast<uint64_t>(H) && static_cast<uint64_t>(w) < static_cast<uint64_t>(W);
  }
  // Element offsets of input(n, c, h, w), output(n, k, p, q) and weight(k, c, r, s) in the layout above.
  FC_HOST_DEVICE int64_t input_offset(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return channels_last ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
  }
  FC_HOST_DEVICE int64_t output_offset(int64_t n, int64_t k, int64_t p, int64_t q) const {
    return channels_last ? ((n * P + p) * Q + q) * K + k : ((n * K + k) * P + p) * Q + q;
  }
  FC_HOST_DEVICE int64_t weight_offset(int64_t k, int64_t c, int64_t r, int64_t s) const {
    return channels_last ? ((k * R + r) * S + s) * Cg() + c : ((k * Cg() + c) * R + r) * S + s;
  }
};

}  // namespace fastconv
