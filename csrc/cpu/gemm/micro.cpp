// The micro-kernel table for the ISA in use (isa.h chooses; micro_<isa>.cpp build them).
#include "cpu/gemm/micro.h"

namespace fastconv::cpu {

template <>
MicroKernel<float> micro_kernel<float>(Isa isa) {
  return pick_for_isa(isa, &scalar::kernel_f32, &avx2::kernel_f32, &avx512::kernel_f32);
}
template <>
MicroKernel<double> micro_kernel<double>(Isa isa) {
  return pick_for_isa(isa, &scalar::kernel_f64, &avx2::kernel_f64, &avx512::kernel_f64);
}

}  // namespace fastconv::cpu
