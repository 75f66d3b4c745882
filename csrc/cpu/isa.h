// Which instruction set the CPU kernels run: cpuid at run time, never -march=native.
//
// Every kernel family (GEMM micro-kernels, direct rows, depthwise rows, Winograd lane transforms, pool rows)
// compiles its inner loops once per ISA, in files of its own that carry a `#pragma GCC target` and include no
// torch or standard-library headers before it (so no inline function built for a wider ISA can be picked by the
// linker for code that runs on other CPUs). Each such file exports a table of function pointers from a
// namespace named after its ISA; `pick_for_isa` is the one place that chooses among them.
#pragma once

namespace fastconv::cpu {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The best ISA this CPU (and OS) supports, unless FASTCONV_ISA=scalar|avx2|avx512 forces one (read at every
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
    case Isa::kAvx512: return avx512();
    case Isa::kAvx2: return avx2();
    case Isa::kScalar: break;
  }
  return scalar();
}

}  // namespace fastconv::cpu
