// The pieces of Winograd F(2x2, 3x3) and F(4x4, 3x3) that the tile-lane paths (tile_lanes.cpp) and the
// image-lane paths (image_lanes.cpp) share: the transforms, the weights transformed into the micro-kernel's
// packed layout, the GEMMs of one block of tiles (one per transform-domain position), and the image-lane
// blocking. See tile_lanes.cpp for the method.
#pragma once

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "conv_params.h"
#include "cpu/bf16_bits.h"
#include "cpu/gemm/driver.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"

constexpr int64_t kMaxPanel = 32;  // the widest micro-kernel panel (mr or nr) of any ISA
#include "cpu/winograd/lane_kernels.h"

namespace fastconv::cpu::winograd {

#include "cpu/winograd/formulas.inc"
#include "cpu/winograd/formulas_f4.inc"

// The two tile sizes as the code below sees them: output tile edge, input tile edge, transform-domain positions
// (GEMMs per block), and the weight and weight-gradient transforms.
struct F2x2 {
  static constexpr int kOut = 2, kTile = winograd::kTile, kXi = winograd::kXi;
  template <int L, typename T>
  static void weights(const T (&g)[9][L], T (&u)[kXi][L]) { transform_weights(g, u); }
  template <typename T>
  static void weight_grad(const T (&m)[kXi], T* g, int64_t tap_stride) { transform_weight_grad(m, g, tap_stride); }
};
struct F4x4 {
  static constexpr int kOut = f4::kOut, kTile = f4::kTile, kXi = f4::kXi;
  template <int L, typename T>
  static void weights(const T (&g)[9][L], T (&u)[kXi][L]) { f4::transform_weights(g, u); }
  template <typename T>
  static void weight_grad(const T (&m)[kXi], T* g, int64_t tap_stride) { f4::transform_weight_grad(m, g, tap_stride); }
};

// Weight (k, c)'s first tap and the distance between taps, in p's layout (K x C x 3 x 3 or K x 3 x 3 x C).
inline int64_t weight_at(const ConvParams& p, int64_t k, int64_t c) {
  return p.channels_last ? k * 9 * p.C + c : (k * p.C + c) * 9;
}
inline int64_t tap_stride(const ConvParams& p) { return p.channels_last ? p.C : 1; }

// The 3x3 kernel that maps input channel c to output channel k of p's forward: its tap t = 3 r + s at
// first[t * step]. With `flipped`, w holds the weights of the conv whose grad-input p is (p.C outputs, p.K
// inputs, same layout), read transposed and rotated by 180 degrees - reversing the 9 taps - in place.
template <typename T>
struct KernelTaps {
  const T* first;
  int64_t step;
};
template <typename T>
KernelTaps<T> kernel_taps(const ConvParams& p, const T* w, int64_t k, int64_t c, bool flipped) {
  if (!flipped) return {w + weight_at(p, k, c), tap_stride(p)};
  const int64_t step = p.channels_last ? p.K : 1;
  const int64_t tap0 = p.channels_last ? c * 9 * p.K + k : (c * p.K + k) * 9;
  return {w + tap0 + 8 * step, -step};
}

// Where element (reduction r, index e) lives in the micro-kernel's packed layout of an operand whose other
// index runs over `extent` in panels of `width`, reduction in blocks of kc out of `reduction` (as prepack()).
inline int64_t packed_offset(int64_t r, int64_t e, int64_t extent, int64_t width, int64_t kc, int64_t reduction) {
  const int64_t r0 = r / kc * kc, rlen = std::min(kc, reduction - r0);
  return r0 * round_up(extent, width) + (e / width) * rlen * width + (r - r0) * width + e % width;
}

// The 9 taps of the kernels (k0 + l, c), l < MR, for channels c0 .. c0 + cn, into g[(c - c0) * 9 + t][l] (zeros
// for rows past K). In NCHW a panel's kernels are `lanes` rows of the weight (all the taps of one k; flipped,
// of one c), gathered by the micro-kernel's register transpose: value by value, the gather was most of the
// weight transform's time (18% of the 512-channel layer's forward at batch 64).
template <int MR, typename T>
void gather_kernels(const ConvParams& p, const T* w, bool flipped, int64_t k0, int64_t lanes, int64_t c0, int64_t cn,
                    TransposeFn<T> transpose, T* g) {
  if (!p.channels_last && !flipped) {
    transpose(w + weight_at(p, k0, c0), p.C * 9, lanes, cn * 9, g, MR);
    return;
  }
  if (!p.channels_last) {  // kernel (k, c) is w[c][k], taps reversed
    for (int64_t c = c0; c < c0 + cn; ++c) {
      T taps[9 * MR];
      transpose(w + (c * p.K + k0) * 9, 9, lanes, 9, taps, MR);
      for (int t = 0; t < 9; ++t) std::copy(taps + (8 - t) * MR, taps + (9 - t) * MR, g + ((c - c0) * 9 + t) * MR);
    }
    return;
  }
  for (int64_t c = c0; c < c0 + cn; ++c)
    for (int64_t l = 0; l < MR; ++l) {
      T* out = g + (c - c0) * 9 * MR + l;
      if (l >= lanes) {  // rows past K
        for (int t = 0; t < 9; ++t) out[t * MR] = T(0);
        continue;
      }
      const KernelTaps<T> taps = kernel_taps(p, w, k0 + l, c, flipped);
      for (int t = 0; t < 9; ++t) out[t * MR] = taps.first[t * taps.step];
    }
}

// Panel `panel` of U (kernels k = panel * MR .. + MR, every c) into its place in the packed planes: the MR
// kernels of one c are transformed together (lanes) and each plane gets MR contiguous values.
template <int MR, class F, typename T>
void transform_weight_panel(const ConvParams& p, const T* w, bool flipped, int64_t panel, int64_t kc,
                            TransposeFn<T> transpose, T* packed_u, int64_t u_stride) {
  constexpr int64_t kChunk = 32;  // channels gathered at a time (9 KiB of taps with MR = 8)
  const int64_t k0 = panel * MR, lanes = std::min<int64_t>(MR, p.K - k0);
  T taps[kChunk * 9 * MR];
  for (int64_t c0 = 0; c0 < p.C; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, p.C - c0);
    gather_kernels<MR>(p, w, flipped, k0, lanes, c0, cn, transpose, taps);
    for (int64_t c = c0; c < c0 + cn; ++c) {
      T u[F::kXi][MR];
      F::weights(*reinterpret_cast<const T(*)[9][MR]>(taps + (c - c0) * 9 * MR), u);
      T* dst = packed_u + packed_offset(c, k0, p.K, MR, kc, p.C);
      for (int xi = 0; xi < F::kXi; ++xi) std::copy(u[xi], u[xi] + MR, dst + xi * u_stride);
    }
  }
}

