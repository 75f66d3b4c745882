// Which instruction set the CPU kernels run: cpuid at run time, never -march=native.
//
// Every kernel family (GEMM micro-kernels, direct rows, depthwise rows, Winograd lane transforms, pool rows)
// compiles its inner loops once per ISA, in files of its own that carry a `#pragma GCC target` and include no
// torch or standard-library headers before it (so no inline function built for a wider ISA can be picked by the
// linker for code that runs on other CPUs). Each such file exports a table of function pointers from a
// namespace named after its ISA; `pick_for_isa` is the one place that chooses among them.
#pragma once

namespace fastconv::cpu {

// kAvx512Bf16: AVX-512 plus its bfloat16 dot product (vdpbf16ps; Intel Cooper Lake and Sapphire Rapids on,
// AMD Zen 4 on). The float32 families run their AVX-512 code there; bfloat16 GEMMs multiply in bfloat16.
// kAmxBf16: kAvx512Bf16 plus AMX tiles (tdpbf16ps; Intel Sapphire Rapids on): the GEMMs that multiply float
// panels converted to bfloat16 run on tiles (gemm/micro_amx.inc), everything else as kAvx512Bf16.
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3, kAmxBf16 = 4 };

// The best ISA this CPU (and OS) supports, unless FASTCONV_ISA=scalar|avx2|avx512|avx512_bf16|amx_bf16 forces one
// (read at every call, so tests can force each path in turn); forcing an ISA the CPU lacks throws
// std::invalid_argument instead of faulting.
// amx_bf16 is never chosen unasked: its tile kernel has not yet run on an AMX CPU (only under the emulation below),
// so it stays off until FASTCONV_ISA=amx_bf16 asks for it.
Isa active_isa();
// FASTCONV_AMX_EMULATION=1 on a CPU with AVX512-BF16 but no AMX: FASTCONV_ISA=amx_bf16 is allowed and its tile
// instructions run as C++ (gemm/micro_amx_emulated.cpp), slowly, so tests check the AMX path's layouts and
// blocking on any such machine. Read at every call; ignored where the CPU has AMX.
bool amx_emulated();
const char* isa_name(Isa isa);
// A short description of the CPU: model name and the ISAs it supports.
const char* cpu_description();

// The table one family built for `isa`: pick_for_isa(isa, scalar::f, avx2::f, avx512::f).
template <typename Table>
Table pick_for_isa(Isa isa, Table (*scalar)(), Table (*avx2)(), Table (*avx512)()) {
  switch (isa) {
    case Isa::kAmxBf16:
    case Isa::kAvx512Bf16:
    case Isa::kAvx512: return avx512();
    case Isa::kAvx2: return avx2();
    case Isa::kScalar: break;
  }
  return scalar();
}

// Whether GEMMs on bfloat16 operands multiply in bfloat16 on this thread (float accumulators): set by the
// binding around a kernel call whose inputs are bfloat16, when the ISA in use has the instruction; read by
// micro_kernel<float>() at the kernels' entry (on the calling thread, before any parallel region).
// (Nothing may read it inside a parallel region: chunks on worker threads would see it unset.)
bool bf16_products();
// Whether `isa` multiplies bfloat16 in bfloat16 (vdpbf16ps), and whether this thread does so now.
inline bool has_bf16_products(Isa isa) { return isa == Isa::kAvx512Bf16 || isa == Isa::kAmxBf16; }
inline bool bf16_products_on(Isa isa) { return has_bf16_products(isa) && bf16_products(); }
class ScopedBf16Products {
 public:
  explicit ScopedBf16Products(bool on);
  ~ScopedBf16Products();
  ScopedBf16Products(const ScopedBf16Products&) = delete;
  ScopedBf16Products& operator=(const ScopedBf16Products&) = delete;

 private:
  bool saved_;
};

}  // namespace fastconv::cpu
