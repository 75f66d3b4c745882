// Winograd F(2x2, 3x3) for stride-1 3x3 convs, with the transforms' 16 lanes over tiles of a block: the forward
// and the weight gradient's block transforms. The path for NHWC, and for NCHW batches too small for image lanes
// (select.cpp decides).
//
// Each 2x2 output tile of each (image, k) comes from a 4x4 input tile d of each c:
//   Y = A^T [ sum_c (G g G^T) (.) (B^T d B) ] A
// so the 9 * 4 = 36 multiplies per (tile, c, k) of the direct conv become 16: the element-wise products,
// summed over c, are 16 independent GEMMs (one per position xi of the 4x4 transform domain):
//   M[xi] (K x tiles) = U[xi] (K x C) * V[xi] (C x tiles),  U = G g G^T (weights),  V = B^T d B (input).
// Tiles go in blocks sized so one block's V and M stay in L2: per block the input transform writes V straight
// in the micro-kernel's packed B layout, the 16 GEMMs run, and the output transform writes y. Nothing of
// size im2col (or of the whole transformed input) is ever built. The weight gradient's driver: grad_weight.h;
// the transforms, weights and blocking both strategies share: common.h.
//
// Exactness: the transforms add rounding of their own (G holds 1/2), so results differ from the direct
// conv's in the last bits, as cuDNN's and oneDNN's Winograd do; the order of every sum is fixed by the shape,
// so results stay bitwise the same for any thread count.
#include "cpu/winograd/winograd.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "cpu/gemm/driver.h"
#include "cpu/gemm/im2col.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"
#include "cpu/winograd/common.h"
#include "cpu/winograd/grad_weight.h"

