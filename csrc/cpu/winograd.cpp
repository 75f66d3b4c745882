// Winograd F(2x2, 3x3) for stride-1 3x3 convs (NCHW and NHWC), on the same GEMM engine (gemm_driver.h).
//
// Each 2x2 output tile of each (image, k) comes from a 4x4 input tile d of each c:
//   Y = A^T [ sum_c (G g G^T) (.) (B^T d B) ] A
// so the 9 * 4 = 36 multiplies per (tile, c, k) of the direct conv become 16: the element-wise products,
// summed over c, are 16 independent GEMMs (one per position xi of the 4x4 transform domain):
//   M[xi] (K x tiles) = U[xi] (K x C) * V[xi] (C x tiles),  U = G g G^T (weights),  V = B^T d B (input).
// Tiles go in blocks sized so one block's V and M stay in L2: per block the input transform writes V straight
// in the micro-kernel's packed B layout, the 16 GEMMs run, and the output transform writes y. Nothing of
// size im2col (or of the whole transformed input) is ever built.
// The transforms run 16 lanes at a time. This file's lanes are 16 tiles of the block (NHWC, and NCHW batches
// under 8 images); NCHW batches of 8+ take lanes over images (winograd_images.cpp for the forward, the
// image-lane branch of the weight gradient below). Shared pieces: winograd_transforms.h.
//
// Exactness: the transforms add rounding of their own (G holds 1/2), so results differ from the direct
// conv's in the last bits, as cuDNN's and oneDNN's Winograd do; the order of every sum is fixed by the shape,
// so results stay bitwise the same for any thread count.
#include "winograd.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "gemm_driver.h"
#include "huge_pages.h"
#include "pack.h"
#include "winograd_transforms.h"

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

constexpr int64_t kMaxPanel = 32;  // the widest micro-kernel panel (mr or nr) of any ISA

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

bool winograd_applies(const ConvParams& p) {
  const char* env = std::getenv("FASTCONV_WINOGRAD");  // read at every call, as FASTCONV_ISA is
  const bool disabled = env != nullptr && std::strcmp(env, "0") == 0;
  // Below ~32 channels the transforms cost more than the multiplies they save.
  return !disabled && p.groups == 1 && p.R == 3 && p.S == 3 && p.stride_h == 1 &&
         p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && p.C >= 32 && p.K >= 32 && p.P >= 2 && p.Q >= 2;
}

template <typename T>
void winograd_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, bool flipped) {
  if (!p.channels_last && p.N >= kImageLanesMinBatch) return forward_image_lanes(p, x, w, bias, y, flipped);
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  const int64_t C = p.C, K = p.K, TH = ceil_div(p.P, 2), TW = ceil_div(p.Q, 2), tiles = p.N * TH * TW;

  const TransformedWeights<T> u = transformed_weights(p, uk, w, flipped);

  // Tile blocks: V (16 x C x block) and M (16 x K x block) of one block stay within L2.
  const int64_t block = std::max<int64_t>(uk.nr, std::min<int64_t>(256, round_up(16384 / std::max(C, K), uk.nr)));
  const int64_t blocks = ceil_div(tiles, block);

  const Strides xs = strides_of(p, C, p.H, p.W), ys = strides_of(p, K, p.P, p.Q);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
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
            }
            copy_run(y + ys.at(at.n, k, oh + i, ow), ys.col, row, 1, cols);
          }
        });
      });
    }
  });
}

