// The micro-kernel table for the ISA in use (isa.h chooses; micro_<isa>.cpp build them).
#include "cpu/gemm/micro.h"

namespace fastconv::cpu {

// bfloat16 products where the thread asked for them (bf16_products()) and the ISA has them; the pair kernel
// shares the AVX-512 float kernel's 8 x 32 tile and blocking, so every packer and driver serves both.
template <>
MicroKernel<float> micro_kernel<float>(Isa isa) {
  MicroKernel<float> uk = pick_for_isa(isa, &scalar::kernel_f32, &avx2::kernel_f32, &avx512::kernel_f32);
  if (bf16_products_on(isa)) uk.bf16 = avx512_bf16::pairs_8x32();
  return uk;
}
template <>
MicroKernel<double> micro_kernel<double>(Isa isa) {
  return pick_for_isa(isa, &scalar::kernel_f64, &avx2::kernel_f64, &avx512::kernel_f64);
}

MicroKernel<float> pair_element_kernel() {
  MicroKernel<float> uk = avx512::kernel_f32();
  uk.run_split = avx512_bf16::pairs_as_elements_split();
  uk.run_strided_a = nullptr;  // (the float kernel's: no pair version)
  return uk;
}

}  // namespace fastconv::cpu
