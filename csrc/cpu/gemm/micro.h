// The register-blocked GEMM micro-kernels, one per ISA, and nothing else (BLIS-style).
//
// Contract: C[MR x NR] (=, or += when accumulate) sum_k A[k][0..MR) * B[k][0..NR), with A and B packed
// panels (A: kc x MR, B: kc x NR, both k-major, zero-padded at edges; run_strided_a: A's rows k lda apart, read
// in place) and C row-major with row stride ldc.
// The blocked loops and packing that feed it live in driver.h; the kernels themselves in micro_<isa>.cpp,
// each compiled for its ISA through `#pragma GCC target`, and chosen at run time from cpuid.
#pragma once
#include <cstdint>

#include "cpu/isa.h"

namespace fastconv::cpu {

// The tile's right half (columns NR/2..NR) goes to c_hi, c + NR/2 for a plain row-major tile: that lets one tile
// span two images of an NCHW batch whose pixel count is a multiple of NR/2 (ResNet's 4x4 maps with NR = 32).
template <typename T>
using MicroKernelSplitFn = void (*)(int64_t kc, const T* a, const T* b, T* c, T* c_hi, int64_t ldc, bool accumulate);

// The split kernel with A read in place: row i of the tile at a[k * lda + i] (lda >= MR), not from a packed panel
// (MR apart): for operands whose reduction rows already hold the tile's MR values side by side (NHWC dy in the
// weight gradient).
template <typename T>
using MicroKernelStridedAFn = void (*)(int64_t kc, const T* a, int64_t lda, const T* b, T* c, T* c_hi, int64_t ldc,
                                       bool accumulate);

// dst[k * width + i] = src[i * ld + k] for i < rows <= width, k < klen; zeros in rows [rows, width): a panel
// packed from rows that are contiguous along the reduction (NCHW weights, NCHW grad-weight's dy and im2col
// rows, NHWC pixels, Winograd grad-weight's transformed tiles).
template <typename T>
using TransposeFn = void (*)(const T* src, int64_t ld, int64_t rows, int64_t klen, T* dst, int64_t width);

// bfloat16 products on float panels (vdpbf16ps): the driver converts each packed float panel once into pairs of
// reduction rows, [ceil(klen / 2)][width][2] bfloat16 rounded to nearest even (exact for values that were
// bfloat16), and the pair kernel adds a[2p] * b[2p] + a[2p + 1] * b[2p + 1] into float accumulators. Same
// register tile (mr x nr) and C contract as the float kernel it rides with.
//
// AMX tiles (micro_amx.inc) take the same B pairs, but their A operand row by row, and the reduction in steps of
// 32: k_step, a_to_rows and begin / end say so.
struct Bf16Pairs {
  // `pairs` = round_up(klen * values_per_element, k_step) / 2: the panels' padded reduction, in pairs.
  void (*run_split)(int64_t pairs, const uint16_t* a, const uint16_t* b, float* c, float* c_hi, int64_t ldc,
                    bool accumulate);
  // out[(k / 2) * width * 2 + i * 2 + k % 2] = bf16(panel[k * width + i]), zeros for rows klen..round_up(klen,
  // k_step); width is the kernel's mr or nr. (Pair elements: the elements as they are, zero pairs after.)
  void (*to_pairs)(const float* panel, int64_t klen, int64_t width, uint16_t* out);
  int k_step = 2;
  // Reduction values per element of the packed panels: 1 for float panels (converted to bfloat16 here), 2 for
  // panels whose 32-bit elements are already bfloat16 pairs (pair_element_kernel's packers); klen counts elements.
  int values_per_element = 1;
  // Set: A's panels in this layout instead of to_pairs' (same size, round_up(klen * values_per_element, k_step) *
  // width values).
  void (*a_to_rows)(const float* panel, int64_t klen, int64_t width, uint16_t* out) = nullptr;
  // Set: called on a thread before its first run_split of a GEMM block and after its last (tile configuration).
  void (*begin)() = nullptr;
  void (*end)() = nullptr;
};

template <typename T>
struct MicroKernel {
  Isa isa;
  int mr, nr;                // register tile
  int64_t mc, kc, nc;        // cache blocking: A block mc x kc in L2, B micro-panel kc x nr in L1
  MicroKernelSplitFn<T> run_split;
  TransposeFn<T> transpose_panel;
  MicroKernelStridedAFn<T> run_strided_a = nullptr;
  const Bf16Pairs* bf16 = nullptr;  // set: multiply in bfloat16 (float kernels on a CPU that has it, when asked)
};

template <typename T>
MicroKernel<T> micro_kernel(Isa isa);

// Per-ISA tables, defined in micro_<isa>.cpp.
namespace scalar { MicroKernel<float> kernel_f32(); MicroKernel<double> kernel_f64(); }
namespace avx2 { MicroKernel<float> kernel_f32(); MicroKernel<double> kernel_f64(); }
namespace avx512 { MicroKernel<float> kernel_f32(); MicroKernel<double> kernel_f64(); }
// C[8 x 32] += the products of 8 A rows read in place and a B panel of bfloat16 pairs, over `taps` groups of
// `pairs` reduction pairs: row i of tap t from rows[t * 8 + i] + first_pair (32-bit pairs), B as [taps * pairs][32]
// pairs, C rows ldc apart (gemm/pair_rows.cpp).
using PairRowsKernel = void (*)(int64_t taps, int64_t pairs, int64_t first_pair, const uint32_t* const* rows,
                                const uint16_t* b, float* c, int64_t ldc);
// n floats rounded to bfloat16 bits (to nearest even; vcvtneps2bf16).
using RoundFn = void (*)(const float* src, int64_t n, uint16_t* dst);
namespace avx512_bf16 {
const Bf16Pairs* pairs_8x32();
MicroKernelSplitFn<float> pairs_as_elements_split();
PairRowsKernel pair_rows_8x32();
RoundFn round_to_bf16_run();
}  // namespace avx512_bf16
// The AMX tile kernel on converted float panels (tiles_16x32) and on pair-element panels (element_tiles_16x32).
namespace amx {  // micro_amx.cpp: tile instructions
const Bf16Pairs* tiles_16x32();
const Bf16Pairs* element_tiles_16x32();
}  // namespace amx
namespace amx_emulation {  // micro_amx_emulated.cpp: the same kernel in C++
const Bf16Pairs* tiles_16x32();
const Bf16Pairs* element_tiles_16x32();
int64_t tile_products();  // tdpbf16ps emulated so far, all threads (tests: the tile kernel ran)
}  // namespace amx_emulation

// The AVX-512 float kernel's packers and blocking with a 16 x 32 tile whose products run on AMX tiles (real, or
// emulated: isa.h's amx_emulated()). Only on Isa::kAmxBf16 with bfloat16 products; its run_split is unset (every
// GEMM block with bf16 set runs the pair kernel).
MicroKernel<float> amx_tile_kernel();

// The AVX-512 float kernel's tile, blocking and transposes, but each 32-bit "float" element a pair of bfloat16
// values and its products bfloat16 pairs (vdpbf16ps; on Isa::kAmxBf16 the tile kernel, 16 x 32, through Bf16Pairs):
// for packers that move pairs as 32-bit elements (gemm_forward_bf16_pairs). Only on ISAs with bfloat16 products.
MicroKernel<float> pair_element_kernel(Isa isa);

}  // namespace fastconv::cpu
