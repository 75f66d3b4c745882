// Direct (GEMM-free) conv2d kernels for thin float convs, where a GEMM's register tile would stay mostly empty and
// its im2col packing would cost more than the multiplies:
// - forward with few output channels (K <= kFewOutputsMax) or an image input (C <= 4): the first layer's
//   grad-input (3 channels out of 64) and forward, LeNet's layers. NCHW: each output row accumulates straight from
//   padded copies of the input rows, vectorised along the row. channels_last image inputs to over
//   kFewOutputsMax channels, and channels_last problems of a vector or more of output channels: each output
//   pixel's channels in vector registers, in place (image_rows_nhwc).
// - weight gradient with few taps (C * R * S <= kFewTapsMax): the first layer's, LeNet's. dy times the
//   shifted input, summed in vector lanes: for stride 1 over whole planes (each image's input copied once per
//   column shift s, so every tap is one contiguous run), else row by row from padded input rows. channels_last
//   image inputs to over kFewOutputsMax channels, and channels_last problems of over half a vector to
//   kFewOutputsMax output channels: dy read in place, a few rows at a time, each pixel's vectors of channels
//   times each tap's value (image_grad_weight_nhwc).
// The NCHW kernels need column stride 1 (a tap of a row is one contiguous run). Other thin channels_last problems
// go through NCHW copies (the copies cost far less than the NHWC GEMM loses on them). The inner loops are compiled
// once per ISA (rows_<isa>.cpp) and chosen at run time, as the GEMM micro-kernels are.
#pragma once
#include <cstdint>

#include "conv_params.h"
#include "cpu/bf16_bits.h"  // (before the ISA files' target pragmas: baseline code, shared)
#include "cpu/isa.h"

