// Winograd F(2x2, 3x3) (and F(4x4, 3x3) in the image lanes) for stride-1, 3x3, ungrouped float convs, NCHW and
// NHWC: the forward (and so the stride-1 grad-input, a forward of the flipped problem) and the weight gradient, in
// two lane strategies that select.cpp chooses between: tiles (tile_lanes.cpp) or images (image_lanes.cpp).
#pragma once
#include <cstdint>

#include "conv_params.h"

namespace fastconv::cpu {

// Each returns whether every value it wrote is finite: a NaN or an infinity in a tile's inputs reaches all of the
// tile's outputs through the transforms (a direct conv keeps it to the outputs that read it), so conv2d.cpp
// computes a result that is not all finite again with the GEMM, as torch would give it.
//
// flipped: w holds the weights of the conv whose grad-input p is (flipped_forward in select.h), read as the
// rotated, transposed kernel without a copy.
template <typename T>
bool winograd_forward_tile_lanes(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, bool flipped);
template <typename T>
bool winograd_grad_weight_tile_lanes(const ConvParams& p, const T* dy, const T* x, T* dw);

// The image lanes also read bfloat16 tensors (raw bits) in place, widened to float as they are transformed, and
// write the forward's output rounded to bfloat16; the weights, bias and products stay float.
bool winograd_forward_image_lanes(const ConvParams& p, const float* x, const float* w, const float* bias, float* y,
                                  bool flipped);
bool winograd_forward_image_lanes(const ConvParams& p, const uint16_t* x, const float* w, const float* bias,
                                  uint16_t* y, bool flipped);
bool winograd_grad_weight_image_lanes(const ConvParams& p, const float* dy, const float* x, float* dw);
bool winograd_grad_weight_image_lanes(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw);
// F(4x4, 3x3) tiles: fewer multiplies, larger rounding errors (formulas_f4.inc).
bool winograd_f4_forward_image_lanes(const ConvParams& p, const float* x, const float* w, const float* bias,
                                     float* y, bool flipped);
bool winograd_f4_forward_image_lanes(const ConvParams& p, const uint16_t* x, const float* w, const float* bias,
                                     uint16_t* y, bool flipped);
bool winograd_f4_grad_weight_image_lanes(const ConvParams& p, const float* dy, const float* x, float* dw);
bool winograd_f4_grad_weight_image_lanes(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw);

}  // namespace fastconv::cpu
