// Which algorithm runs each pass of a CPU conv2d: decided here and nowhere else (select.cpp reads as a table).
#pragma once
#include "conv_params.h"

namespace fastconv::cpu {

enum class ConvAlgo {
  kNone,                // nothing to sum (an empty output or reduction): the binding fills bias or zeros
  kDepthwise,           // depthwise/: direct loops per channel
  kWinogradTileLanes,   // winograd/tile_lanes.cpp: F(2x2, 3x3), transforms over 16 tiles of the block
  kWinogradImageLanes,  // winograd/image_lanes.cpp: the same, transforms over 16 images at one tile position
  kWinogradF4ImageLanes,  // winograd/image_lanes.cpp: F(4x4, 3x3), transforms over 16 images
  kDirectFewOutputs,    // direct/: forward with few output channels, rows summed straight from padded input rows
  kDirectFewTaps,       // direct/: weight gradient with few taps, dy times shifted input in vector lanes
  kGemm,                // gemm/conv_gemm.cpp: implicit GEMM, im2col fused into the packing
  kGemmFewPixels,       // gemm/few_pixels.cpp: one GEMM per output pixel over the taps inside the input
  kGemmCol2im,          // gemm/conv_gemm.cpp: strided grad-input, GEMM into columns scattered back (col2im)
  kGemmBf16Pairs,       // gemm/conv_gemm.cpp: NHWC bfloat16 read as pairs of channels, bfloat16 products
};
const char* algo_name(ConvAlgo algo);

// Stride-1 grad-input is the forward conv of dy with the weights rotated by 180 degrees and k <-> c swapped
// (padding dil * (R - 1) - pad, possibly negative): this is that forward problem.
ConvParams flipped_forward(const ConvParams& p);

// How the kernels multiply: float32, float64 (GEMM and depthwise only), or bfloat16 operands in bfloat16
// with float accumulators (isa.h: bf16_products; GEMM only: everything else multiplies them in float32).
enum class Arithmetic { kFloat, kDouble, kBf16Products };

ConvAlgo choose_forward(const ConvParams& p, Arithmetic arithmetic);
// as_flipped_forward: run `algo` as the forward of flipped_forward(p).
struct GradInputChoice {
  ConvAlgo algo;
  bool as_flipped_forward;
};
GradInputChoice choose_grad_input(const ConvParams& p, Arithmetic arithmetic);
ConvAlgo choose_grad_weight(const ConvParams& p, Arithmetic arithmetic);

}  // namespace fastconv::cpu