namespace fastconv::cpu {

using namespace winograd;

namespace {


// Output tile (th, tw) of image n covers output rows 2 th, 2 th + 1 and columns 2 tw, 2 tw + 1, and reads
// input rows 2 th - pad_h .. + 3, columns 2 tw - pad_w .. + 3.
struct TileAt {
  int64_t n, th, tw;
};

// Tiles t0 .. t0 + count in (n, th, tw) order, decoded once per block so the inner loops do no divisions.
inline void decode_tiles(int64_t t0, int64_t count, int64_t TH, int64_t TW, std::vector<TileAt>& out) {
  out.resize(count);
  for (int64_t j = 0, n = t0 / (TH * TW), th = (t0 / TW) % TH, tw = t0 % TW; j < count; ++j) {
    out[j] = {n, th, tw};
    if (++tw == TW && (tw = 0, ++th == TH)) th = 0, ++n;
  }
}

// Strides of an activation (images, channels, rows, columns) with `channels` channels of rows x cols, in p's
// layout: the transforms read and write through these, so one code serves NCHW and NHWC.
struct Strides {
  int64_t image, channel, row, col;
  int64_t at(int64_t n, int64_t c, int64_t h, int64_t w) const { return n * image + c * channel + h * row + w * col; }
};
inline Strides strides_of(const ConvParams& p, int64_t channels, int64_t rows, int64_t cols) {
  return p.channels_last ? Strides{rows * cols * channels, 1, cols * channels, channels}
                         : Strides{channels * rows * cols, rows * cols, cols, 1};
}

// Visits (a, j), a < A channels and j < J tiles, with the index along which the tensor is contiguous
// innermost: tiles (along w) for NCHW, channels for NHWC.
template <class F>
inline void for_each_channel_tile(bool channels_last, int64_t A, int64_t J, F&& f) {
  if (channels_last) {
    for (int64_t j = 0; j < J; ++j)
      for (int64_t a = 0; a < A; ++a) f(a, j);
  } else {
    for (int64_t a = 0; a < A; ++a)
      for (int64_t j = 0; j < J; ++j) f(a, j);
  }
}

// Up to kLanes consecutive tiles of a block, starting at its tile j; on small maps a group spans several tile
// rows (and images), read as one segment per tile row.
struct LaneGroup {
  int64_t j, lanes;
};

// The block's tiles as lane groups; a group also ends at a multiple of `align` (a packed panel's edge, so that
// a group's values are contiguous in the panel).
inline void lane_groups(int64_t count, int64_t align, std::vector<LaneGroup>& out) {
  out.clear();
  for (int64_t j = 0; j < count;) {
    const int64_t lanes = std::min({int64_t{kLanes}, count - j, align - j % align});
    out.push_back({j, lanes});
    j += lanes;
  }
}

// A tile row's run of values: up to 34 on large maps, 2-6 on a 4x4 one. GCC turns a plain loop into a memcpy
// or memset call, which costs more than a copy that short (memmove and memset were ~6% of a ResNet-18 training
// step's samples); the empty asm makes the loop opaque to that pattern match: the 4x4 and 8x8 layers' passes
// ran 2-5% faster. Long contiguous runs still go to memcpy: element by element, the 64-channel layer's forward
// at 32x32 measured 0.81x.
template <typename T>
inline void copy_run(T* dst, int64_t dst_step, const T* src, int64_t src_step, int64_t n) {
  if (dst_step == 1 && src_step == 1 && n >= 8) {
    std::memcpy(dst, src, n * sizeof(T));
    return;
  }
  for (int64_t k = 0; k < n; ++k) {
    dst[k * dst_step] = src[k * src_step];
    asm("" : "+r"(k));
  }
}
template <typename T>
inline void zero_run(T* dst, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    dst[k] = T(0);
    asm("" : "+r"(k));
  }
}

// Calls f(l0, len, tile) for each run of lanes [l0, l0 + len) of a group that lies in one tile row.
template <class F>
inline void for_each_row_segment(const TileAt* tiles, int64_t lanes, int64_t TW, F&& f) {
  for (int64_t l0 = 0; l0 < lanes;) {
    const int64_t len = std::min(lanes - l0, TW - tiles[l0].tw);
    f(l0, len, tiles[l0]);
    l0 += len;
  }
}

// The 4x4 input tiles of channel c (zeros in the padding) of a lane group, transformed: v[xi][l] =
// (B^T d B)[xi] of tile l. Neighbouring tiles of a row share two columns, so each input row of a segment is
// read once, as 2 len + 2 values.
template <typename T>
inline void input_tiles(const ConvParams& p, const Strides& xs, const T* x, int64_t c, const TileAt* tiles,
                        const LaneGroup& grp, int64_t TW, T (&v)[kXi][kLanes]) {
  T d[kTile][kTile][kLanes];
  for_each_row_segment(tiles, grp.lanes, TW, [&](int64_t l0, int64_t len, const TileAt& first) {
    const int64_t h0 = 2 * first.th - p.pad_h, w0 = 2 * first.tw - p.pad_w, cols = 2 * len + 2;
    // Columns [lo, hi) of the segment's row are inside the image; the rest is zeros.
    const int64_t lo = std::min(cols, std::max<int64_t>(0, -w0)), hi = std::max(lo, std::min(cols, p.W - w0));
    for (int i = 0; i < kTile; ++i) {
      T row[2 * kLanes + 2];
      const int64_t h = h0 + i;
      const bool inside = static_cast<uint64_t>(h) < static_cast<uint64_t>(p.H);
      const int64_t a = inside ? lo : 0, b = inside ? hi : 0;
      zero_run(row, a);
      if (inside) copy_run(row + a, 1, x + xs.at(first.n, c, h, w0 + a), xs.col, b - a);  // from column lo on
      zero_run(row + b, cols - b);
      for (int j = 0; j < kTile; ++j)
        for (int64_t l = 0; l < len; ++l) d[i][j][l0 + l] = row[2 * l + j];
    }
  });
  for (int i = 0; i < kTile; ++i)
    for (int j = 0; j < kTile; ++j)
      for (int64_t l = grp.lanes; l < kLanes; ++l) d[i][j][l] = T(0);
  transform_input(d, v);
}

// The 2x2 dy tiles of channel k (zeros past the output's edge) of a lane group, transformed:
// v[xi][l] = (A e A^T)[xi] of tile l.
template <typename T>
inline void grad_output_tiles(const ConvParams& p, const Strides& ys, const T* dy, int64_t k, const TileAt* tiles,
                              const LaneGroup& grp, int64_t TW, T (&v)[kXi][kLanes]) {
  T e[2][2][kLanes];
  for_each_row_segment(tiles, grp.lanes, TW, [&](int64_t l0, int64_t len, const TileAt& first) {
    const int64_t oh = 2 * first.th, ow = 2 * first.tw, cols = std::min(2 * len, p.Q - ow);
    for (int i = 0; i < 2; ++i) {
      T row[2 * kLanes];
      const int64_t filled = oh + i < p.P ? cols : 0;
      if (filled > 0) copy_run(row, 1, dy + ys.at(first.n, k, oh + i, ow), ys.col, filled);
      zero_run(row + filled, 2 * len - filled);
      for (int jj = 0; jj < 2; ++jj)
        for (int64_t l = 0; l < len; ++l) e[i][jj][l0 + l] = row[2 * l + jj];
    }
  });
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      for (int64_t l = grp.lanes; l < kLanes; ++l) e[i][j][l] = T(0);
  transform_grad_output(e, v);
}


}  // namespace

