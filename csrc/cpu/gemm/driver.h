// The blocked loops around the micro-kernel (BLIS's macro-kernel), for one block of C.
//
// C block [m0, m0+mlen) x [n0, n0+nlen) += A[.., 0..K) * B[0..K, ..] where A and B never exist as matrices:
// callers hand in packers that write (or point at pre-packed) micro-panels straight from the conv tensors,
// which is how im2col gets fused into packing. Loop order, outer to inner:
//   k block (kc)  -> pack B block kc x nlen      (stays in L2/L3, reused by every A panel)
//   m block (mc)  -> pack A block mc x kc        (stays in L2)
//   n panel (nr)  -> B micro-panel kc x nr        (stays in L1 while ...)
//   m panel (mr)  -> micro-kernel                 (... every A micro-panel streams past it)
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "conv_params.h"
#include "cpu/gemm/micro.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"

namespace fastconv::cpu {

// Where C(i, j) lives: c + (i - row_origin) * row_stride + (j' / col_segment) * segment_stride + j' % col_segment
// with j' = j - col_origin. Segments let one GEMM column range span several images of an NCHW batch (columns
// (n, p, q)); origins let a small buffer hold just one block of a larger GEMM.
struct OutputMap {
  int64_t row_stride;
  int64_t col_segment;
  int64_t segment_stride;
  int64_t row_origin = 0;
  int64_t col_origin = 0;
  int64_t offset(int64_t i, int64_t j) const {
    const int64_t jj = j - col_origin;
    return (i - row_origin) * row_stride + (jj / col_segment) * segment_stride + jj % col_segment;
  }
  bool contiguous_cols(int64_t j, int64_t count) const { return (j - col_origin) % col_segment + count <= col_segment; }
  // Column parts of offset() for columns j..j+count.
  void column_offsets(int64_t j, int64_t count, int64_t* out) const {
    const int64_t jj = j - col_origin;
    int64_t segment = jj / col_segment, within = jj % col_segment;
    for (int64_t i = 0; i < count; ++i) {
      out[i] = segment * segment_stride + within;
      if (++within == col_segment) within = 0, ++segment;
    }
  }
};

// Per-thread packing buffers, grown on demand.
template <typename T>
struct PackBuffers {
  AlignedBuffer<T> a, b, tile;
  AlignedBuffer<uint16_t> a_pairs, b_pairs;  // the packed blocks as bfloat16 pairs (MicroKernel::bf16)
  std::vector<int64_t> col_offset;
  void reserve(const MicroKernel<T>& uk, int64_t nlen) {
    a.reserve(static_cast<size_t>(round_up(uk.mc, uk.mr) * uk.kc));
    b.reserve(static_cast<size_t>(round_up(nlen, uk.nr) * uk.kc));
    tile.reserve(static_cast<size_t>(uk.mr * uk.nr));
    if (col_offset.size() < static_cast<size_t>(uk.nr)) col_offset.resize(uk.nr);
  }
};

// A packed block (ceil(len / width) panels of klen x width) converted panel by panel (Bf16Pairs::to_pairs or
// a_to_rows) into `out`: panels of round_up(klen * values_per_element, k_step) x width bfloat16.
inline const uint16_t* block_to_pairs(const Bf16Pairs& pairs, bool a_side, const float* block, int64_t klen,
                                      int64_t len, int64_t width, AlignedBuffer<uint16_t>& out) {
  const auto convert = a_side && pairs.a_to_rows != nullptr ? pairs.a_to_rows : pairs.to_pairs;
  const int64_t panels = ceil_div(len, width);
  const int64_t panel_values = round_up(klen * pairs.values_per_element, pairs.k_step) * width;
  out.reserve(static_cast<size_t>(panels * panel_values));
  for (int64_t i = 0; i < panels; ++i) convert(block + i * klen * width, klen, width, out.data() + i * panel_values);
  return out.data();
}

// One register tile of the pair kernel (float only: double kernels have no bfloat16 products).
template <typename T>
inline void run_pairs(const MicroKernel<T>& uk, int64_t klen, const uint16_t* a_pairs, const uint16_t* b_pairs,
                         T* c, T* c_hi, int64_t ldc, bool accumulate) {
  if constexpr (std::is_same_v<T, float>)
    uk.bf16->run_split(round_up(klen * uk.bf16->values_per_element, uk.bf16->k_step) / 2, a_pairs, b_pairs, c, c_hi,
                       ldc, accumulate);
}

// Bf16Pairs::begin / end around one thread's GEMM block (a no-op without bfloat16 products).
class PairKernelScope {
 public:
  explicit PairKernelScope(const Bf16Pairs* pairs) : pairs_(pairs) {
    if (pairs_ != nullptr && pairs_->begin != nullptr) pairs_->begin();
  }
  ~PairKernelScope() {
    if (pairs_ != nullptr && pairs_->end != nullptr) pairs_->end();
  }
  PairKernelScope(const PairKernelScope&) = delete;
  PairKernelScope& operator=(const PairKernelScope&) = delete;

