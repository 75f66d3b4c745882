// Winograd F(2x2, 3x3) forward for NCHW batches with the transforms' lanes over images, not tiles.
//
// The tile-lane path (winograd.cpp) gives each lane a tile of one image, and assembles its 4x4 input from that
// tile's place in the rows: on ResNet's maps a tile row holds 2-16 tiles, and that assembly, value by value,
// took ~25-35% of the 128- and 512-channel layers' forward time (perf), half as much as their GEMMs. Here lane
// l is image n0 + l of a group of kLanes, all at the same tile position: each channel's rows of the group are
// transposed once (the micro-kernel's register transpose), which makes every input position one vector over
// the images, so a tile's 16 inputs are 16 whole vectors (or zeros in the padding). The outputs go back the
// same way. A block is a group of images times a rectangle of tile positions; its GEMM columns are (position,
// image). Each column is the tile the tile-lane path would compute, through the same operations in the same
// order, so the results are bitwise the same as that path's.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "gemm_driver.h"
#include "winograd_transforms.h"

namespace fastconv::cpu::winograd {

namespace {

// One task's buffers, from 64-byte boundaries: a vector of kLanes floats then never straddles two cache lines
// (split, the AVX-512 loads and stores of the lane loops ran the 512-channel layer 5% slower than SSE2 code).
struct Scratch {
  AlignedBuffer<float> v, m, in, out, out_t;
  PackBuffers<float> buf;
};

}  // namespace

LaneKernels lane_kernels(Isa isa) {
  return isa == Isa::kAvx512 ? avx512::lane_kernels() : isa == Isa::kAvx2 ? avx2::lane_kernels()
                                                                          : scalar::lane_kernels();
}

void forward_image_lanes(const ConvParams& p, const float* x, const float* w, const float* bias, float* y,
                         bool flipped) {
  const Isa isa = active_isa();
  const MicroKernel<float> uk = micro_kernel<float>(isa);
  const LaneKernels kernels = lane_kernels(isa);
  const int64_t C = p.C, K = p.K;
  const TransformedWeights<float> u = transformed_weights(p, uk, w, flipped);

  // Blocks of about as many columns as the tile-lane path's (one block's V and M within L2).
  const int64_t target = std::max<int64_t>(uk.nr, std::min<int64_t>(256, round_up(16384 / std::max(C, K), uk.nr)));
  const LaneBlocking blocking(p, std::max<int64_t>(1, target / kLanes));
  const int64_t width_max = round_up(blocking.max_positions() * kLanes, uk.nr);
  const int64_t v_stride = C * width_max + 32, m_stride = K * width_max + 32;  // skewed planes, as in winograd.cpp

  at::parallel_for(0, blocking.blocks(), 1, [&](int64_t b0, int64_t b1) {
    Scratch s;
    s.v.reserve(kXi * v_stride), s.m.reserve(kXi * m_stride), s.in.reserve(blocking.max_inputs() * kLanes);
    s.out.reserve(blocking.max_outputs() * kLanes), s.out_t.reserve(blocking.max_outputs() * kLanes);
    for (int64_t b = b0; b < b1; ++b) {
      const LaneBlock blk = blocking.block(p, b);
      const int64_t n0 = blk.n0;
      const int64_t cols = (blk.th1 - blk.th0) * (blk.tw1 - blk.tw0) * blk.lanes, width = round_up(cols, uk.nr);

      float* const in = s.in.data();
      float* const v = s.v.data();
      for (int64_t c = 0; c < C; ++c) {
        transpose_region(uk, x + (n0 * C + c) * p.HW(), C * p.HW(), p.W, blk.lanes, blk.h_lo, blk.h_hi, blk.w_lo,
                         blk.w_hi, in, c + 1 < C ? p.HW() : 0);
        const int64_t r0 = c / uk.kc * uk.kc, rlen = std::min(uk.kc, C - r0);  // c's k block (packed_offset)
        kernels.input(blk, in, PackedRow{v + r0 * width + (c - r0) * uk.nr, rlen * uk.nr, uk.nr, v_stride});
      }
      zero_padding_columns(uk, v, v_stride, cols, width, C);

      block_gemms(p, uk, u, v, v_stride, cols, width, s.m.data(), m_stride, s.buf);

      // Output transform, plus bias, into out (position-major over the block's outputs), transposed back to
      // each image's rows.
      const int64_t oh0 = 2 * blk.th0, ow0 = 2 * blk.tw0;
      const int64_t out_rows = std::min(p.P, 2 * blk.th1) - oh0, out_cols = std::min(p.Q, 2 * blk.tw1) - ow0;
      const int64_t out_positions = out_rows * out_cols;
      float* const out = s.out.data();
      float* const out_t = s.out_t.data();
      for (int64_t k = 0; k < K; ++k) {
        kernels.output(blk, s.m.data() + k * width, m_stride, bias != nullptr ? bias[k] : 0.0f, out);
        // out_t[l * out_positions + position] = out[position][l], then each image's rows into y.
        uk.transpose_panel(out, kLanes, out_positions, blk.lanes, out_t, out_positions);
        for (int64_t l = 0; l < blk.lanes; ++l) {
          float* dst = y + ((n0 + l) * K + k) * p.PQ() + oh0 * p.Q + ow0;
          const float* row = out_t + l * out_positions;
          if (out_cols == p.Q) {
            std::memcpy(dst, row, out_positions * sizeof(float));
          } else {
            for (int64_t r = 0; r < out_rows; ++r)
              std::memcpy(dst + r * p.Q, row + r * out_cols, out_cols * sizeof(float));
          }
        }
      }
    }
  });
}

}  // namespace fastconv::cpu::winograd
