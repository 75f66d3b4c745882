// Small pieces every CUDA kernel file shares: magic-number division, element conversion, vector loads.
// FastDiv* and the host helpers are plain C++ when not compiled by nvcc, so a CPU harness can check them.
#pragma once
#include <cstdint>
#include <type_traits>

// FASTCONV_EMULATE: a CPU test harness supplies the CUDA built-ins (threadIdx, __syncthreads, ...) and runs the
// kernels on host threads; it is never part of the real build.
#if defined(__CUDACC__) || defined(FASTCONV_EMULATE)
#define FC_KERNELS 1
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#if defined(FASTCONV_EMULATE)
#include FASTCONV_EMULATE
#endif
#define FC_HD __host__ __device__ __forceinline__
#define FC_DEV __device__ __forceinline__
#if defined(FASTCONV_EMULATE)
#define FC_DYNAMIC_SMEM(name) static __attribute__((aligned(128))) unsigned char name[65536]
#else
#define FC_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif
#else
#define FC_HD inline
#endif

#include "../conv_params.h"

namespace fastconv {
namespace cuda {

FC_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

FC_HD uint64_t mulhi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
}

// n / d for 0 <= n < 2^31 and 1 <= d < 2^31 by multiply-high and shift (the round-up method torch's
// IntDivider uses): shift = ceil(log2 d), mul = floor(2^32 (2^shift - d) / d) + 1, q = (mulhi(n, mul) + n) >> shift.
struct FastDiv32 {
  uint32_t d, mul, shift;
  FastDiv32() : d(1), mul(1), shift(0) {}
  explicit FastDiv32(int64_t divisor) {
    d = static_cast<uint32_t>(divisor);
    shift = 0;
    while (shift < 32 && (uint64_t{1} << shift) < d) ++shift;
    mul = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  FC_HD int div(int n) const {
    const uint32_t u = static_cast<uint32_t>(n);
    return static_cast<int>((mulhi32(u, mul) + u) >> shift);
  }
  // quotient and remainder
  FC_HD int divmod(int n, int& r) const {  // wraps harmlessly (unsigned) for out-of-range n
    const uint32_t u = static_cast<uint32_t>(n);
    const uint32_t q = (mulhi32(u, mul) + u) >> shift;
    r = static_cast<int>(u - q * d);
    return static_cast<int>(q);
  }
};

// Same for 0 <= n < 2^63, 1 <= d < 2^63 (used where a flattened index such as n*P*Q may pass 2^31).
struct FastDiv64 {
  uint64_t d, mul;
  uint32_t shift;
  FastDiv64() : d(1), mul(1), shift(0) {}
  explicit FastDiv64(int64_t divisor) {
    d = static_cast<uint64_t>(divisor);
    shift = 0;
    while (shift < 64 && (static_cast<unsigned __int128>(1) << shift) < d) ++shift;
    const unsigned __int128 one = 1;
    mul = static_cast<uint64_t>(((one << 64) * ((one << shift) - d)) / d + 1);
  }
  FC_HD int64_t div(int64_t n) const {
    const uint64_t u = static_cast<uint64_t>(n);
    return static_cast<int64_t>((mulhi64(u, mul) + u) >> shift);
  }
  FC_HD int64_t divmod(int64_t n, int64_t& r) const {
    const uint64_t u = static_cast<uint64_t>(n);
    const uint64_t q = (mulhi64(u, mul) + u) >> shift;
    r = static_cast<int64_t>(u - q * d);
    return static_cast<int64_t>(q);
  }
};

// Kernels index each spatial size, channel count, kernel extent and reduction length with 32-bit ints and every
// global offset with 64-bit ones; these limits keep the 32-bit sums (h0 + r * dil, red + BK, ...) from wrapping.
constexpr int64_t kMaxDim32 = int64_t{1} << 29;

}  // namespace cuda
}  // namespace fastconv

#if defined(FC_KERNELS)
namespace fastconv {
namespace cuda {

#if !defined(FASTCONV_EMULATE)
// kernel<<<grid, block, 0, stream>>>(args...), then the launch error.
template <typename... KArgs, typename... Args>
inline cudaError_t launch_kernel_smem(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                      cudaStream_t stream, const Args&... args) {
  kernel<<<grid, block, smem, stream>>>(static_cast<KArgs>(args)...);
  return cudaGetLastError();
}
template <typename... KArgs, typename... Args>
inline cudaError_t launch_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t stream,
                                 const Args&... args) {
  return launch_kernel_smem(kernel, grid, block, 0, stream, args...);
}
#endif

// Accumulator type: fp32 for fp32/fp16/bf16 elements, fp64 for fp64.
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

template <typename Acc, typename T> FC_DEV Acc to_acc(T v) { return static_cast<Acc>(v); }
template <> FC_DEV float to_acc<float, __half>(__half v) { return __half2float(v); }
template <> FC_DEV float to_acc<float, __nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T, typename Acc> FC_DEV T from_acc(Acc v) { return static_cast<T>(v); }
template <> FC_DEV __half from_acc<__half, float>(float v) { return __float2half_rn(v); }
template <> FC_DEV __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) { return __float2bfloat16_rn(v); }

// Raw integer carrier of BYTES bytes, loaded in one instruction through the read-only path.
template <int BYTES> struct RawVec;
template <> struct RawVec<2> { using type = unsigned short; };
template <> struct RawVec<4> { using type = unsigned int; };
template <> struct RawVec<8> { using type = uint2; };
template <> struct RawVec<16> { using type = uint4; };

// Reads V consecutive elements at p into out (as Acc) when pred, else zeros; p must be V * sizeof(T) aligned.
// A predicated load: no branch in the generated code.
template <typename T, int V, typename Acc>
FC_DEV void load_vec(const T* p, bool pred, Acc (&out)[V]) {
  using Raw = typename RawVec<static_cast<int>(sizeof(T)) * V>::type;
  union { Raw raw; T v[V]; } u;
  u.raw = Raw{};
  if (pred) u.raw = __ldg(reinterpret_cast<const Raw*>(p));
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = to_acc<Acc>(u.v[i]);
}

}  // namespace cuda
}  // namespace fastconv
#endif
