// Depthwise conv2d (one input channel per group, Cg == 1; any channel multiplier Kg): direct loops.
// A GEMM here would have a single row per group, so instead each output element sums R*S products straight
// from the input: along q for NCHW (stride-1 rows vectorise), along k for NHWC (channels vectorise).
// Parallel over planes, images or rows; each output element is summed in a fixed order. The
// innermost loops are compiled per ISA (rows.h).
#include "cpu/depthwise/depthwise.h"

#include <algorithm>
#include <vector>

#include "cpu/depthwise/rows.h"
#include "cpu/parallel.h"

namespace fastconv::cpu {

namespace {

// Output columns q whose input column q*stride - pad + s*dil lies inside [0, W): q in [lo, hi).
struct ColumnRange {
  int64_t lo, hi;
};
inline ColumnRange valid_columns(const ConvParams& p, int64_t s) {
  const int64_t off = s * p.dil_w - p.pad_w;  // input column of q = 0
  const int64_t lo = off >= 0 ? 0 : ceil_div(-off, p.stride_w);
  const int64_t hi = off >= p.W ? 0 : std::min(p.Q, (p.W - 1 - off) / p.stride_w + 1);
  return {lo, std::max(lo, hi)};
}

// The output row (column) whose tap reaches input offset t = h + pad - r * dil, or -1 where none does.
inline int64_t output_index(int64_t t, int64_t stride, int64_t extent) {
  if (t < 0 || t % stride != 0 || t / stride >= extent) return -1;
  return t / stride;
}

// Weights as [r][s][k], so the NHWC loops read them contiguously along k.
template <typename T>
std::vector<T> weights_rsk(const ConvParams& p, const T* w) {
  std::vector<T> out(static_cast<size_t>(p.RS() * p.K));
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) out[(r * p.S + s) * p.K + k] = w[p.weight_offset(k, 0, r, s)];
  return out;
}

template <typename T>
DepthwiseLoops<T> loops() {
  return pick_for_isa(active_isa(), &scalar::depthwise_loops<T>, &avx2::depthwise_loops<T>,
                      &avx512::depthwise_loops<T>);
}

}  // namespace


template <typename T>
void depthwise_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Kg = p.Kg();
  const DepthwiseLoops<T> loop = loops<T>();
  if (!p.channels_last) {
    parallel_for(0, p.N * p.K, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t plane = b0; plane < b1; ++plane) {
        const int64_t n = plane / p.K, k = plane % p.K;
        const T* in = x + (n * p.C + k / Kg) * p.HW();
        T* out = y + plane * p.PQ();
        std::fill(out, out + p.PQ(), bias != nullptr ? bias[k] : T(0));
        for (int64_t op = 0; op < p.P; ++op) {
          T* out_row = out + op * p.Q;
          for (int64_t r = 0; r < p.R; ++r) {
            const int64_t h = p.in_row(op, r);
            if (static_cast<uint64_t>(h) >= static_cast<uint64_t>(p.H)) continue;
            const T* in_row = in + h * p.W;
            for (int64_t s = 0; s < p.S; ++s) {
              const T wv = w[p.weight_offset(k, 0, r, s)];
              const ColumnRange cols = valid_columns(p, s);
              const T* src = in_row + s * p.dil_w - p.pad_w;
              loop.row_axpy(out_row + cols.lo, src + cols.lo * p.stride_w, p.stride_w, wv, cols.hi - cols.lo);
            }
          }
        }
      }
    });
    return;
  }
  const std::vector<T> wt = weights_rsk(p, w);
  parallel_for(0, p.N * p.P, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t row = b0; row < b1; ++row) {
      const int64_t n = row / p.P, op = row % p.P;
      for (int64_t oq = 0; oq < p.Q; ++oq) {
        T* out = y + p.output_offset(n, 0, op, oq);
        std::fill(out, out + p.K, T(0));
        for (int64_t r = 0; r < p.R; ++r)
          for (int64_t s = 0; s < p.S; ++s) {
            const int64_t h = p.in_row(op, r), iw = p.in_col(oq, s);
            if (!p.in_bounds(h, iw)) continue;
            const T* in = x + p.input_offset(n, 0, h, iw);
            const T* wk = wt.data() + (r * p.S + s) * p.K;
            loop.pixel_axpy(out, wk, in, p.K, Kg);
          }
        // Bias last here (first in NCHW): the order of torch's (oneDNN's) kernels for each layout.
        if (bias != nullptr)
          for (int64_t k = 0; k < p.K; ++k) out[k] += bias[k];
      }
    }
  });
}

