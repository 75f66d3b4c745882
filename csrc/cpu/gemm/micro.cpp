// The micro-kernel table for the ISA in use (isa.h chooses; micro_<isa>.cpp build them).
#include "cpu/gemm/micro.h"

namespace fastconv::cpu {

// bfloat16 products where the thread asked for them (bf16_products()) and the ISA has them; the pair kernel
// shares the AVX-512 float kernel's 8 x 32 tile and blocking, so every packer and driver serves both.
template <>
MicroKernel<float> micro_kernel<float>(Isa isa) {
  MicroKernel<float> uk = pick_for_isa(isa, &scalar::kernel_f32, &avx2::kernel_f32, &avx512::kernel_f32);
  if (!bf16_products_on(isa)) return uk;
  if (isa == Isa::kAmxBf16) return amx_tile_kernel();
  uk.bf16 = avx512_bf16::pairs_8x32();
  return uk;
}
template <>
MicroKernel<double> micro_kernel<double>(Isa isa) {
  return pick_for_isa(isa, &scalar::kernel_f64, &avx2::kernel_f64, &avx512::kernel_f64);
}

MicroKernel<float> pair_element_kernel(Isa isa) {
  if (isa == Isa::kAmxBf16) {  // 128 elements = 256 reduction values per call, as amx_tile_kernel's
    MicroKernel<float> uk = amx_tile_kernel();
    uk.kc = 128;
    uk.bf16 = amx_emulated() ? amx_emulation::element_tiles_16x32() : amx::element_tiles_16x32();
    return uk;
  }
  MicroKernel<float> uk = avx512::kernel_f32();
  uk.run_split = avx512_bf16::pairs_as_elements_split();
  uk.run_strided_a = nullptr;  // (the float kernel's: no pair version)
  return uk;
}

// 16 rows (a full tile) by the float kernel's 32 columns, two 16 x 16 float C tiles; kc = 256 reduction values:
// 8 steps of 32 per call, a 16 KiB B micro-panel of bfloat16 pairs as the float kernel's 128 x 32 floats.
// Not yet measured on an AMX CPU.
MicroKernel<float> amx_tile_kernel() {
  MicroKernel<float> uk = avx512::kernel_f32();
  uk.isa = Isa::kAmxBf16;
  uk.mr = 16, uk.kc = 256;
  uk.run_split = nullptr, uk.run_strided_a = nullptr;
  uk.bf16 = amx_emulated() ? amx_emulation::tiles_16x32() : amx::tiles_16x32();
  return uk;
}

}  // namespace fastconv::cpu
