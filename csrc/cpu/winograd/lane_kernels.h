// The inner loops of the image-lane Winograd paths (image_lanes.cpp, forward and weight gradient, in F(2x2, 3x3)
// and F(4x4, 3x3)): the transforms of one channel over a block. Compiled once per ISA
// (lane_kernels_<isa>.cpp includes lane_kernels.inc) and chosen at run time, as the GEMM micro-kernels are;
// with the lanes as wide as the vectors, AVX-512 ran the 256-channel layer's forward 1.16x faster than
// baseline SSE2 code.
#pragma once
#include <cstdint>

#include "cpu/bf16_bits.h"  // (before the ISA files' target pragmas: baseline code, shared)
#include "cpu/isa.h"

namespace fastconv::cpu::winograd {

constexpr int kLanes = 16;  // tiles (or images) transformed together: the transforms' lanes

// A block of the image-lane paths: tile rows [th0, th1) x tile columns [tw0, tw1) of images n0 .. n0 + lanes. Its
// inputs lie transposed in `in`: in[((h - h_lo) * (w_hi - w_lo) + w - w_lo) * kLanes + l] = x[n0 + l, c, h, w]
// for the rows [h_lo, h_hi) and columns [w_lo, w_hi) the tiles read inside the image. Its GEMM columns are
// (position, image): column ((th - th0) * (tw1 - tw0) + tw - tw0) * lanes + l.
struct LaneBlock {
  int64_t n0, th0, th1, tw0, tw1, lanes;
  int64_t pad_h, pad_w, h_lo, h_hi, w_lo, w_hi;
  int64_t P, Q;  // output size: tiles at the bottom/right edge may be half outside
};

// One reduction row of a packed B operand (panels of nr columns): column j at base + (j / nr) * panel_stride +
// j % nr, in plane xi at + xi * plane_stride.
struct PackedRow {
  float* base;
  int64_t panel_stride, nr, plane_stride;
};

// The kernels for tiles of m x m outputs (m = 2: F(2x2, 3x3); m = 4: F(4x4, 3x3)), xi over the tile's
// (m + 2)^2 transform-domain positions.
struct LaneKernels {
  // V[xi] of every tile of the block for one channel, from its transposed input, into that channel's row.
  void (*input)(const LaneBlock& b, const float* in, const PackedRow& row);
  // The outputs of every tile of the block for one output channel, plus bias, from its row of M (m: plane 0 at
  // column 0, planes m_stride apart) into out[((oh - m th0) * out_cols + ow - m tw0) * kLanes + l], out_cols =
  // min(Q, m tw1) - m tw0. Returns whether they are all finite (see conv2d.cpp: Winograd spreads a NaN or an
  // infinity over its whole tile, so a result that is not all finite is computed again by the GEMM).
  bool (*output)(const LaneBlock& b, const float* m, int64_t m_stride, float bias, float* out);
  // The weight gradient's transforms of tile (th, tw) into out[xi][kLanes]: of the block's input (as `input`), and
  // of its m x m tile of dy, from dyt[((oh - m th0) * out_cols + ow - m tw0) * kLanes + l] = dy[n0 + l, k, oh, ow]
  // (zeros past the output's edge).
  void (*input_tile)(const LaneBlock& b, const float* in, int64_t th, int64_t tw, float* out);
  void (*grad_output_tile)(const LaneBlock& b, const float* dyt, int64_t th, int64_t tw, float* out);
  // The NHWC transposes of bfloat16 tensors, one pixel position of a lane group at a time, widening or rounding
  // (bf16_bits.h's rules) as they move the values. Into lanes: dst[i * dst_stride + l] = src[l * image_stride + i]
  // widened, for channels i < cn <= kLanes and lanes l < lanes, zeros in lanes [lanes, kLanes). Out of lanes:
  // dst[l * image_stride + i] = src[i * src_stride + l] rounded to bfloat16, for i < kn <= kLanes, l < lanes.
  void (*bf16_pixels_to_lanes)(const uint16_t* src, int64_t image_stride, int64_t lanes, int64_t cn, float* dst,
                               int64_t dst_stride);
  void (*lanes_to_bf16_pixels)(const float* src, int64_t src_stride, int64_t lanes, int64_t kn, uint16_t* dst,
                               int64_t image_stride);
};

// Out: the output tile edge m (2 or 4); lane_kernels<Out>(isa) picks the ISA's set (image_lanes.cpp).
template <int Out> LaneKernels lane_kernels(Isa isa);
namespace scalar { template <int Out> LaneKernels lane_kernels(); }
namespace avx2 { template <int Out> LaneKernels lane_kernels(); }
namespace avx512 { template <int Out> LaneKernels lane_kernels(); }

}  // namespace fastconv::cpu::winograd
