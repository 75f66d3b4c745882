// The innermost max_pool2d loops, a block of NCHW output rows or one NHWC row at a time, compiled once per
// ISA (rows_<isa>.cpp) and chosen at run time like the GEMM micro-kernels. The threading, index checks and
// fallbacks stay in maxpool2d.cpp; these see raw pointers only.
//
// Semantics are torch's: a window's first maximum wins, a NaN wins over everything (the last NaN seen), and a
// window with nothing above `lowest` reports its first in-bounds element. Positions are h * W + w within the
// plane, carried as Pos (int32 while the plane allows, so compare masks and position blends share a lane
// width with float and vectorise) and widened to int64 on store.
#pragma once
#include <cstdint>

#include "pool_params.h"
#include "cpu/isa.h"

namespace fastconv::cpu {

// The type a tensor of S is compared in: S itself, but float for bfloat16, stored as its raw bits (uint16_t).
// Widening bfloat16 is exact and a max is one of its inputs, so pooling bfloat16 this way is exact: the output is
// the input element's own bits.
template <typename S>
struct PoolCompute {
  using type = S;
};
template <>
struct PoolCompute<uint16_t> {
  using type = float;
};
template <typename S>
using pool_compute_t = typename PoolCompute<S>::type;

// S: the tensors' element type. Scratch, per thread, in the compare type T: best / best_pos of
// max(padded_columns(p), C) entries each, padded of padded_rows_size(p) entries.
template <typename S, typename Pos>
struct PoolRowKernels {
  using T = pool_compute_t<S>;
  // Output rows [op0, op1) of one NCHW plane, at most kPoolRowBlock of them: out and idx of (op1 - op0) * Q.
  void (*nchw_rows)(const PoolParams& p, const S* plane, int64_t op0, int64_t op1, T lowest, S* out,
                    int64_t* idx, T* best, Pos* best_pos, T* padded);
  // Output row op of one NHWC image: out[0..Q*C) and idx[0..Q*C).
  void (*nhwc_row)(const PoolParams& p, const S* image, int64_t op, T lowest, S* out, int64_t* idx, T* best,
                   Pos* best_pos);
};

// NCHW rows are computed in chunks of kChunkColumns output columns (the last one partly past Q).
constexpr int kChunkColumns = 16;
inline int64_t padded_columns(const PoolParams& p) { return round_up(p.Q, kChunkColumns); }
// An NCHW input row with `lowest` padding on both sides, as far as the last chunk's windows reach.
inline int64_t padded_row_length(const PoolParams& p) {
  return (padded_columns(p) - 1) * p.stride_w + (p.kernel_w - 1) * p.dil_w + 1;
}
// NCHW output rows per nchw_rows call, and the padded input rows they read at most (+ slack: a stride-2 vector
// load reads one element past the last lane's).
constexpr int64_t kPoolRowBlock = 32;
inline int64_t padded_rows_size(const PoolParams& p) {
  return ((kPoolRowBlock - 1) * p.stride_h + (p.kernel_h - 1) * p.dil_h + 1) * padded_row_length(p) + kChunkColumns;
}
// Whether that scratch stays under 4M elements plus 64 planes' worth. Strides and dilations far larger than
// the map (up to 2^31 - 1) would make it huge, or overflow int64: the size is estimated in double first, and
// such problems take the NHWC row kernel, which needs no padded rows. Long ordinary rows (a 1 x 2^17 signal)
// stay here.
inline bool padded_rows_fit(const PoolParams& p) {
  const double rows = (kPoolRowBlock - 1) * double(p.stride_h) + (p.kernel_h - 1) * double(p.dil_h) + 1;
  const double row_length = (padded_columns(p) - 1) * double(p.stride_w) + (p.kernel_w - 1) * double(p.dil_w) + 1;
  return rows * row_length + kChunkColumns <= double(int64_t{1} << 22) + 64.0 * double(p.H) * double(p.W);
}

namespace scalar { template <typename T, typename Pos> PoolRowKernels<T, Pos> pool_rows(); }
namespace avx2 { template <typename T, typename Pos> PoolRowKernels<T, Pos> pool_rows(); }
namespace avx512 { template <typename T, typename Pos> PoolRowKernels<T, Pos> pool_rows(); }

}  // namespace fastconv::cpu