 private:
  const Bf16Pairs* pairs_;
};

// A's rows read in place (MicroKernel::run_strided_a): row i, reduction k at data[k * lda + i]. Every tile's
// mr rows must lie inside the operand (callers use it where the row count is a multiple of mr).
template <typename T>
struct RowsInPlace {
  const T* data;
  int64_t lda;
};

// pack_a(dst, k0, klen, m0, mlen) -> pointer to ceil(mlen/mr) panels of klen x mr (m0: the block's first row,
// mc rows after the previous one), or RowsInPlace (float kernels without bfloat16 products only).
// pack_b(dst, k0, klen, n0, nlen) -> pointer to ceil(nlen/nr) panels of klen x nr.
// Either may return a pointer into pre-packed storage instead of writing dst.
template <typename T, class PackA, class PackB>
void gemm_block(const MicroKernel<T>& uk, int64_t m0, int64_t mlen, int64_t n0, int64_t nlen, int64_t K,
                PackA&& pack_a, PackB&& pack_b, T* c, const OutputMap& map, bool accumulate,
                PackBuffers<T>& buf) {
  const int mr = uk.mr, nr = uk.nr;
  buf.reserve(uk, nlen);
  const PairKernelScope pair_kernel(uk.bf16);
  for (int64_t k0 = 0; k0 < K; k0 += uk.kc) {
    const int64_t klen = std::min(uk.kc, K - k0);
    const bool acc = accumulate || k0 > 0;
    const T* b_block = pack_b(buf.b.data(), k0, klen, n0, nlen);
    // bfloat16 products: each packed block converted to pairs once, B here and A per m block.
    const bool pairs = uk.bf16 != nullptr;
    const uint16_t* b_pairs = nullptr;
    if constexpr (std::is_same_v<T, float>)
      if (pairs) b_pairs = block_to_pairs(*uk.bf16, false, b_block, klen, nlen, nr, buf.b_pairs);
    // bfloat16 values per column of a converted panel
    const int64_t panel_pairs = pairs ? round_up(klen * uk.bf16->values_per_element, uk.bf16->k_step) : 0;
    for (int64_t mb = m0; mb < m0 + mlen; mb += uk.mc) {
      const int64_t mblen = std::min(uk.mc, m0 + mlen - mb);
      const auto a_operand = pack_a(buf.a.data(), k0, klen, mb, mblen);
      constexpr bool kInPlace = std::is_same_v<std::decay_t<decltype(a_operand)>, RowsInPlace<T>>;
      const T* a_block = nullptr;
      int64_t lda = mr;
      if constexpr (kInPlace)
        a_block = a_operand.data, lda = a_operand.lda;
      else
        a_block = a_operand;
      const uint16_t* a_pairs = nullptr;
      if constexpr (kInPlace) {
        if (pairs || uk.run_strided_a == nullptr || uk.mc % mr != 0)  // (whole tiles of rows in every m block)
          throw std::logic_error("fastconv: rows in place need a float kernel without bfloat16 products");
      } else if constexpr (std::is_same_v<T, float>) {
        if (pairs) a_pairs = block_to_pairs(*uk.bf16, true, a_block, klen, mblen, mr, buf.a_pairs);
      }
      for (int64_t jr = 0; jr < nlen; jr += nr) {
        const int64_t ncols = std::min<int64_t>(nr, nlen - jr);
        const int64_t j = n0 + jr;
        const bool cols_contiguous = ncols == nr && map.contiguous_cols(j, nr);
        const bool halves_contiguous =
            ncols == nr && map.contiguous_cols(j, nr / 2) && map.contiguous_cols(j + nr / 2, nr / 2);
        const T* b_panel = b_block + (jr / nr) * klen * nr;
        const uint16_t* b_pair_panel = pairs ? b_pairs + (jr / nr) * panel_pairs * nr : nullptr;
        for (int64_t ir = 0; ir < mblen; ir += mr) {
          const int64_t nrows = std::min<int64_t>(mr, mblen - ir);
          const T* a_panel = kInPlace ? a_block + ir : a_block + (ir / mr) * klen * mr;
          const uint16_t* a_pair_panel = pairs ? a_pairs + (ir / mr) * panel_pairs * mr : nullptr;
          // Straight into C when the tile is whole and its columns are contiguous (or two contiguous halves);
          // else into a small tile buffer, added to C below.
          const bool whole = nrows == mr && (cols_contiguous || halves_contiguous);
          T* tile = buf.tile.data();
          T* out = whole ? c + map.offset(mb + ir, j) : tile;
          T* out_hi = whole ? c + map.offset(mb + ir, j + nr / 2) : tile + nr / 2;
          const int64_t ldc = whole ? map.row_stride : nr;
          if (kInPlace)
            uk.run_strided_a(klen, a_panel, lda, b_panel, out, out_hi, ldc, whole && acc);
          else if (pairs)
            run_pairs(uk, klen, a_pair_panel, b_pair_panel, out, out_hi, ldc, whole && acc);
          else
            uk.run_split(klen, a_panel, b_panel, out, out_hi, ldc, whole && acc);
          if (whole) continue;
          // Edge or segment-crossing tile: column offsets once per tile (no division per element).
          int64_t* col_offset = buf.col_offset.data();
          map.column_offsets(j, ncols, col_offset);
          for (int64_t i = 0; i < nrows; ++i) {
            T* row = c + (mb + ir + i - map.row_origin) * map.row_stride;
            const T* src = tile + i * nr;
            if (acc)
              for (int64_t jj = 0; jj < ncols; ++jj) row[col_offset[jj]] += src[jj];
            else
              for (int64_t jj = 0; jj < ncols; ++jj) row[col_offset[jj]] = src[jj];
          }
        }
      }
    }
  }
}

// A whole operand packed once (weights). Not zero-filled first: the packers write every entry, padding
// partial panels with zeros themselves, and zero-filling a layer's weights (up to ~10 MiB) would be one more
// pass, on one thread, taking all the page faults.
template <typename T>
using Prepacked = std::unique_ptr<T[]>;

// Packs a whole operand once, in the layout gemm_block expects from a packer that is handed k0 a multiple of
// kc and a panel-aligned start: block k0 holds ceil(extent/width) panels of klen x width. The k blocks are
// packed in parallel (inline when called from inside a parallel region).
template <typename T, class PackPanels>
Prepacked<T> prepack(int64_t extent, int64_t K, int64_t width, int64_t kc, PackPanels&& pack_panels) {
  Prepacked<T> packed = fresh_array<T>(round_up(extent, width) * K);
  parallel_for(0, ceil_div(K, kc), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t k0 = b0 * kc; k0 < std::min(K, b1 * kc); k0 += kc) {
      const int64_t klen = std::min(kc, K - k0);
      pack_panels(packed.get() + k0 * round_up(extent, width), k0, klen, int64_t{0}, extent);
    }
  });
  return packed;
}

// Pointer into prepack()'s storage for the panels starting at `start` (a multiple of width) in k block k0.
template <typename T>
const T* prepacked_at(const Prepacked<T>& packed, int64_t extent, int64_t width, int64_t k0, int64_t klen,
                      int64_t start) {
  return packed.get() + k0 * round_up(extent, width) + (start / width) * klen * width;
}

}  // namespace fastconv::cpu
