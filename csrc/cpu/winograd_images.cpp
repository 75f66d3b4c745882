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
#include <vector>

#include "gemm_driver.h"
#include "pack.h"
#include "winograd_transforms.h"

namespace fastconv::cpu::winograd {

namespace {

// Tile rows [th0, th1) x tile columns [tw0, tw1) of the images n0 .. n0 + lanes.
struct Block {
  int64_t n0, lanes, th0, th1, tw0, tw1;
  int64_t positions() const { return (th1 - th0) * (tw1 - tw0); }
};

// `lanes` values per (pos, lane) column from `col` on, in reduction row c of a packed B operand whose panels are
// nr wide: one copy per panel the run touches (one for whole groups of 16 when nr is a multiple of 16).
template <typename T>
inline void store_columns(const T (&values)[kXi][kLanes], int64_t lanes, T* v, int64_t v_stride, int64_t c,
                          int64_t col, int64_t width, const MicroKernel<T>& uk, int64_t C) {
  for (int64_t l = 0; l < lanes;) {
    const int64_t run = std::min(lanes - l, uk.nr - (col + l) % uk.nr);
    T* dst = v + packed_offset(c, col + l, width, uk.nr, uk.kc, C);
    if (run == kLanes) {  // a fixed-size copy: vector moves
      for (int xi = 0; xi < kXi; ++xi) std::memcpy(dst + xi * v_stride, values[xi], kLanes * sizeof(T));
    } else {
      for (int xi = 0; xi < kXi; ++xi) std::copy(values[xi] + l, values[xi] + l + run, dst + xi * v_stride);
    }
    l += run;
  }
}

template <typename T>
struct Scratch {
  std::unique_ptr<T[]> v, m, in, out, out_t;
  PackBuffers<T> buf;
};

}  // namespace

template <typename T>
void forward_image_lanes(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, bool flipped) {
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  const int64_t C = p.C, K = p.K, TH = ceil_div(p.P, 2), TW = ceil_div(p.Q, 2);
  const TransformedWeights<T> u = transformed_weights(p, uk, w, flipped);

  // Blocks of about as many columns as the tile-lane path's (one block's V and M within L2): whole tile rows,
  // or a part of one on wide maps.
  const int64_t target = std::max<int64_t>(uk.nr, std::min<int64_t>(256, round_up(16384 / std::max(C, K), uk.nr)));
  const int64_t positions = std::max<int64_t>(1, target / kLanes);
  const int64_t band_rows = TW >= positions ? 1 : positions / TW;
  const int64_t col_chunks = TW >= positions ? ceil_div(TW, positions) : 1, band_cols = ceil_div(TW, col_chunks);
  const int64_t bands = ceil_div(TH, band_rows), blocks_per_group = bands * col_chunks;
  const int64_t groups = ceil_div(p.N, int64_t{kLanes});
  const int64_t width_max = round_up(band_rows * band_cols * kLanes, uk.nr);
  const int64_t v_stride = C * width_max + 32, m_stride = K * width_max + 32;  // skewed planes, as in winograd.cpp
  // A block reads input rows 2 th0 - pad_h .. 2 th1 + 1 - pad_h (and the same of columns); as W <= 2 TW + 2
  // (pads >= 0), a band that spans every tile column spans every input column too.
  const int64_t in_max = (2 * band_rows + 2) * (2 * band_cols + 2), out_max = 4 * band_rows * band_cols;

  at::parallel_for(0, groups * blocks_per_group, 1, [&](int64_t b0, int64_t b1) {
    Scratch<T> s{std::unique_ptr<T[]>(new T[kXi * v_stride]), std::unique_ptr<T[]>(new T[kXi * m_stride]),
                 std::unique_ptr<T[]>(new T[in_max * kLanes]), std::unique_ptr<T[]>(new T[out_max * kLanes]),
                 std::unique_ptr<T[]>(new T[out_max * kLanes]), {}};
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t group = b / blocks_per_group, band = b % blocks_per_group / col_chunks, chunk = b % col_chunks;
      Block blk{group * kLanes, std::min<int64_t>(kLanes, p.N - group * kLanes), band * band_rows,
                std::min(TH, (band + 1) * band_rows), chunk * band_cols, std::min(TW, (chunk + 1) * band_cols)};
      const int64_t cols = blk.positions() * blk.lanes, width = round_up(cols, uk.nr);
      const int64_t lanes = blk.lanes, block_tw = blk.tw1 - blk.tw0;

      // Input rows [h_lo, h_hi) x columns [w_lo, w_hi) of the image: what the block's tiles read inside it.
      const int64_t h_lo = std::max<int64_t>(0, 2 * blk.th0 - p.pad_h), h_hi = std::min(p.H, 2 * blk.th1 + 2 - p.pad_h);
      const int64_t w_lo = std::max<int64_t>(0, 2 * blk.tw0 - p.pad_w), w_hi = std::min(p.W, 2 * blk.tw1 + 2 - p.pad_w);
      const int64_t in_cols = std::max<int64_t>(0, w_hi - w_lo);
      T* const in = s.in.get();
      T* const v = s.v.get();
      for (int64_t c = 0; c < C; ++c) {
        // in[(h - h_lo) * in_cols + w - w_lo][l] = x[n0 + l, c, h, w] (zeros for lanes past the batch).
        const T* src = x + (blk.n0 * C + c) * p.HW();
        if (h_lo < h_hi && in_cols > 0) {
          if (in_cols == p.W)
            uk.transpose_panel(src + h_lo * p.W, C * p.HW(), lanes, (h_hi - h_lo) * p.W, in, kLanes);
          else
            for (int64_t h = h_lo; h < h_hi; ++h)
              uk.transpose_panel(src + h * p.W + w_lo, C * p.HW(), lanes, in_cols,
                                 in + (h - h_lo) * in_cols * kLanes, kLanes);
        }
        for (int64_t th = blk.th0; th < blk.th1; ++th)
          for (int64_t tw = blk.tw0; tw < blk.tw1; ++tw) {
            T d[kTile][kTile][kLanes], vt[kXi][kLanes];
            for (int i = 0; i < kTile; ++i)
              for (int j = 0; j < kTile; ++j) {
                const int64_t h = 2 * th - p.pad_h + i, wc = 2 * tw - p.pad_w + j;
                if (h >= h_lo && h < h_hi && wc >= w_lo && wc < w_hi)
                  std::memcpy(d[i][j], in + ((h - h_lo) * in_cols + wc - w_lo) * kLanes, sizeof d[i][j]);
                else
                  std::memset(d[i][j], 0, sizeof d[i][j]);
              }
            transform_input(d, vt);
            const int64_t col = ((th - blk.th0) * block_tw + tw - blk.tw0) * lanes;
            store_columns(vt, lanes, v, v_stride, c, col, width, uk, C);
          }
      }
      for (int64_t j = cols; j < width; ++j)  // the last panel's padding columns
        for (int64_t c = 0; c < C; ++c) {
          const int64_t at = packed_offset(c, j, width, uk.nr, uk.kc, C);
          for (int xi = 0; xi < kXi; ++xi) v[xi * v_stride + at] = T(0);
        }

      block_gemms(p, uk, u, v, v_stride, cols, width, s.m.get(), m_stride, s.buf);

      // Output transform, plus bias, into out[(oh - oh0) * out_cols + ow - ow0][l] over the block's outputs
      // (tiles at the bottom/right edge may be half outside), then transposed back to each image's rows.
      const int64_t oh0 = 2 * blk.th0, ow0 = 2 * blk.tw0;
      const int64_t out_rows = std::min(p.P, 2 * blk.th1) - oh0, out_cols = std::min(p.Q, 2 * blk.tw1) - ow0;
      const int64_t out_positions = out_rows * out_cols;
      T* const out = s.out.get();
      T* const out_t = s.out_t.get();
      for (int64_t k = 0; k < K; ++k) {
        const T bk = bias != nullptr ? bias[k] : T(0);
        for (int64_t th = blk.th0; th < blk.th1; ++th)
          for (int64_t tw = blk.tw0; tw < blk.tw1; ++tw) {
            T mt[kXi][kLanes], yt[2][2][kLanes];
            const T* src = s.m.get() + k * width + ((th - blk.th0) * block_tw + tw - blk.tw0) * lanes;
            for (int xi = 0; xi < kXi; ++xi) {
              if (lanes == kLanes) {
                std::memcpy(mt[xi], src + xi * m_stride, sizeof mt[xi]);
              } else {
                for (int l = 0; l < kLanes; ++l) mt[xi][l] = l < lanes ? src[xi * m_stride + l] : T(0);
              }
            }
            transform_output(mt, yt);
            for (int i = 0; i < 2 && 2 * th + i < p.P; ++i)
              for (int j = 0; j < 2 && 2 * tw + j < p.Q; ++j) {
                T* o = out + ((2 * th + i - oh0) * out_cols + 2 * tw + j - ow0) * kLanes;
                for (int l = 0; l < kLanes; ++l) o[l] = yt[i][j][l] + bk;
              }
          }
        // out_t[l * out_positions + position] = out[position][l], then each image's rows into y.
        uk.transpose_panel(out, kLanes, out_positions, lanes, out_t, out_positions);
        for (int64_t l = 0; l < lanes; ++l) {
          T* dst = y + ((blk.n0 + l) * K + k) * p.PQ() + oh0 * p.Q + ow0;
          const T* row = out_t + l * out_positions;
          if (out_cols == p.Q) {
            std::memcpy(dst, row, out_positions * sizeof(T));
          } else {
            for (int64_t r = 0; r < out_rows; ++r) std::memcpy(dst + r * p.Q, row + r * out_cols, out_cols * sizeof(T));
          }
        }
      }
    }
  });
}

template void forward_image_lanes<float>(const ConvParams&, const float*, const float*, const float*, float*, bool);

}  // namespace fastconv::cpu::winograd
