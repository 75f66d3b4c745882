// CPU conv2d kernels on raw pointers. Layout (NCHW or NHWC, weight K x Cg x R x S or K x R x S x Cg) is
// p.channels_last; tensors are dense in that layout. float and double; the binding widens half and bfloat16.
#pragma once
#include <cstdint>

#include "conv_params.h"
#include "cpu/select.h"

namespace fastconv::cpu {

template <typename T> void conv2d_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y);
template <typename T> void conv2d_grad_input(const ConvParams& p, const T* dy, const T* w, T* dx);
template <typename T> void conv2d_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw);
template <typename T> void conv2d_grad_bias(const ConvParams& p, const T* dy, T* db);

// bfloat16 operands read in place (raw bits, 4-byte aligned) with bfloat16 products, for the problems select.cpp
// sends to kGemmBf16Pairs on a CPU that has them (the *_applies checks); the others take the entry points above
// on float copies. The forward and grad-input write bfloat16 (rounded once from float sums), the weight gradient
// float.
bool conv2d_forward_bf16_applies(const ConvParams& p);
bool conv2d_grad_input_bf16_applies(const ConvParams& p);
bool conv2d_grad_weight_bf16_applies(const ConvParams& p);
void conv2d_forward_bf16(const ConvParams& p, const uint16_t* x, const uint16_t* w, const float* bias, uint16_t* y);
void conv2d_grad_input_bf16(const ConvParams& p, const uint16_t* dy, const uint16_t* w, uint16_t* dx);
void conv2d_grad_weight_bf16(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw);

// bfloat16 tensors on the image-lane Winograd paths (the algorithm select.cpp picks for `arithmetic`): x and dy
// read in place, the forward's and grad-input's outputs written as bfloat16 (rounded once, from float sums);
// weights, bias and the weight gradient float. Each returns whether its result is all finite: when it is not,
// the binding computes it again on float copies (winograd.h says why).
bool conv2d_forward_winograd_bf16_applies(const ConvParams& p, Arithmetic arithmetic);
bool conv2d_grad_input_winograd_bf16_applies(const ConvParams& p, Arithmetic arithmetic);
bool conv2d_grad_weight_winograd_bf16_applies(const ConvParams& p, Arithmetic arithmetic);
bool conv2d_forward_winograd_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* x, const float* w,
                                  const float* bias, uint16_t* y);
bool conv2d_grad_input_winograd_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* dy, const float* w,
                                     uint16_t* dx);
bool conv2d_grad_weight_winograd_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* dy,
                                      const uint16_t* x, float* dw);
// channels_last image inputs (the first layer: 3 channels to over 16) on the direct kernels likewise: the forward
// reads bfloat16 x and writes bfloat16 y, the weight gradient reads bfloat16 dy and x; float w, bias and dw.
bool conv2d_forward_image_bf16_applies(const ConvParams& p, Arithmetic arithmetic);
bool conv2d_grad_weight_image_bf16_applies(const ConvParams& p, Arithmetic arithmetic);
void conv2d_forward_image_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* x, const float* w,
                               const float* bias, uint16_t* y);
void conv2d_grad_weight_image_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* dy, const uint16_t* x,
                                   float* dw);
// The strided grad-input (col2im) likewise, groups 1: bfloat16 dy read in place, bfloat16 dx written; float w.
bool conv2d_grad_input_col2im_bf16_applies(const ConvParams& p, Arithmetic arithmetic);
void conv2d_grad_input_col2im_bf16(const ConvParams& p, Arithmetic arithmetic, const uint16_t* dy, const float* w,
                                   uint16_t* dx);

}  // namespace fastconv::cpu