// U[xi] = G g G^T of every kernel (F: F2x2 or F4x4), written straight into the micro-kernel's packed A layout
// (rows k in panels of mr, reduction c in blocks of kc), plane xi at data + xi * stride. The planes are skewed by
// 32 elements (a power-of-two distance would put a tile's values in one L1 set); rows past K are zeros, the skew
// gaps are never read.
template <typename T>
struct TransformedWeights {
  std::unique_ptr<T[]> data;
  int64_t stride;
};

template <class F = F2x2, typename T>
TransformedWeights<T> transformed_weights(const ConvParams& p, const MicroKernel<T>& uk, const T* w, bool flipped) {
  const int64_t stride = round_up(p.K, uk.mr) * p.C + 32;
  TransformedWeights<T> u{fresh_array<T>(F::kXi * stride), stride};
  parallel_for(0, ceil_div(p.K, uk.mr), 1, [&](int64_t panel0, int64_t panel1) {
    for (int64_t panel = panel0; panel < panel1; ++panel)
      switch (uk.mr) {  // the panel width as a constant: vector transforms and stores
        case 4: transform_weight_panel<4, F>(p, w, flipped, panel, uk.kc, uk.transpose_panel, u.data.get(), stride);
          break;
        case 6: transform_weight_panel<6, F>(p, w, flipped, panel, uk.kc, uk.transpose_panel, u.data.get(), stride);
          break;
        case 8: transform_weight_panel<8, F>(p, w, flipped, panel, uk.kc, uk.transpose_panel, u.data.get(), stride);
          break;
        default: throw std::logic_error("fastconv: no Winograd weight transform for mr = " + std::to_string(uk.mr));
      }
  });
  return u;
}