template <typename T>
void depthwise_grad_input(const ConvParams& p, const T* dy, const T* w, T* dx) {
  // Gathered, each dx element summing its taps in (r, s) order with FMAs from zero: oneDNN's order, so dx equals
  // torch's bit for bit where torch runs oneDNN's depthwise kernel (float32, channel multiplier 1).
  const int64_t Kg = p.Kg();
  const DepthwiseLoops<T> loop = loops<T>();
  if (!p.channels_last) {
    // One task per input plane (n, c): it gathers from the Kg output planes of its group, race-free. Along a
    // row, the columns one tap reaches are stride apart.
    parallel_for(0, p.N * p.C, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t plane = b0; plane < b1; ++plane) {
        const int64_t n = plane / p.C, c = plane % p.C;
        T* in = dx + plane * p.HW();
        std::fill(in, in + p.HW(), T(0));
        for (int64_t k = c * Kg; k < (c + 1) * Kg; ++k) {
          const T* g = dy + (n * p.K + k) * p.PQ();
          for (int64_t h = 0; h < p.H; ++h)
            for (int64_t r = 0; r < p.R; ++r) {
              const int64_t op = output_index(h + p.pad_h - r * p.dil_h, p.stride_h, p.P);
              if (op < 0) continue;
              T* in_row = in + h * p.W + (-p.pad_w);
              for (int64_t s = 0; s < p.S; ++s) {
                const T wv = w[p.weight_offset(k, 0, r, s)];
                const ColumnRange cols = valid_columns(p, s);
                T* dst = in_row + s * p.dil_w;
                loop.row_scatter(dst + cols.lo * p.stride_w, p.stride_w, g + op * p.Q + cols.lo, wv,
                                 cols.hi - cols.lo);
              }
            }
        }
      }
    });
    return;
  }
  // NHWC: one task per input row; each dx pixel gathers its taps' dy pixels (channels vectorise).
  const std::vector<T> wt = weights_rsk(p, w);
  parallel_for(0, p.N * p.H, 1, [&](int64_t row0, int64_t row1) {
    for (int64_t row = row0; row < row1; ++row) {
      const int64_t n = row / p.H, h = row % p.H;
      std::fill(dx + row * p.W * p.C, dx + (row + 1) * p.W * p.C, T(0));
      for (int64_t iw = 0; iw < p.W; ++iw) {
        T* in = dx + p.input_offset(n, 0, h, iw);
        for (int64_t r = 0; r < p.R; ++r) {
          const int64_t op = output_index(h + p.pad_h - r * p.dil_h, p.stride_h, p.P);
          if (op < 0) continue;
          for (int64_t s = 0; s < p.S; ++s) {
            const int64_t oq = output_index(iw + p.pad_w - s * p.dil_w, p.stride_w, p.Q);
            if (oq < 0) continue;
            loop.pixel_scatter(in, wt.data() + (r * p.S + s) * p.K, dy + p.output_offset(n, 0, op, oq), p.K, Kg);
          }
        }
      }
    }
  });
}

template <typename T>
void depthwise_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw) {
  const int64_t Kg = p.Kg();
  const DepthwiseLoops<T> loop = loops<T>();
  // Steps between neighbouring output columns in dy and between their input columns in x.
  const int64_t dy_step = p.channels_last ? p.K : 1;
  const int64_t x_step = (p.channels_last ? p.C : 1) * p.stride_w;
  // One task per output channel: its R*S sums run over (n, p, q) in a fixed order.
  parallel_for(0, p.K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t c = k / Kg;
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s) {
          const ColumnRange cols = valid_columns(p, s);
          T sum = T(0);
          for (int64_t n = 0; n < p.N; ++n)
            for (int64_t op = 0; op < p.P; ++op) {
              const int64_t h = p.in_row(op, r);
              if (static_cast<uint64_t>(h) >= static_cast<uint64_t>(p.H)) continue;
              if (cols.hi > cols.lo)
                sum = loop.row_dot(dy + p.output_offset(n, k, op, cols.lo), dy_step,
                                   x + p.input_offset(n, c, h, p.in_col(cols.lo, s)), x_step, cols.hi - cols.lo, sum);
            }
          dw[p.weight_offset(k, 0, r, s)] = sum;
        }
    }
  });
}

#define FASTCONV_INSTANTIATE(T)                                                          \
  template void depthwise_forward<T>(const ConvParams&, const T*, const T*, const T*, T*); \
  template void depthwise_grad_input<T>(const ConvParams&, const T*, const T*, T*);      \
  template void depthwise_grad_weight<T>(const ConvParams&, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv::cpu
