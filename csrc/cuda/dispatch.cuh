// DType -> element type dispatch for the launchers, and the alignment test that picks vector widths.
#pragma once
#include <cstdint>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "launchers.h"

namespace fastconv {
namespace cuda {

// Calls f(T{}) with T the element type of dt.
template <class F> cudaError_t dispatch_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

inline bool aligned_to(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

}  // namespace cuda
}  // namespace fastconv