template <typename T>
bool winograd_forward_tile_lanes(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, bool flipped) {
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  const int64_t C = p.C, K = p.K, TH = ceil_div(p.P, 2), TW = ceil_div(p.Q, 2), tiles = p.N * TH * TW;

  const TransformedWeights<T> u = transformed_weights(p, uk, w, flipped);

  // Tile blocks: V (16 x C x block) and M (16 x K x block) of one block stay within L2.
  const int64_t block = std::max<int64_t>(uk.nr, std::min<int64_t>(256, round_up(16384 / std::max(C, K), uk.nr)));
  const int64_t blocks = ceil_div(tiles, block);

  const Strides xs = strides_of(p, C, p.H, p.W), ys = strides_of(p, K, p.P, p.Q);
  std::atomic<bool> all_finite{true};
  parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    T probe = T(0);  // v * 0 is NaN exactly when v is not finite (winograd.h)
    PackBuffers<T> buf;
    // The 16 planes of V (and of M) are a power of two apart for common shapes, which would put a tile's 16
    // values in one L1 set; a 32-element skew between planes spreads them.
    const int64_t v_stride = C * block + 32, m_stride = K * block + 32;
    AlignedBuffer<T> v, m;  // every entry used is written
    v.reserve(kXi * v_stride), m.reserve(kXi * m_stride);
    std::vector<TileAt> tile_at;
    std::vector<LaneGroup> groups;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t t0 = b * block, tlen = std::min(block, tiles - t0), width = round_up(tlen, uk.nr);
      decode_tiles(t0, tlen, TH, TW, tile_at);

      // Input transform into V[xi] in packed B layout: reduction c (blocks of kc), panels of nr tiles.
      lane_groups(tlen, uk.nr, groups);
      for_each_channel_tile(p.channels_last, C, static_cast<int64_t>(groups.size()), [&](int64_t c, int64_t gi) {
        const LaneGroup& grp = groups[gi];
        T vt[kXi][kLanes];
        input_tiles(p, xs, x, c, tile_at.data() + grp.j, grp, TW, vt);
        T* dst = v.data() + packed_offset(c, grp.j, width, uk.nr, uk.kc, C);  // the group's tiles follow on
        if (grp.lanes == kLanes) {  // fixed-length copies compile to vector moves
          for (int xi = 0; xi < kXi; ++xi) std::copy(vt[xi], vt[xi] + kLanes, dst + xi * v_stride);
        } else {
          for (int xi = 0; xi < kXi; ++xi)
            for (int64_t l = 0; l < grp.lanes; ++l) dst[xi * v_stride + l] = vt[xi][l];
        }
      });
      zero_padding_columns(uk, v.data(), v_stride, tlen, width, C);

      block_gemms(p, uk, u, v.data(), v_stride, tlen, width, m.data(), m_stride, buf);

      // Output transform, plus bias, into y (tiles at the bottom/right edge may be half outside).
      for_each_channel_tile(p.channels_last, K, static_cast<int64_t>(groups.size()), [&](int64_t k, int64_t gi) {
        const LaneGroup& grp = groups[gi];
        T mt[kXi][kLanes], yt[2][2][kLanes];
        const T* src = m.data() + k * width + grp.j;
        if (grp.lanes == kLanes) {
          for (int xi = 0; xi < kXi; ++xi) std::copy(src + xi * m_stride, src + xi * m_stride + kLanes, mt[xi]);
        } else {
          for (int xi = 0; xi < kXi; ++xi)
            for (int l = 0; l < kLanes; ++l) mt[xi][l] = l < grp.lanes ? src[xi * m_stride + l] : T(0);
        }
        transform_output(mt, yt);
        const T bk = bias != nullptr ? bias[k] : T(0);
        for_each_row_segment(tile_at.data() + grp.j, grp.lanes, TW, [&](int64_t l0, int64_t len, const TileAt& at) {
          const int64_t oh = 2 * at.th, ow = 2 * at.tw, cols = std::min(2 * len, p.Q - ow);
          for (int i = 0; i < 2 && oh + i < p.P; ++i) {
            T row[2 * kLanes];  // the row's outputs, tiles' columns interleaved
            for (int64_t l = 0; l < len; ++l) {
              row[2 * l] = yt[i][0][l0 + l] + bk;
              row[2 * l + 1] = yt[i][1][l0 + l] + bk;
              probe += (row[2 * l] + row[2 * l + 1]) * T(0);
            }
            copy_run(y + ys.at(at.n, k, oh + i, ow), ys.col, row, 1, cols);
          }
        });
      });
    }
    if (probe != probe) all_finite.store(false, std::memory_order_relaxed);
  });
  return all_finite.load();
}

