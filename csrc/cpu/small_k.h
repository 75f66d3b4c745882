// Direct conv2d forward for few output channels (K <= kSmallKMax), NCHW, float, column stride 1: the first layer's
// grad-input (3 channels out of 64), LeNet's layers. A GEMM would put K on a register tile's rows and leave
// most of it empty, and its im2col packing would cost more than the multiplies; here each output row is
// accumulated straight from padded copies of the input rows, vectorised along the row. The inner loops are
// compiled once per ISA (small_k_<isa>.cpp) and chosen at run time, as the GEMM micro-kernels are.
#pragma once
#include <cstdint>

#include "../conv_params.h"
#include "gemm_micro.h"

namespace fastconv::cpu {

constexpr int64_t kSmallKMax = 16;

// Input rows first_row .. of every channel of one image, each padded_row_width(p) long with the left padding
// in front and zeros after the row; channel c's rows start at data + c * channel_stride.
struct PaddedRows {
  const float* data;
  int64_t channel_stride, first_row;
};

// Output row `op` of image n, all K channels, from the padded rows it reads (rows in the padding are skipped).
// wp: weights as wp[((c * R + r) * S + s) * K + k]. bias may be null.
using SmallKRow = void (*)(const ConvParams& p, const PaddedRows& in, const float* wp, const float* bias, float* y,
                           int64_t n, int64_t op);

// Columns of one padded input row: the output row rounded up to whole vectors of every ISA, plus the taps.
inline int64_t small_k_columns(const ConvParams& p) { return (p.Q + 31) / 32 * 32; }
inline int64_t padded_row_width(const ConvParams& p) { return small_k_columns(p) + (p.S - 1) * p.dil_w; }

bool small_k_applies(const ConvParams& p);
void small_k_forward(const ConvParams& p, const float* x, const float* w, const float* bias, float* y);
SmallKRow small_k_row(Isa isa);

namespace scalar { SmallKRow small_k_row(); }
namespace avx2 { SmallKRow small_k_row(); }
namespace avx512 { SmallKRow small_k_row(); }

}  // namespace fastconv::cpu
