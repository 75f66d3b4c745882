// NHWC bfloat16 GEMMs on AVX512-BF16 whose A operand is read in place: the pair GEMM's forward
// (conv2d.cpp's forward_bf16_pairs picks it over gemm_forward_bf16_pairs) and the strided grad-input (gemm_grad_input_col2im_bf16 picks it; see
// pair_rows_grad_input_strided below).
//
// y[pixel][k] = bias[k] + sum over taps (r, s) and channel pairs c of x2[input pixel at (r, s)][c] . w2[k][r][s][c],
// with x2 and w2 the NHWC bfloat16 tensors seen as 32-bit pairs of adjacent channels (channel_pair_problem). The
// packed pair GEMM (conv_gemm.cpp) transposes every im2col row into k-major panels of 8 pixels, a quarter of its
// time on ResNet-18's stride-2 layers; here the micro-kernel broadcasts each pixel's pairs from x itself
// (pair_rows_kernel_8x32), through one row pointer per pixel and tap: the pixel's input there, or a row of zeros
// for a tap in the padding. Only the weights are packed: per group, panels of 32 output channels, [tap][pair][32].
//
// Blocking (BLIS's loops, less the A packing): a task is a block of kBlockTiles tiles of 8 output pixels. Its
// reduction goes in blocks of whole taps (or of part of one tap's pairs, for wide layers) of at most kBlockPairs
// pairs, so that a block of B (kBlockPairs x 32 pairs, 16 KiB) stays in L1 while the task's tiles pass over it,
// one panel of output channels after another; C (the block's rows of y, in float) stays in L2 and is rounded into
// y, bfloat16, when the task is done. Each output sums its reduction in an order fixed by the shape: the same
// result for any thread count.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cpu/bf16_bits.h"
#include "cpu/gemm/conv_gemm.h"
#include "cpu/gemm/im2col.h"
#include "cpu/gemm/micro.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"

namespace fastconv::cpu {

namespace {

constexpr int64_t kRows = 8, kCols = 32;  // the micro-kernel's tile: 8 output pixels x 32 output channels
constexpr int64_t kBlockTiles = 8;
constexpr int64_t kBlockPairs = 128;

struct ReductionBlock {
  int64_t tap0, taps, pair0, pairs;
};

std::vector<ReductionBlock> reduction_blocks(int64_t taps, int64_t tap_pairs) {
  std::vector<ReductionBlock> blocks;
  if (tap_pairs >= kBlockPairs) {
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t c0 = 0; c0 < tap_pairs; c0 += kBlockPairs)
        blocks.push_back({t, 1, c0, std::min(kBlockPairs, tap_pairs - c0)});
  } else {
    const int64_t per_block = kBlockPairs / tap_pairs;
    for (int64_t t0 = 0; t0 < taps; t0 += per_block)
      blocks.push_back({t0, std::min(per_block, taps - t0), 0, tap_pairs});
  }
  return blocks;
}

// Group g's weights as B panels: out[panel][red][32] = w2[g * Kg + panel * 32 + j][red], zeros past Kg. Read in runs
// of 16 along each weight row, written as 16 rows of the panel.
void pack_weight_panels(const uint32_t* w2, int64_t g, int64_t Kg, int64_t red, int64_t panel, uint32_t* out) {
  constexpr int64_t kRun = 16;
  for (int64_t k0 = 0; k0 < red; k0 += kRun) {
    const int64_t len = std::min(kRun, red - k0);
    for (int64_t j = 0; j < kCols; ++j) {
      const int64_t k = panel * kCols + j;
      const uint32_t* src = w2 + (g * Kg + k) * red + k0;
      for (int64_t i = 0; i < len; ++i) out[(k0 + i) * kCols + j] = k < Kg ? src[i] : 0u;
    }
  }
}

// c (tile_count * 8 rows of panels * 32 floats, ldc apart) += the task's A rows times B: rows[(tile * taps + t) * 8
// + i] is row i of tile `tile` at tap t, packed[panel] is B's panel [taps * tap_pairs][32]. c holds whole tiles and
// panels (rows of padding pixels read zeros, columns past the channels multiply B's zero columns), so no tile needs
// an edge case.
void multiply_rows(const std::vector<ReductionBlock>& blocks, int64_t tile_count, const uint32_t* const* rows,
                   int64_t taps, int64_t tap_pairs, const uint32_t* packed, int64_t panels, float* c, int64_t ldc) {
  const PairRowsKernel kernel = avx512_bf16::pair_rows_8x32();
  const int64_t red = taps * tap_pairs;
  for (const ReductionBlock& block : blocks) {
    for (int64_t panel = 0; panel < panels; ++panel) {
      const uint16_t* b =
          reinterpret_cast<const uint16_t*>(packed + (panel * red + block.tap0 * tap_pairs + block.pair0) * kCols);
      for (int64_t tile = 0; tile < tile_count; ++tile)
        kernel(block.taps, block.pairs, block.pair0, rows + (tile * taps + block.tap0) * kRows, b,
               c + tile * kRows * ldc + panel * kCols, ldc);
    }
  }
}

}  // namespace

