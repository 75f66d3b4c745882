// The bfloat16 pair micro-kernel (AVX512-BF16: vdpbf16ps) and the panel converter that feeds it. Compiled alone
// for that ISA; no torch or standard-library headers here (see micro_avx512.cpp for why).
//
// vdpbf16ps multiplies 16 pairs of bfloat16 and adds both products to 16 float accumulators: twice the float
// FMA's multiplies per instruction. Its operands hold pairs of consecutive reduction rows, so the float panels
// the packers write are converted to pairs once per block (to_pairs) rather than packed anew in bfloat16.
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx512bf16,avx2,fma")
#include <immintrin.h>

#include "cpu/gemm/micro.h"

namespace fastconv::cpu::avx512_bf16 {
namespace {

// 8 x 32 floats, as the AVX-512 float kernel: 16 zmm accumulators; per pair of reduction rows 2 B loads and 8
// broadcasts of an A pair feed 16 vdpbf16ps.
void pairs_kernel_8x32(int64_t pairs, const uint16_t* a, const uint16_t* b, float* c, float* c_hi, int64_t ldc,
                       bool accumulate) {
  constexpr int MR = 8;
  __m512 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 32);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int pair;
      __builtin_memcpy(&pair, a + 2 * i, sizeof(pair));
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
    }
    a += 2 * MR;
    b += 64;
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* lo = c + i * ldc;
    float* hi = c_hi + i * ldc;
    _mm512_storeu_ps(lo, accumulate ? _mm512_add_ps(acc[i][0], _mm512_loadu_ps(lo)) : acc[i][0]);
    _mm512_storeu_ps(hi, accumulate ? _mm512_add_ps(acc[i][1], _mm512_loadu_ps(hi)) : acc[i][1]);
  }
}

// Rows k and k + 1 of a float panel, 8 columns at a time: one conversion makes [row k, row k + 1] as 16
// bfloat16, one permute interleaves them into the 8 pairs.
void to_pairs(const float* panel, int64_t klen, int64_t width, uint16_t* out) {
  const __m256i interleave = _mm256_setr_epi16(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  for (int64_t k = 0; k < klen; k += 2) {
    const float* r0 = panel + k * width;
    const float* r1 = r0 + width;
    const bool second = k + 1 < klen;
    for (int64_t i = 0; i < width; i += 8) {
      const __m256 lo = _mm256_loadu_ps(r0 + i), hi = second ? _mm256_loadu_ps(r1 + i) : _mm256_setzero_ps();
      const __m256i both = (__m256i)_mm256_cvtne2ps_pbh(hi, lo);  // elements 0-7: row k, 8-15: row k + 1
      _mm256_storeu_si256((__m256i*)(out + (k / 2) * width * 2 + i * 2), _mm256_permutexvar_epi16(interleave, both));
    }
  }
}

constexpr Bf16Pairs kPairs8x32{&pairs_kernel_8x32, &to_pairs};

// The same kernel on panels of 32-bit elements that are each a pair (kc counts pairs).
void pairs_as_elements_split_8x32(int64_t kc, const float* a, const float* b, float* c, float* c_hi, int64_t ldc,
                                  bool accumulate) {
  pairs_kernel_8x32(kc, reinterpret_cast<const uint16_t*>(a), reinterpret_cast<const uint16_t*>(b), c, c_hi, ldc,
                    accumulate);
}

// The 8 x 32 tile again, its A rows read in place: row i's pairs for tap t from rows[t * 8 + i] + first_pair (an
// NHWC pixel's channel pairs, or a row of zeros for a tap in the padding), B as [taps * pairs][32] pairs. C (ldc
// apart) is loaded first and the products added onto it. No A panel is packed: packing NHWC im2col rows by
// transposition was a quarter of the stride-2 pair GEMM's time.
void pair_rows_kernel_8x32(int64_t taps, int64_t pairs, int64_t first_pair, const uint32_t* const* rows,
                           const uint16_t* b, float* c, int64_t ldc) {
  constexpr int MR = 8;
  __m512 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc[i][0] = _mm512_loadu_ps(c + i * ldc), acc[i][1] = _mm512_loadu_ps(c + i * ldc + 16);
  for (int64_t t = 0; t < taps; ++t, rows += MR) {
    const uint32_t* r[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) r[i] = rows[i] + first_pair;
    for (int64_t p = 0; p < pairs; ++p) {
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 32);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(r[i][p]));
        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
      }
      b += 64;
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) _mm512_storeu_ps(c + i * ldc, acc[i][0]), _mm512_storeu_ps(c + i * ldc + 16, acc[i][1]);
}

// vcvtneps2bf16 rounds to nearest even as round_to_bf16 does, but reads float denormals (under 2^-126) as zero,
// where round_to_bf16 keeps them as bfloat16 denormals.
void round_run(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256((__m256i*)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(dst + i, tail, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(tail, src + i)));
  }
}

}  // namespace

const Bf16Pairs* pairs_8x32() { return &kPairs8x32; }
RoundFn round_to_bf16_run() { return &round_run; }
PairRowsKernel pair_rows_8x32() { return &pair_rows_kernel_8x32; }
MicroKernelSplitFn<float> pairs_as_elements_split() { return &pairs_as_elements_split_8x32; }

}  // namespace fastconv::cpu::avx512_bf16
