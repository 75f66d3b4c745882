// The conv2d passes as implicit GEMMs (conv_gemm.cpp): any problem, float and double. select.cpp sends here what
// no specialised family takes.
#pragma once
#include <cstdint>

#include "conv_params.h"

namespace fastconv::cpu {

template <typename T> void gemm_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y);
// One GEMM per output pixel over the taps that read inside the input (few_pixels.cpp); groups 1.
template <typename T> void gemm_forward_few_pixels(const ConvParams& p, const T* x, const T* w, const T* bias, T* y);
// The same on NHWC bfloat16 x and w (raw bits), C even, groups 1, as pairs of channels (bfloat16 products); float y.
void gemm_forward_few_pixels_bf16_pairs(const ConvParams& p, const uint16_t* x, const uint16_t* w, const float* bias,
                                        float* y);
// Its weight gradient: per tap, a GEMM over the images and output pixels whose tap reads inside the input.
template <typename T> void gemm_grad_weight_few_pixels(const ConvParams& p, const T* dy, const T* x, T* dw);
// How many (output pixel, tap) pairs read inside the input, of P * Q * R * S.
int64_t taps_inside_count(const ConvParams& p);
// NHWC bfloat16 read as channel pairs: the problem with half the channels, each 32-bit element a pair of adjacent
// channels, which the float packers move and the pair-element kernel (micro.h) multiplies; throws unless NHWC, Cg
// even, x and w 4-byte aligned.
ConvParams channel_pair_problem(const ConvParams& p, const uint16_t* x, const uint16_t* w);
// NHWC, bfloat16 x and w (raw bits), Cg even, a CPU with bfloat16 products (select.cpp: kGemmBf16Pairs); float y.
// (On AVX512-BF16 conv2d.cpp takes pair_rows_forward below instead: this one serves AMX tiles.)
void gemm_forward_bf16_pairs(const ConvParams& p, const uint16_t* x, const uint16_t* w, const float* bias, float* y);
// Strided grad-input (col2im); dx is overwritten.
template <typename T> void gemm_grad_input_col2im(const ConvParams& p, const T* dy, const T* w, T* dx);
// The same with bfloat16 dy and dx (raw bits), float w, groups 1: dy widened as it is packed, dx rounded from float
// sums of each task's images (products as the calling thread's bf16_products() says). With bfloat16 products on
// AVX512-BF16, NHWC and K even: gathered per phase instead (pair_rows_grad_input_strided).
void gemm_grad_input_col2im_bf16(const ConvParams& p, const uint16_t* dy, const float* w, uint16_t* dx);
// pair_rows.cpp, on AVX512-BF16 with bfloat16 products: the pair GEMM with its A rows (NHWC channel pairs) read in
// place, y written in bfloat16 (conv2d.cpp picks it over gemm_forward_bf16_pairs), and the strided grad-input as
// per-phase GEMMs that gather dy's pairs in place (NHWC, groups 1, K even; gemm_grad_input_col2im_bf16 picks it).
void pair_rows_forward(const ConvParams& p, const uint16_t* x, const uint16_t* w, const float* bias, uint16_t* y);
void pair_rows_grad_input_strided(const ConvParams& p, const uint16_t* dy, const float* w, uint16_t* dx);
template <typename T> void gemm_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw);
// NHWC, bfloat16 dy and x (raw bits), read in place and widened as they are packed; float dw (zeroed by caller).
void gemm_grad_weight_bf16_nhwc(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw);

}  // namespace fastconv::cpu
