// max_pool2d forward (with argmax indices) and backward. Bandwidth-bound, so the work is one streaming pass:
// NCHW walks each plane's windows; NHWC keeps the channel loop innermost, where it vectorises.
// Semantics are torch's: a window's first maximum wins, a NaN wins over everything (the last NaN seen),
// and a window of -inf reports its first in-bounds element.
#include "maxpool2d.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <limits>
#include <vector>

namespace fastconv::cpu {

namespace {

// In-bounds window of output index o along one dim: first input index, one past the last, and the step.
struct Window {
  int64_t begin, end;
};
inline Window window(int64_t o, int64_t stride, int64_t pad, int64_t kernel, int64_t dil, int64_t in) {
  int64_t begin = o * stride - pad;
  const int64_t end = std::min(begin + (kernel - 1) * dil + 1, in);
  while (begin < 0) begin += dil;
  return {begin, end};
}

// Where a window's scan starts: -inf for floating types, the lowest value for integers (as torch).
template <typename T>
T lowest() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
}

// NaN test that is false for integers and vectorises for floats.
template <typename T>
bool is_nan(T v) {
  return v != v;
}

template <typename T, typename Pos>
void max_pool2d_forward_nhwc(const PoolParams& p, const T* x, T* y, int64_t* indices) {
  at::parallel_for(0, p.N * p.P, 1, [&](int64_t r0, int64_t r1) {
    std::vector<T> best_val(p.C);
    std::vector<Pos> best(p.C);
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t n = row / p.P, op = row % p.P;
      const Window wh = window(op, p.stride_h, p.pad_h, p.kernel_h, p.dil_h, p.H);
      for (int64_t oq = 0; oq < p.Q; ++oq) {
        const Window ww = window(oq, p.stride_w, p.pad_w, p.kernel_w, p.dil_w, p.W);
        T* bv = best_val.data();
        Pos* bp = best.data();
        const Pos first = static_cast<Pos>(wh.begin * p.W + ww.begin);
        for (int64_t c = 0; c < p.C; ++c) bv[c] = lowest<T>(), bp[c] = first;
        for (int64_t h = wh.begin; h < wh.end; h += p.dil_h)
          for (int64_t w = ww.begin; w < ww.end; w += p.dil_w) {
            const T* src = x + p.input_offset(n, 0, h, w);
            const Pos pos = static_cast<Pos>(h * p.W + w);
            for (int64_t c = 0; c < p.C; ++c) {
              const T v = src[c];
              const bool take = v > bv[c] || is_nan(v);
              bv[c] = take ? v : bv[c];
              bp[c] = take ? pos : bp[c];
            }
          }
        const int64_t o = p.output_offset(n, 0, op, oq);
        for (int64_t c = 0; c < p.C; ++c) y[o + c] = bv[c], indices[o + c] = bp[c];
      }
    }
  });
}

}  // namespace

template <typename T>
void max_pool2d_forward(const PoolParams& p, const T* x, T* y, int64_t* indices) {
  if (!p.channels_last) {
    at::parallel_for(0, p.N * p.C, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t plane = b0; plane < b1; ++plane) {
        const T* src = x + plane * p.HW();
        T* out = y + plane * p.PQ();
        int64_t* idx = indices + plane * p.PQ();
        for (int64_t op = 0; op < p.P; ++op) {
          const Window wh = window(op, p.stride_h, p.pad_h, p.kernel_h, p.dil_h, p.H);
          for (int64_t oq = 0; oq < p.Q; ++oq) {
            const Window ww = window(oq, p.stride_w, p.pad_w, p.kernel_w, p.dil_w, p.W);
            int64_t best = wh.begin * p.W + ww.begin;
            T best_val = lowest<T>();
            for (int64_t h = wh.begin; h < wh.end; h += p.dil_h)
              for (int64_t w = ww.begin; w < ww.end; w += p.dil_w) {
                const T v = src[h * p.W + w];
                if (v > best_val || is_nan(v)) {
                  best_val = v;
                  best = h * p.W + w;
                }
              }
            out[op * p.Q + oq] = best_val;
            idx[op * p.Q + oq] = best;
          }
        }
      }
    });
    return;
  }
  // NHWC: the channel loop is innermost and branch-free. Positions are kept in 32 bits while the plane allows,
  // so the compare mask and the position blend have the same lane width as float and the loop vectorises.
  if (p.HW() <= INT32_MAX) {
    max_pool2d_forward_nhwc<T, int32_t>(p, x, y, indices);
  } else {
    max_pool2d_forward_nhwc<T, int64_t>(p, x, y, indices);
  }
}

template <typename T>
bool max_pool2d_backward(const PoolParams& p, const T* dy, const int64_t* indices, T* dx) {
  std::atomic<bool> indices_ok{true};
  auto in_plane = [&](int64_t i) {
    if (static_cast<uint64_t>(i) < static_cast<uint64_t>(p.HW())) return true;
    indices_ok = false;
    return false;
  };
  if (!p.channels_last) {
    // One plane per task: the scatter into it is serial, hence race-free and in a fixed order.
    at::parallel_for(0, p.N * p.C, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t plane = b0; plane < b1; ++plane) {
        const T* g = dy + plane * p.PQ();
        const int64_t* idx = indices + plane * p.PQ();
        T* out = dx + plane * p.HW();
        for (int64_t o = 0; o < p.PQ(); ++o)
          if (in_plane(idx[o])) out[idx[o]] += g[o];
      }
    });
    return indices_ok;
  }
  // NHWC: a task owns a block of channels of one image; within it, output pixels are visited in order.
  const int64_t cblock = std::min<int64_t>(p.C, 64), cblocks = (p.C + cblock - 1) / cblock;
  at::parallel_for(0, p.N * cblocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / cblocks, c0 = (t % cblocks) * cblock, c1 = std::min(p.C, c0 + cblock);
      for (int64_t o = 0; o < p.PQ(); ++o) {
        const int64_t off = (n * p.PQ() + o) * p.C;
        for (int64_t c = c0; c < c1; ++c)
          if (in_plane(indices[off + c])) dx[(n * p.HW() + indices[off + c]) * p.C + c] += dy[off + c];
      }
    }
  });
  return indices_ok;
}

#define FASTCONV_INSTANTIATE(T)                                                              \
  template void max_pool2d_forward<T>(const PoolParams&, const T*, T*, int64_t*);            \
  template bool max_pool2d_backward<T>(const PoolParams&, const T*, const int64_t*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
FASTCONV_INSTANTIATE(uint8_t)
FASTCONV_INSTANTIATE(int8_t)
FASTCONV_INSTANTIATE(int16_t)
FASTCONV_INSTANTIATE(int32_t)
FASTCONV_INSTANTIATE(int64_t)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv::cpu
