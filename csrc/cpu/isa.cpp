// Run-time ISA choice: cpuid (through GCC's __builtin_cpu_supports, which also checks that the OS saves the
// wider registers), overridable with FASTCONV_ISA so tests can force every path.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

#include "cpu/isa.h"

namespace fastconv::cpu {

namespace {

bool cpu_has(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && cpu_has(Isa::kAvx2);
    case Isa::kAvx512Bf16:
      return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") && cpu_has(Isa::kAvx512);
  }
  return false;
}

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
  }
  return "unknown";
}

Isa active_isa() {
  const char* forced = std::getenv("FASTCONV_ISA");
  if (forced == nullptr || *forced == '\0') return best_isa();
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16}) {
    if (std::strcmp(forced, isa_name(isa)) != 0) continue;
    if (!cpu_has(isa))
      throw std::invalid_argument(std::string("FASTCONV_ISA=") + forced + " but this CPU does not support it");
    return isa;
  }
  throw std::invalid_argument(std::string("FASTCONV_ISA must be one of scalar, avx2, avx512, avx512_bf16; got '") +
                              forced + "'");
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
    std::string isas;
    for (Isa isa : {Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2})
      if (cpu_has(isa)) isas += std::string(isas.empty() ? "" : ",") + isa_name(isa);
    return model + " [" + (isas.empty() ? "no avx2" : isas) + "]";
  }();
  return text.c_str();
}

namespace {
thread_local bool thread_bf16_products = false;
}  // namespace

bool bf16_products() { return thread_bf16_products; }
ScopedBf16Products::ScopedBf16Products(bool on) : saved_(thread_bf16_products) { thread_bf16_products = on; }
ScopedBf16Products::~ScopedBf16Products() { thread_bf16_products = saved_; }

}  // namespace fastconv::cpu
