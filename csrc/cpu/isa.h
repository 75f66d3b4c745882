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
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

// The best ISA this CPU (and OS) supports, unless FASTCONV_ISA=scalar|avx2|avx512|avx512_bf16 forces one (read at every
// call, so tests can force each path in turn); forcing an ISA the CPU lacks throws std::invalid_argument
// instead of faulting.
Isa active_isa();
const char* isa_name(Isa isa);
// A short description of the CPU: model name and the ISAs it supports.
const char* cpu_description();

// The table one family built for `isa`: pick_for_isa(isa, scalar::f, avx2::f, avx512::f).
template <typename Table>
Table pick_for_isa(Isa isa, Table (*scalar)(), Table (*avx2)(), Table (*avx512)()) {
  switch (isa) {
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
inline bool has_bf16_products(Isa isa) { return isa == Isa::kAvx512Bf16; }
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
