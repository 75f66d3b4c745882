// AVX-512 micro-kernels. Only this file is compiled for AVX-512; it includes no torch or standard-library
// headers, so no inline function built here can be picked by the linker for code that runs on other CPUs.
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#include <immintrin.h>

#include "cpu/gemm/micro.h"

namespace fastconv::cpu::avx512 {
namespace {

struct VecF32 {
  using T = float;
  using Reg = __m512;
  static constexpr int W = 16;
  static Reg zero() { return _mm512_setzero_ps(); }
  static Reg load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, Reg v) { _mm512_storeu_ps(p, v); }
  static Reg broadcast(const T* p) { return _mm512_set1_ps(*p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
};

struct VecF64 {
  using T = double;
  using Reg = __m512d;
  static constexpr int W = 8;
  static Reg zero() { return _mm512_setzero_pd(); }
  static Reg load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, Reg v) { _mm512_storeu_pd(p, v); }
  static Reg broadcast(const T* p) { return _mm512_set1_pd(*p); }
  static Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_pd(a, b, c); }
  static Reg add(Reg a, Reg b) { return _mm512_add_pd(a, b); }
};

#include "cpu/gemm/micro_body.inc"
#include "cpu/gemm/transpose_generic.inc"
#include "cpu/gemm/transpose_avx.inc"

}  // namespace

// 8 x 32 floats: 16 zmm accumulators, 2 B loads and 8 broadcasts per 16 FMAs; 8 rows divide every
// channel count ResNet uses, so NCHW tiles over output channels carry no padding. kc = 128: the B micro-panel
// (128 x 32 floats, 16 KiB) keeps half of a 32 KiB L1 free for the A panels streaming past it (256 filled it).
MicroKernel<float> kernel_f32() {
  return {Isa::kAvx512, 8, 32, 256, 128, 2048,
          &micro_kernel_split<VecF32, 8, 2>, &transpose_panel_f32, &micro_kernel_strided_a<VecF32, 8, 2>};
}
MicroKernel<double> kernel_f64() {
  return {Isa::kAvx512, 8, 16, 128, 256, 2048,
          &micro_kernel_split<VecF64, 8, 2>, &transpose_panel_generic<double>, &micro_kernel_strided_a<VecF64, 8, 2>};
}

}  // namespace fastconv::cpu::avx512
