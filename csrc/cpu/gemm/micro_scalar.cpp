// Portable reference micro-kernel: plain C++ for any CPU, and the path tests force to check the others.
#include "cpu/gemm/micro.h"

namespace fastconv::cpu::scalar {
namespace {

template <typename T, int MR, int NR>
void micro_kernel_split(int64_t kc, const T* a, const T* b, T* c, T* c_hi, int64_t ldc, bool accumulate) {
  T acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      T& out = (j < NR / 2 ? c + j : c_hi + (j - NR / 2))[i * ldc];
      out = accumulate ? out + acc[i][j] : acc[i][j];
    }
}

template <typename T, int MR, int NR>
void micro_kernel(int64_t kc, const T* a, const T* b, T* c, int64_t ldc, bool accumulate) {
  micro_kernel_split<T, MR, NR>(kc, a, b, c, c + NR / 2, ldc, accumulate);
}

#include "cpu/gemm/transpose_generic.inc"

}  // namespace

MicroKernel<float> kernel_f32() {
  return {Isa::kScalar, 4, 8, 128, 256, 1024, &micro_kernel<float, 4, 8>, &micro_kernel_split<float, 4, 8>,
          &transpose_panel_generic<float>};
}
MicroKernel<double> kernel_f64() {
  return {Isa::kScalar, 4, 8, 128, 256, 1024, &micro_kernel<double, 4, 8>, &micro_kernel_split<double, 4, 8>,
          &transpose_panel_generic<double>};
}

}  // namespace fastconv::cpu::scalar
