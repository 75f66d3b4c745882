// One max_pool2d problem and its window math, shared by CPU and CUDA kernels (no torch headers).
#pragma once
#include <cstdint>
#include "conv_params.h"  // FC_HOST_DEVICE

namespace fastconv {

// torch's pooling_output_shape: ceil_mode may add one window, but never one that starts in the trailing padding.
FC_HOST_DEVICE inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride,
                                               int64_t dilation, bool ceil_mode) {
  const int64_t span = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (span >= 0 ? span / stride : -ceil_div(-span, stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

struct PoolParams {
  int64_t N, C, H, W;  // input
  int64_t P, Q;        // output
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  bool channels_last;  // NHWC input, output and indices

  FC_HOST_DEVICE int64_t HW() const { return H * W; }
  FC_HOST_DEVICE int64_t PQ() const { return P * Q; }
  // Offset of plane element (h, w) of image n, channel c; indices store h * W + w as torch does.
  FC_HOST_DEVICE int64_t input_offset(int64_t n, int64_t c, int64_t h, int64_t w) const {
    return channels_last ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
  }
  FC_HOST_DEVICE int64_t output_offset(int64_t n, int64_t c, int64_t p, int64_t q) const {
    return channels_last ? ((n * P + p) * Q + q) * C + c : ((n * C + c) * P + p) * Q + q;
  }
};

}  // namespace fastconv