void pair_rows_forward(const ConvParams& p, const uint16_t* x, const uint16_t* w, const float* bias, uint16_t* y) {
  const ConvParams pairs = channel_pair_problem(p, x, w);
  const uint32_t* x2 = reinterpret_cast<const uint32_t*>(x);
  const uint32_t* w2 = reinterpret_cast<const uint32_t*>(w);
  const int64_t Cp = pairs.Cg(), taps = p.RS(), red = taps * Cp, Kg = p.Kg(), panels = ceil_div(Kg, kCols);
  const int64_t pixels = p.N * p.PQ(), ldc = panels * kCols;

  const std::unique_ptr<uint32_t[]> packed = fresh_array<uint32_t>(p.groups * panels * red * kCols);
  parallel_for(0, p.groups * panels, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      pack_weight_panels(w2, b / panels, Kg, red, b % panels, packed.get() + b * red * kCols);
  });

  const std::vector<ReductionBlock> blocks = reduction_blocks(taps, Cp);
  const std::vector<uint32_t> zeros(static_cast<size_t>(Cp), 0u);  // what a tap in the padding reads
  const RoundFn round_run = avx512_bf16::round_to_bf16_run();
  const int64_t tiles = ceil_div(pixels, kRows), tasks_per_group = ceil_div(tiles, kBlockTiles);
  parallel_for(0, p.groups * tasks_per_group, 1, [&](int64_t t0, int64_t t1) {
    std::vector<const uint32_t*> rows(static_cast<size_t>(kBlockTiles * taps * kRows));  // [tile][tap][pixel]
    // The task's rows of y in float (whole tiles and panels), rounded to bfloat16 once at the end: y is written
    // once, in bfloat16, with no float y to allocate, fill and convert.
    std::vector<float> sums(static_cast<size_t>(kBlockTiles * kRows * ldc));
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t g = task / tasks_per_group, tile0 = task % tasks_per_group * kBlockTiles;
      const int64_t tile_count = std::min(kBlockTiles, tiles - tile0);
      const int64_t j0 = tile0 * kRows, jlen = std::min(tile_count * kRows, pixels - j0);
      for (int64_t i = 0; i < tile_count * kRows; ++i) {
        const uint32_t** at = &rows[static_cast<size_t>((i / kRows * taps) * kRows + i % kRows)];
        if (i >= jlen) {
          for (int64_t t = 0; t < taps; ++t) at[t * kRows] = zeros.data();
          continue;
        }
        const Pixel px = pixel_of(p, j0 + i);
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t h = p.in_row(px.p, t / p.S), wi = p.in_col(px.q, t % p.S);
          at[t * kRows] = p.in_bounds(h, wi) ? x2 + ((px.n * p.H + h) * p.W + wi) * pairs.C + g * Cp : zeros.data();
        }
      }
      for (int64_t i = 0; i < tile_count * kRows; ++i) {  // sums start as the bias; the products are added onto it
        float* row = sums.data() + i * ldc;
        if (bias != nullptr)
          std::copy(bias + g * Kg, bias + (g + 1) * Kg, row);
        else
          std::fill(row, row + Kg, 0.0f);
      }
      multiply_rows(blocks, tile_count, rows.data(), taps, Cp, packed.get() + g * panels * red * kCols, panels,
                    sums.data(), ldc);
      for (int64_t j = j0; j < j0 + jlen; ++j) round_run(sums.data() + (j - j0) * ldc, Kg, y + j * p.K + g * Kg);
    }
  });
}