// Zeros in columns [count, width) of the F::kXi planes of a packed B operand (the last panel's padding; C rows of
// reduction), so the GEMMs read no stale values there.
template <class F = F2x2, typename T>
void zero_padding_columns(const MicroKernel<T>& uk, T* v, int64_t v_stride, int64_t count, int64_t width, int64_t C) {
  for (int64_t j = count; j < width; ++j)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t at = packed_offset(c, j, width, uk.nr, uk.kc, C);
      for (int xi = 0; xi < F::kXi; ++xi) v[xi * v_stride + at] = T(0);
    }
}

// The F::kXi GEMMs of a block of `count` tiles: M[xi] (K x width) = U[xi] V[xi], V[xi] at v + xi * v_stride in
// packed B layout (`width` columns, a multiple of nr), M[xi] at m + xi * m_stride, row-major.
template <class F = F2x2, typename T>
void block_gemms(const ConvParams& p, const MicroKernel<T>& uk, const TransformedWeights<T>& u, const T* v,
                 int64_t v_stride, int64_t count, int64_t width, T* m, int64_t m_stride, PackBuffers<T>& buf) {
  const int64_t K = p.K, k_rows = round_up(K, uk.mr);
  for (int xi = 0; xi < F::kXi; ++xi) {
    const T* ux = u.data.get() + xi * u.stride;
    const T* vx = v + xi * v_stride;
    gemm_block(
        uk, 0, K, 0, count, p.C,
        [&](T*, int64_t k0, int64_t klen, int64_t m0, int64_t) { return ux + k0 * k_rows + (m0 / uk.mr) * klen * uk.mr; },
        [&](T*, int64_t k0, int64_t, int64_t, int64_t) { return vx + k0 * width; },
        m + xi * m_stride, OutputMap{width, width, 0}, false, buf);
  }
}

// The image-lane paths' blocks (image_lanes.cpp, forward and weight gradient): a group of
// kLanes images times a rectangle of about `positions` tile positions - whole tile rows, or a part of one on
// wide maps - whose tiles give positions x images GEMM columns (or reduction rows), ordered (position, image).
// Tiles have out x out outputs (2 or 4) and read (out + 2) x (out + 2) inputs.
struct LaneBlocking {
  int64_t out, TH, TW, band_rows, col_chunks, band_cols, blocks_per_group, groups;
  LaneBlocking(const ConvParams& p, int64_t positions, int64_t out_edge = 2)
      : out(out_edge), TH(ceil_div(p.P, out)), TW(ceil_div(p.Q, out)), band_rows(TW >= positions ? 1 : positions / TW),
        col_chunks(TW >= positions ? ceil_div(TW, positions) : 1), band_cols(ceil_div(TW, col_chunks)),
        blocks_per_group(ceil_div(TH, band_rows) * col_chunks), groups(ceil_div(p.N, int64_t{kLanes})) {}
  int64_t blocks() const { return groups * blocks_per_group; }
  int64_t max_positions() const { return band_rows * band_cols; }
  // A block reads input rows out th0 - pad_h .. out th1 + 1 - pad_h (and the same of columns), clamped to the
  // image by block(); a band that spans every tile column then spans every input column it reads.
  int64_t max_inputs() const { return (out * band_rows + 2) * (out * band_cols + 2); }
  int64_t max_outputs() const { return out * out * band_rows * band_cols; }

  // Block b, with the input rows and columns its tiles read inside the image.
  LaneBlock block(const ConvParams& p, int64_t b) const {
    const int64_t group = b / blocks_per_group, band = b % blocks_per_group / col_chunks, chunk = b % col_chunks;
    LaneBlock blk{group * kLanes, band * band_rows, std::min(TH, (band + 1) * band_rows), chunk * band_cols,
                  std::min(TW, (chunk + 1) * band_cols), std::min<int64_t>(kLanes, p.N - group * kLanes),
                  p.pad_h, p.pad_w, 0, 0, 0, 0, p.P, p.Q};
    blk.h_lo = std::max<int64_t>(0, out * blk.th0 - p.pad_h), blk.h_hi = std::min(p.H, out * blk.th1 + 2 - p.pad_h);
    blk.w_lo = std::max<int64_t>(0, out * blk.tw0 - p.pad_w), blk.w_hi = std::min(p.W, out * blk.tw1 + 2 - p.pad_w);
    return blk;
  }
};