namespace fastconv::cpu {

constexpr int64_t kFewOutputsMax = 16;
constexpr int64_t kFewTapsMax = 160;
constexpr int64_t kFewTapsMaxS = 5;  // kernel width: S accumulators per output channel in registers

// Input rows first_row .. of every channel of one image, each padded_row_width(p) long with the left padding
// in front and zeros after the row; channel c's rows start at data + c * channel_stride. Rows outside the
// image (first_row may be negative) are zeros.
struct PaddedRows {
  const float* data;
  int64_t channel_stride, first_row;
};

// Output rows op0 .. op1 of image n, all K channels, from the padded rows they read.
// wp: weights as wp[((c * R + r) * S + s) * K + k]. bias may be null.
using FewOutputsRows = void (*)(const ConvParams& p, const PaddedRows& in, const float* wp, const float* bias, float* y,
                            int64_t n, int64_t op0, int64_t op1);

// The weight gradient of output channels k0 .. k0 + DirectKernels::wgrad_channels (those < K), every tap, over
// `images` images: x holds their input rows padded as for the forward ([n][c][h], x_row apart), dy their rows
// ([n][k][p], dy_row apart, zeros from Q up to dy_row, a multiple of 16). Lane sums accumulate into `sums`
// (double, wgrad_sums(p) entries per channel group) over calls; the finish call turns them into dW.
using FewTapsGradWeight = void (*)(const ConvParams& p, const float* x, int64_t x_row, const float* dy, int64_t dy_row,
                                  int64_t k0, int64_t images, double* sums);
// Stride 1: the same sums from shifted planes, over images n0 .. n1 of a slice. planes holds, per image and
// input channel, S planes of shifted_plane_size(p) floats: plane s holds rows in_row(0, 0) .. in_row(P - 1,
// R - 1) of the input, Q columns each, column q holding input column in_col(q, s) (zeros outside the image),
// then zeros. dy: the slice's NCHW dy, one plane of P * Q pixels every dy_plane floats; when P * Q is not a
// whole number of vectors of every ISA (16 floats), dy_plane is rounded up to one and zeros fill the gap.
using FewTapsGradWeightPlanes = void (*)(const ConvParams& p, const float* planes, const float* dy, int64_t dy_plane,
                                        int64_t k0, int64_t n0, int64_t n1, double* sums);
using FewTapsGradWeightFinish = void (*)(const ConvParams& p, const double* sums, int64_t k0, float* dw);
// channels_last forward read in place (nhwc_forward_in_place: image inputs, any K; any C to a vector or more of up
// to kFewOutputsMax channels): output row op of image n, every pixel's K channels (contiguous in y) in vector
// registers, from wt[(r * S + s) * C + c][k] (rows kpad floats apart, kpad a multiple of 64 bytes, zeros past K)
// and bias[k] (kpad floats, zeros when the conv has none). T: float, or bfloat16 bits (x widened, y rounded once
// from float sums). rows: scratch of image_rows_floats(p) floats.
template <typename T>
using ImageRowsNhwc = void (*)(const ConvParams& p, const T* x, const float* wt, int64_t kpad, const float* bias,
                               T* y, int64_t n, int64_t op, float* rows);
// channels_last weight gradient read in place (nhwc_grad_weight_in_place): for output rows row0 .. row1 (flat
// over images and rows: n * P + op), sums of dy times each tap's input over their pixels, added to
// sums[tap * image_grad_kpad(p) + k] (double; tap = (r * S + s) * C + c). scratch: image_grad_scratch_floats(p).
template <typename T>
using ImageGradWeightNhwc = void (*)(const ConvParams& p, const T* dy, const T* x, int64_t row0, int64_t row1,
                                     float* scratch, double* sums);
// The image kernels' copy of an output row's R input rows, as float and zero-padded: input columns -pad_w .. the
// last any tap of the row reaches, C channels each.
inline int64_t image_row_columns(const ConvParams& p) { return (p.Q - 1) * p.stride_w + (p.S - 1) * p.dil_w + 1; }
inline int64_t image_rows_floats(const ConvParams& p) { return p.R * image_row_columns(p) * p.C; }
// The weight gradient's sums per tap: K rounded up to whole vectors of every ISA.
inline int64_t image_grad_kpad(const ConvParams& p) { return round_up(p.K, 16); }
// Output rows per block of the in-place weight gradient: ~64 pixels (one row of a wide map), within the map.
inline int64_t image_grad_block_rows(const ConvParams& p) {
  const int64_t rows = p.Q >= 64 ? 1 : 64 / p.Q;
  return rows < p.P ? rows : p.P;
}
// The input rows a block of `block_rows` output rows reads, consecutive from its first.
inline int64_t image_grad_input_rows(const ConvParams& p, int64_t block_rows) {
  return (block_rows - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1;
}
// Its scratch: a block's input rows, their taps gathered per pixel, float partial sums, the last pixel's dy.
inline int64_t image_grad_scratch_floats(const ConvParams& p) {
  const int64_t rows = image_grad_block_rows(p), taps = p.C * p.R * p.S;
  return image_grad_input_rows(p, rows) * image_row_columns(p) * p.C + (rows * p.Q + image_grad_kpad(p)) * taps +
         image_grad_kpad(p) + 16;
}

struct DirectKernels {
  FewOutputsRows forward_rows;
  FewTapsGradWeight grad_weight;
  FewTapsGradWeightPlanes grad_weight_planes;
  FewTapsGradWeightFinish grad_weight_finish;
  ImageRowsNhwc<float> image_rows_nhwc;
  ImageGradWeightNhwc<float> image_grad_weight_nhwc;
  ImageRowsNhwc<uint16_t> image_rows_nhwc_bf16;
  ImageGradWeightNhwc<uint16_t> image_grad_weight_nhwc_bf16;
  int64_t wgrad_channels;  // output channels per grad_weight call (its accumulators fill the registers)
  int64_t lanes;           // floats per vector
  int64_t wgrad_sums(const ConvParams& p) const { return p.C * p.R * p.S * wgrad_channels * lanes; }
};

// Columns of one padded input row: the output row rounded up to whole vectors of every ISA, plus the taps.
inline int64_t few_outputs_columns(const ConvParams& p) { return round_up(p.Q, 32); }
inline int64_t padded_row_width(const ConvParams& p) { return few_outputs_columns(p) + (p.S - 1) * p.dil_w; }
// A shifted plane's rows, then zeros up to a whole number of 16-float vectors past them: a dy plane's last vector
// (rounded up past P * Q) meets tap r at most 15 floats past the rows. Planes stay 64-byte aligned.
inline int64_t shifted_plane_size(const ConvParams& p) { return round_up((p.P + (p.R - 1) * p.dil_h) * p.Q + 15, 16); }

// channels_last image inputs to more than a few channels: the forward and weight gradient read them in place
// (image_rows_nhwc, image_grad_weight_nhwc), where an NCHW copy of their wide y or dy would cost more than the sums.
inline bool nhwc_image_input(const ConvParams& p) { return p.channels_last && p.C <= 4 && p.K > kFewOutputsMax; }
// The weight gradient reads in place those, and channels_last problems of over half a vector to kFewOutputsMax
// output channels too (a vector of dy per pixel times each tap's value): LeNet's 6 -> 16 layer ran 3.5x faster
// than through NCHW copies, 4 -> 12 and 16 -> 8 channels 1.1-1.8x (Zen 4, batch 64). With half a vector or less
// the lanes mostly idle: LeNet's 3 -> 6 layer was 0.8-0.95x the copies with AVX-512, 3 -> 8 even; with AVX2's 8
// lanes 3 -> 6 is even and 3 -> 8 and 6 -> 8 run 1.2x and 1.5x (Zen 3, batch 64, one thread).
inline bool nhwc_grad_weight_in_place(const ConvParams& p, int64_t lanes) {
  return nhwc_image_input(p) || (p.channels_last && 2 * p.K > lanes && p.K <= kFewOutputsMax);
}

// The forward reads in place those, and channels_last problems of a whole vector or more to kFewOutputsMax output
// channels (each pixel's channels in registers, every tap's value broadcast): against NCHW copies of x and y,
// LeNet's 6 -> 16 layer ran 0.66 -> 0.98x torch, 16 -> 16, 32 -> 8 and 64 -> 16 channels (3x3) 0.46-0.61 ->
// 0.69-0.81x; with under a vector (3 -> 6, 16 -> 6, 32 -> 6) the copies stay faster, 1.2-1.5x (Zen 3, AVX2, batch
// 64). AVX-512's 16 lanes take the same rule unmeasured.
inline bool nhwc_forward_in_place(const ConvParams& p, int64_t lanes) {
  return nhwc_image_input(p) || (p.channels_last && p.K >= lanes && p.K <= kFewOutputsMax);
}

void few_outputs_forward(const ConvParams& p, const float* x, const float* w, const float* bias, float* y);
void few_taps_grad_weight(const ConvParams& p, const float* dy, const float* x, float* dw);
// The same for bfloat16 bits read and written in place, channels_last image inputs only (nhwc_image_input): the
// float path's sums, y rounded once; dw float.
void few_outputs_forward_bf16(const ConvParams& p, const uint16_t* x, const float* w, const float* bias, uint16_t* y);
void few_taps_grad_weight_bf16(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw);

DirectKernels direct_kernels(Isa isa);
namespace scalar { DirectKernels direct_kernels(); }
namespace avx2 { DirectKernels direct_kernels(); }
namespace avx512 { DirectKernels direct_kernels(); }

}  // namespace fastconv::cpu
