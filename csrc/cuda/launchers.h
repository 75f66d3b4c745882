// Host entry points of the CUDA kernels: raw device pointers, a problem struct and a stream; no torch types,
// so the .cu files build with nvcc alone. Every launcher returns the first launch error (cudaSuccess if none).
// Element type `dtype` applies to all floating tensors of one call; half/bf16 accumulate in fp32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

#include "../conv_params.h"
#include "../pool_params.h"

namespace fastconv {
namespace cuda {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// Sizes each 32-bit index in the kernels must hold; returns nullptr if p fits, else a reason for the error.
const char* conv_unsupported_reason(const ConvParams& p);
const char* pool_unsupported_reason(const PoolParams& p);

// out = conv2d(in, w) + bias (bias may be nullptr). Layout per p.channels_last, see conv_params.h.
cudaError_t conv2d_forward(DType dtype, const void* in, const void* w, const void* bias, void* out,
                           const ConvParams& p, cudaStream_t stream);

// grad_in = d out / d in. Output-stationary gather over grad_out: no atomics.
cudaError_t conv2d_backward_input(DType dtype, const void* grad_out, const void* w, void* grad_in,
                                  const ConvParams& p, cudaStream_t stream);

// grad_w = d out / d w. Split-K into a shape-determined number of chunks, each written to `workspace`,
// then summed in a fixed order: deterministic without atomics. workspace needs
// conv2d_backward_weight_workspace_bytes(dtype, p) bytes (0: may be nullptr).
size_t conv2d_backward_weight_workspace_bytes(DType dtype, const ConvParams& p);
cudaError_t conv2d_backward_weight(DType dtype, const void* grad_out, const void* in, void* grad_w, void* workspace,
                                   const ConvParams& p, cudaStream_t stream);

// grad_bias[k] = sum over n, p, q of grad_out. Reads p.N, p.K, p.P, p.Q, p.channels_last only.
size_t conv2d_backward_bias_workspace_bytes(DType dtype, const ConvParams& p);
cudaError_t conv2d_backward_bias(DType dtype, const void* grad_out, void* grad_bias, void* workspace,
                                 const ConvParams& p, cudaStream_t stream);

// Tensor-core implicit GEMM (conv_tc*.cu): mma.sync with fp16/bf16 operands (fp32 accumulate), or tf32 operands
// for fp32 tensors when allow_tf32; ldmatrix from swizzled shared memory fed by multi-stage cp.async pipelines.
// Deterministic (split-K weight gradient summed in fixed order, as above). conv2d_tc_supported says whether the
// problem fits (dtype, channels_last layout, channel counts multiple of the 16-byte vector). Compile-checked only
// so far: ops_cuda.cpp takes this path only when FASTCONV_TENSOR_CORES=1 is set in the environment.
bool conv2d_tc_supported(DType dtype, const ConvParams& p, bool allow_tf32);
// nullptr when the tensor-core kernels of this build can run on the current GPU (sm_80+ code was compiled for
// it), else why not. Their instructions compile to a trap below sm_80, so such a build must not launch them.
const char* tc_code_for_device();
cudaError_t conv2d_forward_tc(DType dtype, const void* in, const void* w, const void* bias, void* out,
                              const ConvParams& p, bool allow_tf32, cudaStream_t stream);
cudaError_t conv2d_backward_input_tc(DType dtype, const void* grad_out, const void* w, void* grad_in,
                                     const ConvParams& p, bool allow_tf32, cudaStream_t stream);
size_t conv2d_backward_weight_tc_workspace_bytes(DType dtype, const ConvParams& p);
cudaError_t conv2d_backward_weight_tc(DType dtype, const void* grad_out, const void* in, void* grad_w,
                                      void* workspace, const ConvParams& p, bool allow_tf32, cudaStream_t stream);

// out, indices (int64, h * W + w within the plane). Ties: first max in window order; NaN propagates.
cudaError_t max_pool2d_forward(DType dtype, const void* in, void* out, int64_t* indices, const PoolParams& p,
                               cudaStream_t stream);

// grad_in from grad_out and indices as a gather (each input element sums, in output order, the outputs whose
// index names it). Only N, C, H, W, P, Q, channels_last of p are read; the pooling window is bounded from
// the indices themselves (integer atomics min/max, order-independent), kept in `workspace`.
size_t max_pool2d_backward_workspace_bytes(const PoolParams& p);
cudaError_t max_pool2d_backward(DType dtype, const void* grad_out, const int64_t* indices, void* grad_in,
                                void* workspace, const PoolParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastconv
