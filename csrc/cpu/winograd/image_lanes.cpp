// Winograd for batches with the transforms' lanes over images, not tiles: the forward and the weight gradient's
// block transforms, in F(2x2, 3x3) and F(4x4, 3x3), NCHW and NHWC (select.cpp sends batches of 8+ images here).
//
// The tile-lane path (tile_lanes.cpp) gives each lane a tile of one image, and assembles its 4x4 input from that
// tile's place in the rows: on ResNet's maps a tile row holds 2-16 tiles, and that assembly, value by value,
// took ~25-35% of the 128- and 512-channel layers' forward time (perf), half as much as their GEMMs. Here lane
// l is image n0 + l of a group of kLanes, all at the same tile position: each channel's rows of the group are
// transposed once (the micro-kernel's register transpose), which makes every input position one vector over
// the images, so a tile's 16 inputs are 16 whole vectors (or zeros in the padding). The outputs go back the
// same way. A block is a group of images times a rectangle of tile positions; its GEMM columns are (position,
// image). Each column is the tile the tile-lane path would compute, through the same operations in the same
// order, so the F(2x2, 3x3) forward's results are bitwise the same as that path's. F(4x4, 3x3) tiles are 6x6
// inputs for 4x4 outputs (formulas_f4.inc), blocked and stored the same way.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>

#include "cpu/gemm/driver.h"
#include "cpu/parallel.h"
#include "cpu/winograd/common.h"
#include "cpu/winograd/grad_weight.h"
#include "cpu/winograd/winograd.h"

namespace fastconv::cpu {

using namespace winograd;

namespace {

// One task's buffers, from 64-byte boundaries: a vector of kLanes floats then never straddles two cache lines
// (split, the AVX-512 loads and stores of the lane loops ran the 512-channel layer 5% slower than SSE2 code).
struct Scratch {
  AlignedBuffer<float> v, m, in, out, out_t;
  PackBuffers<float> buf;
};

}  // namespace

template <int Out>
LaneKernels winograd::lane_kernels(Isa isa) {
  return pick_for_isa(isa, &scalar::lane_kernels<Out>, &avx2::lane_kernels<Out>, &avx512::lane_kernels<Out>);
}

namespace {

// F: F2x2 or F4x4 (common.h). In / Out: float, or bfloat16 bits (uint16_t) read widened and written rounded
// (bf16_bits.h), the products in float either way. Returns whether every output is finite (winograd.h), checked
// before any rounding.
template <class F, typename In, typename Out>
bool forward_image_lanes(const ConvParams& p, const In* x, const float* w, const float* bias, Out* y,
                         bool flipped) {
  constexpr int64_t e = F::kOut;
  const Isa isa = active_isa();
  const MicroKernel<float> uk = micro_kernel<float>(isa);
  const LaneKernels kernels = lane_kernels<F::kOut>(isa);
  const int64_t C = p.C, K = p.K;
  const TransformedWeights<float> u = transformed_weights<F>(p, uk, w, flipped);

  // Blocks of about as many columns as the tile-lane path's (one block's V and M within L2), fewer for the
  // larger tiles, whose columns each carry 36 planes, not 16.
  const int64_t columns = 16384 * 16 / F::kXi / std::max(C, K);
  const int64_t target = std::max<int64_t>(uk.nr, std::min<int64_t>(256, round_up(columns, uk.nr)));
  const LaneBlocking blocking(p, std::max<int64_t>(1, target / kLanes), e);
  const int64_t width_max = round_up(blocking.max_positions() * kLanes, uk.nr);
  const int64_t v_stride = C * width_max + 32, m_stride = K * width_max + 32;  // skewed planes, as in tile_lanes.cpp

  // NHWC: kLanes channels' regions at a time (a pixel's channels are contiguous), each then as an NCHW channel's.
  const int64_t channels_at_once = p.channels_last ? kLanes : 1;
  const int64_t in_region = blocking.max_inputs() * kLanes, out_region = blocking.max_outputs() * kLanes;
  std::atomic<bool> all_finite{true};
  parallel_for(0, blocking.blocks(), 1, [&](int64_t b0, int64_t b1) {
    bool finite = true;
    Scratch s;
    s.v.reserve(F::kXi * v_stride), s.m.reserve(F::kXi * m_stride), s.in.reserve(channels_at_once * in_region);
    s.out.reserve(channels_at_once * out_region), s.out_t.reserve(out_region);
    for (int64_t b = b0; b < b1; ++b) {
      const LaneBlock blk = blocking.block(p, b);
      const int64_t n0 = blk.n0;
      const int64_t cols = (blk.th1 - blk.th0) * (blk.tw1 - blk.tw0) * blk.lanes, width = round_up(cols, uk.nr);

      float* const in = s.in.data();
      float* const v = s.v.data();
      for (int64_t c0 = 0; c0 < C; c0 += channels_at_once) {
        const int64_t cn = std::min(channels_at_once, C - c0);
        if (p.channels_last)
          transpose_region_nhwc(uk, kernels, x + n0 * p.HW() * C + c0, p.HW() * C, p.W * C, C, blk.lanes, blk.h_lo,
                                blk.h_hi, blk.w_lo, blk.w_hi, cn, in, in_region);
        else
          transpose_region(uk, x + (n0 * C + c0) * p.HW(), C * p.HW(), p.W, blk.lanes, blk.h_lo, blk.h_hi, blk.w_lo,
                           blk.w_hi, in, c0 + 1 < C ? p.HW() : 0);
        for (int64_t c = c0; c < c0 + cn; ++c) {
          const int64_t r0 = c / uk.kc * uk.kc, rlen = std::min(uk.kc, C - r0);  // c's k block (packed_offset)
          kernels.input(blk, in + (c - c0) * in_region,
                        PackedRow{v + r0 * width + (c - r0) * uk.nr, rlen * uk.nr, uk.nr, v_stride});
        }
      }
      zero_padding_columns<F>(uk, v, v_stride, cols, width, C);

      block_gemms<F>(p, uk, u, v, v_stride, cols, width, s.m.data(), m_stride, s.buf);

      // Output transform, plus bias, into out (position-major over the block's outputs), transposed back to
      // each image's rows (NHWC: kLanes channels at a time, to each pixel's run of channels).
      const int64_t oh0 = e * blk.th0, ow0 = e * blk.tw0;
      const int64_t out_rows = std::min(p.P, e * blk.th1) - oh0, out_cols = std::min(p.Q, e * blk.tw1) - ow0;
      const int64_t out_positions = out_rows * out_cols;
      float* const out = s.out.data();
      float* const out_t = s.out_t.data();
      if (p.channels_last) {
        for (int64_t k0 = 0; k0 < K; k0 += kLanes) {
          const int64_t kn = std::min<int64_t>(kLanes, K - k0);
          for (int64_t k = k0; k < k0 + kn; ++k)
            finite &= kernels.output(blk, s.m.data() + k * width, m_stride, bias != nullptr ? bias[k] : 0.0f,
                                     out + (k - k0) * out_region);
          alignas(64) float lane_vectors[kLanes * kLanes];  // [lane][channel]
          for (int64_t r = 0; r < out_rows; ++r)
            for (int64_t c = 0; c < out_cols; ++c) {
              Out* const first = y + ((n0 * p.P + oh0 + r) * p.Q + ow0 + c) * K + k0;
              const float* const lanes_at = out + (r * out_cols + c) * kLanes;
              if constexpr (std::is_same_v<Out, float>) {
                uk.transpose_panel(lanes_at, out_region, kn, blk.lanes, lane_vectors, kLanes);
                for (int64_t l = 0; l < blk.lanes; ++l) store_run(lane_vectors + l * kLanes, kn, first + l * p.PQ() * K);
              } else {  // transposed and rounded in one pass
                kernels.lanes_to_bf16_pixels(lanes_at, out_region, blk.lanes, kn, first, p.PQ() * K);
              }
            }
        }
        continue;
      }
      for (int64_t k = 0; k < K; ++k) {
        finite &= kernels.output(blk, s.m.data() + k * width, m_stride, bias != nullptr ? bias[k] : 0.0f, out);
        // out_t[l * out_positions + position] = out[position][l], then each image's rows into y.
        uk.transpose_panel(out, kLanes, out_positions, blk.lanes, out_t, out_positions);
        for (int64_t l = 0; l < blk.lanes; ++l) {
          Out* dst = y + ((n0 + l) * K + k) * p.PQ() + oh0 * p.Q + ow0;
          const float* row = out_t + l * out_positions;
          if (out_cols == p.Q) {
            store_run(row, out_positions, dst);
          } else {
            for (int64_t r = 0; r < out_rows; ++r) store_run(row + r * out_cols, out_cols, dst + r * p.Q);
          }
        }
      }
    }
    if (!finite) all_finite.store(false, std::memory_order_relaxed);
  });
  return all_finite.load();
}

}  // namespace

bool winograd_forward_image_lanes(const ConvParams& p, const float* x, const float* w, const float* bias, float* y,
                                  bool flipped) {
  return forward_image_lanes<F2x2>(p, x, w, bias, y, flipped);
}
bool winograd_forward_image_lanes(const ConvParams& p, const uint16_t* x, const float* w, const float* bias,
                                  uint16_t* y, bool flipped) {
  return forward_image_lanes<F2x2>(p, x, w, bias, y, flipped);
}

bool winograd_f4_forward_image_lanes(const ConvParams& p, const float* x, const float* w, const float* bias,
                                     float* y, bool flipped) {
  return forward_image_lanes<F4x4>(p, x, w, bias, y, flipped);
}
bool winograd_f4_forward_image_lanes(const ConvParams& p, const uint16_t* x, const float* w, const float* bias,
                                     uint16_t* y, bool flipped) {
  return forward_image_lanes<F4x4>(p, x, w, bias, y, flipped);
}

namespace {

// The weight gradient's image-lane strategy (grad_weight.h): block b is LaneBlocking's block b, its reduction rows
// (position, image). It sums the tiles in another order than the tile-lane strategy, so the two differ in
// rounding. F: F2x2 or F4x4; In: float, or bfloat16 bits read widened.
template <class F, typename In>
class ImageLaneBlocks {
 public:
  struct State {
    LaneBlock blk;
  };
  ImageLaneBlocks(const ConvParams& p, const MicroKernel<float>& uk, const In* dy, const In* x, int64_t block)
      : p_(p), uk_(uk), dy_(dy), x_(x), blocking_(p, std::max<int64_t>(1, block / kLanes), F::kOut),
        kernels_(lane_kernels<F::kOut>(uk.isa)) {}
  int64_t blocks() const { return blocking_.blocks(); }
  int64_t begin_block(int64_t b, State& s) const {
    s.blk = blocking_.block(p_, b);
    return (s.blk.th1 - s.blk.th0) * (s.blk.tw1 - s.blk.tw0) * s.blk.lanes;
  }
  void transform_grad_output(const State& s, int64_t panel0, int64_t panel1, const PackedPlanes<float>& e) const {
    transform_panels(s.blk, panel0, panel1, e, false);
  }
  void transform_input(const State& s, int64_t panel0, int64_t panel1, const PackedPlanes<float>& v) const {
    transform_panels(s.blk, panel0, panel1, v, true);
  }

 private:
  // Each channel of a panel has its region of the group's images transposed (each position one vector over the
  // images); then position by position, the panel's tiles and their `lanes` reduction rows are stored. A
  // panel's regions at a time keep the buffer small (L1 to L2 sized; the whole block's would be MiBs).
  void transform_panels(const LaneBlock& blk, int64_t panel0, int64_t panel1, const PackedPlanes<float>& out,
                        bool of_input) const {
    const ConvParams& p = p_;
    const int64_t region_size = std::max(blocking_.max_inputs(), blocking_.max_outputs()) * kLanes;
    thread_local AlignedBuffer<float> regions;
    regions.reserve(kMaxPanel * region_size);
    constexpr int64_t m = F::kOut;
    alignas(64) float lane_tiles[kMaxPanel][F::kXi][kLanes];
    for (int64_t panel = panel0; panel < panel1; ++panel) {
      const int64_t first = panel * out.width, count = std::min(out.width, out.extent - first);
      const int64_t channels_at_once = p.channels_last ? kLanes : 1;  // NHWC: as in the forward
      for (int64_t i = 0; i < count; i += channels_at_once) {
        float* const region = regions.data() + i * region_size;
        const int64_t cn = std::min(channels_at_once, count - i);
        if (p.channels_last && of_input)
          transpose_region_nhwc(uk_, kernels_, x_ + blk.n0 * p.HW() * p.C + first + i, p.HW() * p.C, p.W * p.C,
                                p.C, blk.lanes, blk.h_lo, blk.h_hi, blk.w_lo, blk.w_hi, cn, region, region_size);
        else if (p.channels_last)
          transpose_region_nhwc(uk_, kernels_, dy_ + blk.n0 * p.PQ() * p.K + first + i, p.PQ() * p.K, p.Q * p.K,
                                p.K, blk.lanes, m * blk.th0, std::min(p.P, m * blk.th1), m * blk.tw0,
                                std::min(p.Q, m * blk.tw1), cn, region, region_size);
        else if (of_input)
          transpose_region(uk_, x_ + (blk.n0 * p.C + first + i) * p.HW(), p.C * p.HW(), p.W, blk.lanes, blk.h_lo,
                           blk.h_hi, blk.w_lo, blk.w_hi, region, first + i + 1 < out.extent ? p.HW() : 0);
        else
          transpose_region(uk_, dy_ + (blk.n0 * p.K + first + i) * p.PQ(), p.K * p.PQ(), p.Q, blk.lanes, m * blk.th0,
                           std::min(p.P, m * blk.th1), m * blk.tw0, std::min(p.Q, m * blk.tw1), region,
                           first + i + 1 < out.extent ? p.PQ() : 0);
      }
      for (int64_t th = blk.th0, pos = 0; th < blk.th1; ++th)
        for (int64_t tw = blk.tw0; tw < blk.tw1; ++tw, ++pos) {
          for (int64_t i = 0; i < count; ++i) {
            const float* region = regions.data() + i * region_size;
            (of_input ? kernels_.input_tile : kernels_.grad_output_tile)(blk, region, th, tw, &lane_tiles[i][0][0]);
          }
          out.store(lane_tiles, pos * blk.lanes, blk.lanes, first, count);
        }
    }
  }