// dW = G^T [ sum over tiles (A e A^T) (.) (B^T d B) ] G with e the 2x2 dy tile, d the 4x4 input tile: per xi
// a GEMM  Mw[xi] (K x C) = E[xi] (K x tiles) * V[xi]^T (tiles x C), reduced over tiles. The tiles are cut into
// a number of chunks fixed by the shape, each summed into its own partial result in tile order, and the
// partials are added in chunk order: bitwise the same result for any thread count.
template <typename T>
void winograd_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw) {
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  const int64_t C = p.C, K = p.K, TH = ceil_div(p.P, 2), TW = ceil_div(p.Q, 2), tiles = p.N * TH * TW;
  const int64_t block = uk.kc;  // tiles per GEMM: one reduction block
  // NCHW batches of 8+ images: lanes over images, as in the forward (winograd_images.cpp): a block is a group
  // of images times a rectangle of positions, its reduction rows (position, image). It sums the tiles in
  // another order than the tile-lane path, so the two differ in rounding.
  const bool image_lanes = !p.channels_last && p.N >= kImageLanesMinBatch;
  const LaneBlocking blocking(p, std::max<int64_t>(1, block / kLanes));
  const int64_t blocks = image_lanes ? blocking.blocks() : ceil_div(tiles, block);
  const int64_t m_stride = K * C + 32;  // skewed planes, as in the forward
  // Two ways to spread the work, chosen by the shape alone (so the sums are the same for any thread count):
  // - small K x C: tile chunks, one per task, each summed into its own 16 x K x C partial result (added up
  //   below); few chunks, as each partial is written and read again;
  // - large K x C (a partial of 4 MiB or more, ResNet's 256- and 512-channel layers with few tiles): one
  //   result, the blocks in order, each block's transforms split over channels and its 16 GEMMs over threads.
  const bool planes_in_parallel = kXi * m_stride * int64_t{sizeof(T)} >= (int64_t{4} << 20);
  const int64_t memory_cap = std::max<int64_t>(1, (int64_t{64} << 20) / (kXi * m_stride * int64_t{sizeof(T)}));
  const int64_t chunks = planes_in_parallel ? 1 : std::max<int64_t>(1, std::min<int64_t>({blocks, 4, memory_cap}));
  // Left uninitialised (first writes overwrite): zero-filling fresh pages costs as much as the GEMMs here.
  std::unique_ptr<T[]> partial = fresh_array<T>(chunks * kXi * m_stride);

  const Strides xs = strides_of(p, C, p.H, p.W), ys = strides_of(p, K, p.P, p.Q);
  const int64_t e_stride = round_up(K, uk.mr) * block + 32, v_stride = round_up(C, uk.nr) * block + 32;
  const int64_t k_rows = round_up(K, uk.mr), c_cols = round_up(C, uk.nr);
  // Block b's 16 GEMMs into acc (onto it when accumulate), via buffers e and v. In parallel: its transforms over
  // channel ranges and its GEMMs over xi on all threads; else all on the calling thread.
  // One task's buffers, reused block after block (every entry of e and v that the GEMMs read is written).
  struct Scratch {
    AlignedBuffer<T> e, v;
    std::vector<TileAt> tile_at;
    std::vector<LaneGroup> groups;
    PackBuffers<T> buf;
  };
  auto make_scratch = [&] {
    Scratch scratch;
    scratch.e.reserve(kXi * e_stride), scratch.v.reserve(kXi * v_stride);
    return scratch;
  };
  const LaneKernels kernels = lane_kernels(uk.isa);
  auto run_block = [&](int64_t b, T* acc, bool accumulate, Scratch& scratch, bool parallel) {
    const LaneBlock blk = image_lanes ? blocking.block(p, b) : LaneBlock{};
    const int64_t t0 = b * block;
    const int64_t tlen = image_lanes ? (blk.th1 - blk.th0) * (blk.tw1 - blk.tw0) * blk.lanes : std::min(block, tiles - t0);
    T* const e = scratch.e.data();
    T* const v = scratch.v.data();
    std::vector<TileAt>& tile_at = scratch.tile_at;
    std::vector<LaneGroup>& groups = scratch.groups;
    if (!image_lanes) decode_tiles(t0, tlen, TH, TW, tile_at);
    // E[xi]: the A operand (rows k in panels of mr, reduction = the block's tiles); V[xi]: the B operand
    // (columns c in panels of nr). Rows and columns past K and C in the last panels are zeros.
    if (!image_lanes) lane_groups(tlen, kLanes, groups);
    // A group's tiles are consecutive reduction rows of a panel (`width` channels wide): each panel of channels
    // is transformed channel by channel, then stored by transposition (16 planes of lanes x channels), instead
    // of one value per store `width` apart. Channels past the extent (the last panel's) become zeros.
    // tiles[i][xi][l]: channel first + i, reduction row j + l.
    auto store_group = [&](const T (&tiles)[kMaxPanel][kXi][kLanes], int64_t j, int64_t lanes, int64_t first,
                           int64_t count, int64_t width, int64_t extent, T* packed, int64_t plane) {
      T* dst = packed + packed_offset(j, first, extent, width, block, tlen);
      for (int xi = 0; xi < kXi; ++xi)
        uk.transpose_panel(&tiles[0][xi][0], kXi * kLanes, count, lanes, dst + xi * plane, width);
    };
    auto transform_panels = [&](int64_t panel0, int64_t panel1, int64_t width, int64_t extent, T* packed,
                                int64_t plane, auto&& read_tiles) {
      TORCH_CHECK(width <= kMaxPanel, "fastconv: Winograd panel wider than ", kMaxPanel);
      T tiles[kMaxPanel][kXi][kLanes];
      for (int64_t panel = panel0; panel < panel1; ++panel) {
        const int64_t first = panel * width, count = std::min(width, extent - first);
        for (const LaneGroup& grp : groups) {
          for (int64_t i = 0; i < count; ++i) read_tiles(first + i, grp, tiles[i]);
          store_group(tiles, grp.j, grp.lanes, first, count, width, extent, packed, plane);
        }
      }
    };
    // Image lanes: each channel of a panel has its region of the group's images transposed (each position one
    // vector over the images); then position by position, the panel's tiles and their `lanes` reduction rows
    // stored as above. (All the block's tiles at once made a buffer of 256 KiB, out of L1: its transposes took
    // a third of the 128-channel layer's time.)
    auto transform_panels_images = [&](int64_t panel0, int64_t panel1, int64_t width, int64_t extent, T* packed,
                                       int64_t plane, bool of_input) {
      TORCH_CHECK(width <= kMaxPanel, "fastconv: Winograd panel wider than ", kMaxPanel);
      const int64_t region_size = std::max(blocking.max_inputs(), blocking.max_outputs()) * kLanes;
      thread_local AlignedBuffer<T> regions;
      regions.reserve(kMaxPanel * region_size);
      alignas(64) T lane_tiles[kMaxPanel][kXi][kLanes];
      for (int64_t panel = panel0; panel < panel1; ++panel) {
        const int64_t first = panel * width, count = std::min(width, extent - first);
        for (int64_t i = 0; i < count; ++i) {
          T* const region = regions.data() + i * region_size;
          if (of_input)
            transpose_region(uk, x + (blk.n0 * C + first + i) * p.HW(), C * p.HW(), p.W, blk.lanes, blk.h_lo,
                             blk.h_hi, blk.w_lo, blk.w_hi, region, first + i + 1 < extent ? p.HW() : 0);
          else
            transpose_region(uk, dy + (blk.n0 * K + first + i) * p.PQ(), K * p.PQ(), p.Q, blk.lanes, 2 * blk.th0,
                             std::min(p.P, 2 * blk.th1), 2 * blk.tw0, std::min(p.Q, 2 * blk.tw1), region,
                             first + i + 1 < extent ? p.PQ() : 0);
        }
        for (int64_t th = blk.th0, pos = 0; th < blk.th1; ++th)
          for (int64_t tw = blk.tw0; tw < blk.tw1; ++tw, ++pos) {
            for (int64_t i = 0; i < count; ++i) {
              const T* region = regions.data() + i * region_size;
              if (of_input)
                kernels.input_tile(blk, region, th, tw, &lane_tiles[i][0][0]);
              else
                kernels.grad_output_tile(blk, region, th, tw, &lane_tiles[i][0][0]);
            }
            store_group(lane_tiles, pos * blk.lanes, blk.lanes, first, count, width, extent, packed, plane);
          }
      }
    };
    auto transform_e = [&](int64_t panel0, int64_t panel1) {
      if (image_lanes) return transform_panels_images(panel0, panel1, uk.mr, K, e, e_stride, false);
      transform_panels(panel0, panel1, uk.mr, K, e, e_stride, [&](int64_t k, const LaneGroup& grp, auto& et) {
        grad_output_tiles(p, ys, dy, k, tile_at.data() + grp.j, grp, TW, et);
      });
    };
    auto transform_v = [&](int64_t panel0, int64_t panel1) {
      if (image_lanes) return transform_panels_images(panel0, panel1, uk.nr, C, v, v_stride, true);
      transform_panels(panel0, panel1, uk.nr, C, v, v_stride, [&](int64_t c, const LaneGroup& grp, auto& vt) {
        input_tiles(p, xs, x, c, tile_at.data() + grp.j, grp, TW, vt);
      });
    };
    auto gemms = [&](int64_t xi0, int64_t xi1, PackBuffers<T>& buf) {
      for (int64_t xi = xi0; xi < xi1; ++xi) {
        const T* ex = e + xi * e_stride;
        gemm_block(
            uk, 0, K, 0, C, tlen,
            [&](T*, int64_t, int64_t klen, int64_t m0, int64_t) { return ex + (m0 / uk.mr) * klen * uk.mr; },
            [&](T*, int64_t, int64_t, int64_t, int64_t) { return static_cast<const T*>(v + xi * v_stride); },
            acc + xi * m_stride, OutputMap{C, C, 0}, accumulate, buf);
      }
    };
    if (!parallel) {
      transform_e(0, k_rows / uk.mr), transform_v(0, c_cols / uk.nr), gemms(0, kXi, scratch.buf);
      return;
    }
    at::parallel_for(0, k_rows / uk.mr, 1, transform_e);
    at::parallel_for(0, c_cols / uk.nr, 1, transform_v);
    at::parallel_for(0, kXi, 1, [&](int64_t xi0, int64_t xi1) {
      PackBuffers<T> buf;
      gemms(xi0, xi1, buf);
    });
  };

  if (planes_in_parallel) {
    Scratch scratch = make_scratch();
    for (int64_t b = 0; b < blocks; ++b) run_block(b, partial.get(), b > 0, scratch, true);
  } else {
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      Scratch scratch = make_scratch();
      for (int64_t chunk = c0; chunk < c1; ++chunk) {
        const int64_t first = blocks * chunk / chunks, last = blocks * (chunk + 1) / chunks;
        for (int64_t b = first; b < last; ++b)
          run_block(b, partial.get() + chunk * kXi * m_stride, b > first, scratch, false);
      }
    });
  }

  // Partials summed in chunk order into the first: plane by plane, two sequential streams at a time (one pass
  // reading all 16 x chunks planes at once outruns the hardware prefetchers).
  if (chunks > 1) {
    constexpr int64_t kSpan = 4096;
    const int64_t spans = ceil_div(K * C, kSpan);
    at::parallel_for(0, kXi * spans, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t xi = i / spans, e0 = (i % spans) * kSpan, e1 = std::min(K * C, e0 + kSpan);
        T* sum = partial.get() + xi * m_stride;
        for (int64_t chunk = 1; chunk < chunks; ++chunk) {
          const T* add = partial.get() + (chunk * kXi + xi) * m_stride;
          for (int64_t e = e0; e < e1; ++e) sum[e] += add[e];
        }
      }
    });
  }
  // dW = G^T m G.
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t c = 0; c < C; ++c) {
        T m[kXi];
        for (int xi = 0; xi < kXi; ++xi) m[xi] = partial[xi * m_stride + k * C + c];
        transform_weight_grad(m, dw + weight_at(p, k, c), tap_stride(p));
      }
  });
}

template void winograd_forward<float>(const ConvParams&, const float*, const float*, const float*, float*, bool);
template void winograd_grad_weight<float>(const ConvParams&, const float*, const float*, float*);

}  // namespace fastconv::cpu
