// AVX2 + FMA micro-kernels (Haswell and later, Zen). Compiled alone for that ISA; no torch or standard-library
// headers here (see gemm_avx512.cpp for why).
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "cpu/gemm/micro.h"

namespace fastconv::cpu::avx2 {
namespace {

struct VecF32 {
  using T = float;
  using Reg = __m256;
  static constexpr int W = 8;
  static Reg zero() { return _mm256_setzero_ps(); }
  static Reg load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, Reg v) { _mm256_storeu_ps(p, v); }
  static Reg broadcast(const T* p) { return _mm256_broadcast_ss(p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
};

struct VecF64 {
  using T = double;
  using Reg = __m256d;
  static constexpr int W = 4;
  static Reg zero() { return _mm256_setzero_pd(); }
  static Reg load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, Reg v) { _mm256_storeu_pd(p, v); }
  static Reg broadcast(const T* p) { return _mm256_broadcast_sd(p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm256_add_pd(a, b); }
};

#include "cpu/gemm/micro_body.inc"
#include "cpu/gemm/transpose_generic.inc"
#include "cpu/gemm/transpose_avx.inc"

}  // namespace

// The classic Haswell 6 x 16: 12 ymm accumulators + 2 B registers + 1 broadcast of the 16 available.
MicroKernel<float> kernel_f32() {
  return {Isa::kAvx2, 6, 16, 144, 256, 2048,
          &micro_kernel_split<VecF32, 6, 2>, &transpose_panel_f32, &micro_kernel_strided_a<VecF32, 6, 2>};
}
MicroKernel<double> kernel_f64() {
  return {Isa::kAvx2, 6, 8, 96, 256, 2048,
          &micro_kernel_split<VecF64, 6, 2>, &transpose_panel_generic<double>, &micro_kernel_strided_a<VecF64, 6, 2>};
}

}  // namespace fastconv::cpu::avx2