namespace {

// The weight gradient's tile-lane strategy (grad_weight.h): block b is tiles b * kc .. in (n, th, tw) order,
// transformed 16 at a time as in the forward.
template <typename T>
class TileLaneBlocks {
 public:
  struct State {
    std::vector<TileAt> tile_at;
    std::vector<LaneGroup> groups;
  };
  TileLaneBlocks(const ConvParams& p, const T* dy, const T* x, int64_t block)
      : p_(p), dy_(dy), x_(x), block_(block), TH_(ceil_div(p.P, 2)), TW_(ceil_div(p.Q, 2)),
        tiles_(p.N * TH_ * TW_), xs_(strides_of(p, p.C, p.H, p.W)), ys_(strides_of(p, p.K, p.P, p.Q)) {}
  int64_t blocks() const { return ceil_div(tiles_, block_); }
  int64_t begin_block(int64_t b, State& s) const {
    const int64_t t0 = b * block_, tlen = std::min(block_, tiles_ - t0);
    decode_tiles(t0, tlen, TH_, TW_, s.tile_at);
    lane_groups(tlen, kLanes, s.groups);
    return tlen;
  }
  void transform_grad_output(const State& s, int64_t panel0, int64_t panel1, const PackedPlanes<T>& e) const {
    transform_panels(s, panel0, panel1, e, [&](int64_t k, const LaneGroup& grp, T (&et)[kXi][kLanes]) {
      grad_output_tiles(p_, ys_, dy_, k, s.tile_at.data() + grp.j, grp, TW_, et);
    });
  }
  void transform_input(const State& s, int64_t panel0, int64_t panel1, const PackedPlanes<T>& v) const {
    transform_panels(s, panel0, panel1, v, [&](int64_t c, const LaneGroup& grp, T (&vt)[kXi][kLanes]) {
      input_tiles(p_, xs_, x_, c, s.tile_at.data() + grp.j, grp, TW_, vt);
    });
  }

 private:
  // Each panel of channels is transformed channel by channel for each lane group (the group's tiles are
  // consecutive reduction rows of the panel), then stored.
  template <class ReadTiles>
  void transform_panels(const State& s, int64_t panel0, int64_t panel1, const PackedPlanes<T>& out,
                        ReadTiles&& read_tiles) const {
    T tiles[kMaxPanel][kXi][kLanes];
    for (int64_t panel = panel0; panel < panel1; ++panel) {
      const int64_t first = panel * out.width, count = std::min(out.width, out.extent - first);
      for (const LaneGroup& grp : s.groups) {
        for (int64_t i = 0; i < count; ++i) read_tiles(first + i, grp, tiles[i]);
        out.store(tiles, grp.j, grp.lanes, first, count);
      }
    }
  }

  const ConvParams& p_;
  const T* dy_;
  const T* x_;
  int64_t block_, TH_, TW_, tiles_;
  Strides xs_, ys_;
};

}  // namespace

template <typename T>
bool winograd_grad_weight_tile_lanes(const ConvParams& p, const T* dy, const T* x, T* dw) {
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  return grad_weight_blocks(p, uk, TileLaneBlocks<T>(p, dy, x, uk.kc), dw);
}

template bool winograd_forward_tile_lanes<float>(const ConvParams&, const float*, const float*, const float*, float*,
                                                 bool);
template bool winograd_grad_weight_tile_lanes<float>(const ConvParams&, const float*, const float*, float*);

}  // namespace fastconv::cpu
