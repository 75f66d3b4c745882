// Portable reference micro-kernel: plain C++ for any CPU, and the path tests force to check the others.
#include "cpu/gemm/micro.h"

namespace fastconv::cpu::scalar {
namespace {

template <typename T, int MR, int NR>
void micro_kernel_strided_a(int64_t kc, const T* a, int64_t lda, const T* b, T* c, T* c_hi, int64_t ldc,
                            bool accumulate) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k, a += lda, b += NR)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      T& out = (j < NR / 2 ? c + j : c_hi + (j - NR / 2))[i * ldc];
      out = accumulate ? out + acc[i][j] : acc[i][j];
    }
}

template <typename T, int MR, int NR>
void micro_kernel_split(int64_t kc, const T* a, const T* b, T* c, T* c_hi, int64_t ldc, bool accumulate) {
  micro_kernel_strided_a<T, MR, NR>(kc, a, MR, b, c, c_hi, ldc, accumulate);
}

#include "cpu/gemm/transpose_generic.inc"

}  // namespace

MicroKernel<float> kernel_f32() {
  return {Isa::kScalar, 4, 8, 128, 256, 1024,
          &micro_kernel_split<float, 4, 8>, &transpose_panel_generic<float>, &micro_kernel_strided_a<float, 4, 8>};
}
MicroKernel<double> kernel_f64() {
  return {Isa::kScalar, 4, 8, 128, 256, 1024,
          &micro_kernel_split<double, 4, 8>, &transpose_panel_generic<double>, &micro_kernel_strided_a<double, 4, 8>};
}

}  // namespace fastconv::cpu::scalar
