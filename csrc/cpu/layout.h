// Layout changes between NCHW and NHWC copies of whole images, for the kernels that read one layout through a
// copy in the other (direct/ for thin channels_last convs, gemm/few_pixels.cpp for NCHW input on small maps).
#pragma once

#include <algorithm>
#include <cstdint>

#include "conv_params.h"
#include "cpu/parallel.h"

namespace fastconv::cpu {

// [n][a][b] -> [n][b][a] for N matrices of A x B: NHWC <-> NCHW with (A, B) = (HW, C) or (C, HW).
template <typename T>
void transpose_images(const T* src, T* dst, int64_t N, int64_t A, int64_t B) {
  constexpr int64_t kBlock = 32;  // rows of s per task: its stores to d are runs of 32 floats (lines)
  const int64_t a_blocks = ceil_div(A, kBlock);
  parallel_for(0, N * a_blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / a_blocks, a0 = (t % a_blocks) * kBlock, a1 = std::min(A, a0 + kBlock);
      // Local restrict pointers and sizes: through the lambda's captures, the compiled loop loaded and stored
      // its pointers in memory around every element.
      const T* __restrict s = src + n * A * B;
      T* __restrict d = dst + n * A * B;
      const int64_t a_len = a1 - a0, rows = A, cols = B;
      // Writes run along a: with b in the inner loop, 32 stores per row of s went to addresses A floats apart,
      // for A = H * W a multiple of 4 KiB - one L1 set, evicted before the next row filled their lines.
      for (int64_t b = 0; b < cols; ++b)
        for (int64_t i = 0; i < a_len; ++i) d[b * rows + a0 + i] = s[(a0 + i) * cols + b];
    }
  });
}

}  // namespace fastconv::cpu
