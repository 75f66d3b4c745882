// The small-K direct conv driver: applicability, weight layout, padded input rows, threads (see small_k.h).
#include "small_k.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace fastconv::cpu {

bool small_k_applies(const ConvParams& p) {
  // stride_w 1: each tap of an output row is one contiguous run of its padded input row.
  return !p.channels_last && p.groups == 1 && p.K <= kSmallKMax && p.stride_w == 1;
}

SmallKRow small_k_row(Isa isa) {
  return isa == Isa::kAvx512 ? avx512::small_k_row() : isa == Isa::kAvx2 ? avx2::small_k_row() : scalar::small_k_row();
}

void small_k_forward(const ConvParams& p, const float* x, const float* w, const float* bias, float* y) {
  const SmallKRow row = small_k_row(active_isa());
  std::vector<float> wp(static_cast<size_t>(p.C * p.R * p.S * p.K));  // [c][r][s][k]: k contiguous
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s) wp[((c * p.R + r) * p.S + s) * p.K + k] = w[p.weight_offset(k, c, r, s)];
  const int64_t width = padded_row_width(p);
  // Tasks of several output rows of one image: their input rows are padded once and read by up to R output
  // rows each. Whole images when there are enough of them to share out.
  const int64_t rows = p.N >= 2 * at::get_num_threads() ? p.P : std::max<int64_t>(1, p.P / (2 * at::get_num_threads()));
  const int64_t blocks = (p.P + rows - 1) / rows;
  at::parallel_for(0, p.N * blocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> padded;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * rows, p1 = std::min(p.P, p0 + rows);
      const int64_t first = std::max<int64_t>(0, p.in_row(p0, 0)), last = std::min(p.H - 1, p.in_row(p1 - 1, p.R - 1));
      const int64_t count = std::max<int64_t>(0, last - first + 1);
      padded.assign(static_cast<size_t>(p.C * count * width), 0.0f);
      // Padded column i holds input column i - pad_w (pad_w < 0 for some grad-input problems: then the row's
      // first columns are never read).
      const int64_t i0 = std::max<int64_t>(0, p.pad_w), i1 = std::min(width, p.W + p.pad_w);
      for (int64_t c = 0; c < p.C; ++c)
        for (int64_t h = first; h <= last && i0 < i1; ++h)
          std::copy_n(x + p.input_offset(n, c, h, i0 - p.pad_w), i1 - i0,
                      padded.data() + (c * count + h - first) * width + i0);
      const PaddedRows in{padded.data(), count * width, first};
      for (int64_t op = p0; op < p1; ++op) row(p, in, wp.data(), bias, y, n, op);
    }
  });
}

}  // namespace fastconv::cpu