// dst[((r - r_lo) * (c_hi - c_lo) + c - c_lo) * kLanes + l] = plane[l * image_stride + r * row + c] over rows
// [r_lo, r_hi) and columns [c_lo, c_hi) of `lanes` images (zeros for the lanes past them): one channel's region
// of a group's images, each position one vector over the images. The same region `next` further on (the next
// channel's) is prefetched: the reads hop between `lanes` images, which no hardware prefetcher follows, and
// waiting on them took a quarter of the weight gradient's time.
// In: float, or bfloat16 bits (uint16_t), widened run by run into a small buffer as they are read: bfloat16
// tensors are transformed in place, with no float copy of the whole tensor (the binding's copy and the rounding
// of the float output cost ~15% of the fast CIFAR net's bfloat16 training step, page faults and all).
template <typename In>
void transpose_region(const MicroKernel<float>& uk, const In* plane, int64_t image_stride, int64_t row,
                      int64_t lanes, int64_t r_lo, int64_t r_hi, int64_t c_lo, int64_t c_hi, float* dst,
                      int64_t next) {
  if (r_lo >= r_hi || c_lo >= c_hi) return;
  const int64_t cols = c_hi - c_lo;
  // Runs of `run` values, `runs` of them, each transposed from `lanes` images at once.
  const bool whole_rows = cols == row;
  const int64_t run = whole_rows ? (r_hi - r_lo) * row : cols, runs = whole_rows ? 1 : r_hi - r_lo;
  for (int64_t i = 0; i < runs; ++i) {
    const int64_t r = whole_rows ? r_lo : r_lo + i;
    const In* first = plane + r * row + c_lo;
    float* out = dst + i * cols * kLanes;
    if constexpr (std::is_same_v<In, float>) {
      uk.transpose_panel(first, image_stride, lanes, run, out, kLanes);
    } else {
      thread_local AlignedBuffer<float> wide;
      wide.reserve(kLanes * run);
      for (int64_t l = 0; l < lanes; ++l) widen_run(first + l * image_stride, run, wide.data() + l * run);
      uk.transpose_panel(wide.data(), run, lanes, run, out, kLanes);
    }
  }
  if (next == 0) return;
  for (int64_t l = 0; l < lanes; ++l)
    for (int64_t r = r_lo; r < r_hi; ++r) {
      const char* first = reinterpret_cast<const char*>(plane + next + l * image_stride + r * row + c_lo);
      for (int64_t b = 0; b < cols * int64_t{sizeof(In)}; b += 64) __builtin_prefetch(first + b);
      __builtin_prefetch(first + cols * sizeof(In) - 1);
    }
}

// The NHWC counterpart of transpose_region for channels c0 .. c0 + cn (cn <= kLanes) at once: channel c0 + i's
// region into dst + i * region_stride, laid out as transpose_region lays out one NCHW channel's. `pixels` is the
// group's first image at channel c0 (x + n0 * image_stride + c0); a pixel's channels are contiguous, so each
// position is one lanes x cn register transpose (images x channels), spread over the cn regions. In: as above
// (bfloat16: the lane kernels' bf16_pixels_to_lanes, which widens as it transposes).
template <typename In>
void transpose_region_nhwc(const MicroKernel<float>& uk, const LaneKernels& kernels, const In* pixels,
                           int64_t image_stride, int64_t row, int64_t pixel, int64_t lanes, int64_t r_lo, int64_t r_hi,
                           int64_t c_lo, int64_t c_hi, int64_t cn, float* dst, int64_t region_stride) {
  alignas(64) float lane_vectors[kLanes * kLanes];  // [channel][lane]
  const int64_t cols = c_hi - c_lo;
  for (int64_t r = r_lo; r < r_hi; ++r)
    for (int64_t c = c_lo; c < c_hi; ++c) {
      const In* first = pixels + r * row + c * pixel;
      float* at = dst + ((r - r_lo) * cols + c - c_lo) * kLanes;
      if constexpr (std::is_same_v<In, float>) {
        uk.transpose_panel(first, image_stride, lanes, cn, lane_vectors, kLanes);
        for (int64_t i = 0; i < cn; ++i)
          std::memcpy(at + i * region_stride, lane_vectors + i * kLanes, sizeof(float) * kLanes);
      } else {
        kernels.bf16_pixels_to_lanes(first, image_stride, lanes, cn, at, region_stride);
      }
    }
}

}  // namespace fastconv::cpu::winograd