// The strided grad-input as the same kind of GEMM, gathered rather than scattered (no col2im):
// dx[n][h][w][c] = sum over the taps (r, s) whose output pixel p = (h + pad_h - r * dil_h) / stride_h (and q alike)
// is whole and inside the map, and over output-channel pairs k, of dy2[n][p][q][k] . (w[2k][r][s][c],
// w[2k+1][r][s][c]).
// Which taps those are depends only on h mod stride_h and w mod stride_w: the input pixels fall into stride_h x
// stride_w phases, each a GEMM over its own taps (for 3x3 at stride 2: 4, 2, 2 and 1 taps, not 9 with most rows
// zero), with B packed per phase from w (float values that are bfloat16, rounded exactly). Each task owns whole
// rows of dx: it sums them in a float block and writes them rounded to bfloat16, so dx is written once and needs no
// zeroing.
void pair_rows_grad_input_strided(const ConvParams& p, const uint16_t* dy, const float* w, uint16_t* dx) {
  if (p.groups != 1 || !p.channels_last || p.K % 2 != 0 || reinterpret_cast<uintptr_t>(dy) % 4 != 0)
    throw std::logic_error("fastconv: the gathered grad-input needs NHWC, groups 1, an even K, aligned dy");
  const uint32_t* dy2 = reinterpret_cast<const uint32_t*>(dy);
  const int64_t Kp = p.K / 2, C = p.C, panels = ceil_div(C, kCols), ldc = panels * kCols;
  const int64_t sh = p.stride_h, sw = p.stride_w;

  struct Phase {
    int64_t ph, pw, rows, cols;  // first input row and column; input rows and columns in it
    std::vector<int64_t> taps;   // r * S + s
    std::vector<int64_t> row_shift, col_shift;  // per tap: (ph + pad_h - r * dil_h) / stride_h, and for columns
    std::vector<ReductionBlock> blocks;
    std::unique_ptr<uint32_t[]> packed;
  };
  std::vector<Phase> phases;
  for (int64_t ph = 0; ph < std::min(sh, p.H); ++ph)
    for (int64_t pw = 0; pw < std::min(sw, p.W); ++pw) {
      Phase phase{ph, pw, ceil_div(p.H - ph, sh), ceil_div(p.W - pw, sw), {}, {}, {}, {}, nullptr};
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s)
          if ((ph + p.pad_h - r * p.dil_h) % sh == 0 && (pw + p.pad_w - s * p.dil_w) % sw == 0) {
            phase.taps.push_back(r * p.S + s);
            phase.row_shift.push_back((ph + p.pad_h - r * p.dil_h) / sh);
            phase.col_shift.push_back((pw + p.pad_w - s * p.dil_w) / sw);
          }
      phase.blocks = reduction_blocks(static_cast<int64_t>(phase.taps.size()), Kp);
      phases.push_back(std::move(phase));
    }
  // B of each phase: [panel][tap][k pair][32 channels], zero channels past C. w's values are bfloat16 held as
  // float, so a pair is the upper halves of two floats' bits.
  for (Phase& phase : phases) {
    const int64_t red = static_cast<int64_t>(phase.taps.size()) * Kp;
    if (red == 0) continue;
    phase.packed = fresh_array<uint32_t>(panels * red * kCols);
    uint32_t* out = phase.packed.get();
    parallel_for(0, panels * red, 64, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t panel = i / red, t = phase.taps[static_cast<size_t>(i % red / Kp)], k = 2 * (i % Kp);
        const int64_t c0 = panel * kCols, width = std::min(kCols, C - c0);
        const float* lo = w + p.weight_offset(k, c0, t / p.S, t % p.S);
        const float* hi = w + p.weight_offset(k + 1, c0, t / p.S, t % p.S);
        uint32_t* dst = out + i * kCols;
        for (int64_t j = 0; j < width; ++j) {
          uint32_t l, h;
          std::memcpy(&l, lo + j, sizeof l);
          std::memcpy(&h, hi + j, sizeof h);
          dst[j] = (l >> 16) | (h & 0xFFFF0000u);
        }
        std::fill(dst + width, dst + kCols, 0u);
      }
    });
  }

  // Tasks: blocks of kBlockTiles tiles of 8 input pixels of one phase, in (phase, image, row, column) order within
  // a phase, the phases' blocks taken in turn (phases of 4 and 1 taps differ 4x in cost: threads get even shares).
  std::vector<std::pair<size_t, int64_t>> tasks;  // (phase, first pixel)
  int64_t most_blocks = 0;
  for (const Phase& phase : phases)
    most_blocks = std::max(most_blocks, ceil_div(p.N * phase.rows * phase.cols, kBlockTiles * kRows));
  for (int64_t block = 0; block < most_blocks; ++block)
    for (size_t i = 0; i < phases.size(); ++i)
      if (block * kBlockTiles * kRows < p.N * phases[i].rows * phases[i].cols)
        tasks.emplace_back(i, block * kBlockTiles * kRows);
  const std::vector<uint32_t> zeros(static_cast<size_t>(Kp), 0u);
  const RoundFn round_run = avx512_bf16::round_to_bf16_run();
  parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    std::vector<const uint32_t*> rows;
    std::vector<float> sums(static_cast<size_t>(kBlockTiles * kRows * ldc));
    for (int64_t task = t0; task < t1; ++task) {
      const Phase& phase = phases[tasks[static_cast<size_t>(task)].first];
      const int64_t taps = static_cast<int64_t>(phase.taps.size()), pixels = p.N * phase.rows * phase.cols;
      const int64_t j0 = tasks[static_cast<size_t>(task)].second, jlen = std::min(kBlockTiles * kRows, pixels - j0);
      const int64_t tile_count = ceil_div(jlen, kRows);
      auto dx_row = [&](int64_t j) {  // dx at the phase's j-th pixel
        const int64_t n = j / (phase.rows * phase.cols), a = j / phase.cols % phase.rows, b = j % phase.cols;
        return dx + ((n * p.H + phase.ph + a * sh) * p.W + phase.pw + b * sw) * C;
      };
      if (taps == 0) {  // no tap reaches these pixels
        for (int64_t j = j0; j < j0 + jlen; ++j) {
          uint16_t* row = dx_row(j);
          std::fill(row, row + C, uint16_t{0});
        }
        continue;
      }
      rows.resize(static_cast<size_t>(tile_count * taps * kRows));
      // The phase's pixel (n, a, b) (input row ph + a * stride_h) reads at tap t output pixel (a + row_shift[t],
      // b + col_shift[t]): the shifts are whole, so no division per pixel.
      int64_t n = j0 / (phase.rows * phase.cols), a = j0 / phase.cols % phase.rows, b = j0 % phase.cols;
      for (int64_t i = 0; i < tile_count * kRows; ++i) {
        const uint32_t** at = &rows[static_cast<size_t>((i / kRows * taps) * kRows + i % kRows)];
        for (int64_t t = 0; t < taps; ++t) {
          const size_t ti = static_cast<size_t>(t);
          const int64_t op = a + phase.row_shift[ti], oq = b + phase.col_shift[ti];
          const bool inside = i < jlen && op >= 0 && op < p.P && oq >= 0 && oq < p.Q;
          at[t * kRows] = inside ? dy2 + ((n * p.P + op) * p.Q + oq) * Kp : zeros.data();
        }
        if (++b == phase.cols) b = 0, ++a;
        if (a == phase.rows) a = 0, ++n;
      }
      std::fill(sums.begin(), sums.begin() + tile_count * kRows * ldc, 0.0f);
      multiply_rows(phase.blocks, tile_count, rows.data(), taps, Kp, phase.packed.get(), panels, sums.data(), ldc);
      for (int64_t j = j0; j < j0 + jlen; ++j) round_run(sums.data() + (j - j0) * ldc, C, dx_row(j));
    }
  });
}

}  // namespace fastconv::cpu
