// Run-time ISA choice: cpuid (through GCC's __builtin_cpu_supports, which also checks that the OS saves the
// wider registers), overridable with FASTCONV_ISA so tests can force every path.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "cpu/isa.h"

namespace fastconv::cpu {

namespace {

// AMX tiles: cpuid, and Linux's permission for the tile data state, asked once per process (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; without it the first tile instruction faults).
bool cpu_has_amx_tiles() {
  static const bool granted = [] {
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) return false;
#if defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;  // (no way written here to ask another OS for the tile state)
#endif
  }();
  return granted;
}

bool amx_emulation_asked() {
  const char* env = std::getenv("FASTCONV_AMX_EMULATION");
  return env != nullptr && std::strcmp(env, "1") == 0;
}

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && cpu_has(Isa::kAvx2);
    case Isa::kAvx512Bf16:
      return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") && cpu_has(Isa::kAvx512);
    case Isa::kAmxBf16: return cpu_has(Isa::kAvx512Bf16) && (cpu_has_amx_tiles() || amx_emulation_asked());
  }
  return false;
}

// Not kAmxBf16: isa.h says why.
Isa best_isa() {
  static const Isa best = cpu_has(Isa::kAvx512Bf16) ? Isa::kAvx512Bf16
                          : cpu_has(Isa::kAvx512)     ? Isa::kAvx512
                          : cpu_has(Isa::kAvx2)       ? Isa::kAvx2
                                                      : Isa::kScalar;
  return best;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Bf16: return "avx512_bf16";
    case Isa::kAmxBf16: return "amx_bf16";
  }
  return "unknown";
}

Isa active_isa() {
  const char* forced = std::getenv("FASTCONV_ISA");
  if (forced == nullptr || *forced == '\0') return best_isa();
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmxBf16}) {
    if (std::strcmp(forced, isa_name(isa)) != 0) continue;
    if (!cpu_has(isa))
      throw std::invalid_argument(std::string("FASTCONV_ISA=") + forced + " but this CPU does not support it");
    return isa;
  }
  throw std::invalid_argument(
      std::string("FASTCONV_ISA must be one of scalar, avx2, avx512, avx512_bf16, amx_bf16; got '") + forced + "'");
}

const char* cpu_description() {
  static const std::string text = [] {
    std::string model = "unknown CPU";
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);) {
      if (line.rfind("model name", 0) == 0) {
        model = line.substr(line.find(':') + 2);
        break;
      }
    }
    std::string isas = cpu_has_amx_tiles() && cpu_has(Isa::kAvx512Bf16) ? "amx_bf16" : "";
    for (Isa isa : {Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2})
      if (cpu_has(isa)) isas += std::string(isas.empty() ? "" : ",") + isa_name(isa);
    return model + " [" + (isas.empty() ? "no avx2" : isas) + "]";
  }();
  return text.c_str();
}

bool amx_emulated() { return !cpu_has_amx_tiles() && amx_emulation_asked(); }

namespace {
thread_local bool thread_bf16_products = false;
}  // namespace

bool bf16_products() { return thread_bf16_products; }
ScopedBf16Products::ScopedBf16Products(bool on) : saved_(thread_bf16_products) { thread_bf16_products = on; }
ScopedBf16Products::~ScopedBf16Products() { thread_bf16_products = saved_; }

}  // namespace fastconv::cpu