  const ConvParams& p_;
  const MicroKernel<float>& uk_;
  const In* dy_;
  const In* x_;
  LaneBlocking blocking_;
  LaneKernels kernels_;
};

}  // namespace

namespace {

template <class F, typename In>
bool grad_weight_image_lanes(const ConvParams& p, const In* dy, const In* x, float* dw) {
  const MicroKernel<float> uk = micro_kernel<float>(active_isa());
  return grad_weight_blocks<F>(p, uk, ImageLaneBlocks<F, In>(p, uk, dy, x, uk.kc), dw);
}

}  // namespace

bool winograd_grad_weight_image_lanes(const ConvParams& p, const float* dy, const float* x, float* dw) {
  return grad_weight_image_lanes<F2x2>(p, dy, x, dw);
}
bool winograd_grad_weight_image_lanes(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw) {
  return grad_weight_image_lanes<F2x2>(p, dy, x, dw);
}

bool winograd_f4_grad_weight_image_lanes(const ConvParams& p, const float* dy, const float* x, float* dw) {
  return grad_weight_image_lanes<F4x4>(p, dy, x, dw);
}
bool winograd_f4_grad_weight_image_lanes(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw) {
  return grad_weight_image_lanes<F4x4>(p, dy, x, dw);
}

}  // namespace fastconv::cpu
