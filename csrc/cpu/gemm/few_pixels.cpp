// conv2d forward and weight gradient on maps of a few output pixels (3x3 and smaller). The forward is one GEMM
// per output pixel, its rows the images, its columns the output channels, its reduction the input channels of
// only the taps that land inside the input:
//
//   y[n, k, p, q] = sum over taps (r, s) inside the input, over c, of x[n, c, h(p, r), w(q, s)] * w[k, c, r, s]
//
// Why: the im2col GEMM (conv_gemm.cpp) multiplies the zero padding too, and on a padded 3x3 map that is 32 of
// the 81 taps of a 3x3 kernel (oneDNN's direct kernels skip them); Winograd F(2x2, 3x3) there computes 16 outputs
// to keep 9. This does the 49 products per channel pair that the sum has (the fast CIFAR net's 256->256 layer on
// its 3x3 map, and that layer's grad-input, a forward on the same map); so does the weight gradient below, one
// GEMM per tap. On that layer (batch 256, Zen 4) forward and grad-input went from 0.8x torch's best to 1.0x, the
// weight gradient from 1.0x to 1.2x.
//
// Each tap's weights are packed once as the B operand (panels of nr output channels, rows c); the A operand is
// the tap's input pixel of mr images, packed per k block by the micro-kernel's register transpose (a pixel's
// channels are contiguous in NHWC, and in an NHWC copy of NCHW input). NHWC outputs are written in place (rows
// n, K contiguous); NCHW ones go through a per-task buffer, scattered once at the end, so the GEMM's tiles stay
// whole.
// Every output sums its taps in (r, s) order and each tap's channels in k blocks, whatever the blocking of the
// images: results are the same for any thread count.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "cpu/gemm/conv_gemm.h"
#include "cpu/gemm/driver.h"
#include "cpu/gemm/im2col.h"
#include "cpu/layout.h"
#include "cpu/parallel.h"

namespace fastconv::cpu {

namespace {

// The taps of output pixel (p, q) that read inside the input: rows [r_lo, r_hi), columns [s_lo, s_hi).
struct TapRange {
  int64_t r_lo, r_hi, s_lo, s_hi;
};
int64_t first_inside(int64_t at, int64_t step, int64_t extent, int64_t taps) {
  int64_t t = 0;
  while (t < taps && (at + t * step < 0 || at + t * step >= extent)) ++t;
  return t;
}
TapRange taps_inside(const ConvParams& p, int64_t op, int64_t oq) {
  TapRange t{};
  t.r_lo = first_inside(p.in_row(op, 0), p.dil_h, p.H, p.R);
  for (t.r_hi = t.r_lo; t.r_hi < p.R && p.in_row(op, t.r_hi) < p.H; ++t.r_hi) {}
  t.s_lo = first_inside(p.in_col(oq, 0), p.dil_w, p.W, p.S);
  for (t.s_hi = t.s_lo; t.s_hi < p.S && p.in_col(oq, t.s_hi) < p.W; ++t.s_hi) {}
  return t;
}

}  // namespace

int64_t taps_inside_count(const ConvParams& p) {
  int64_t rows = 0, cols = 0;
  for (int64_t op = 0; op < p.P; ++op) {
    const TapRange t = taps_inside(p, op, 0);
    rows += t.r_hi - t.r_lo;
  }
  for (int64_t oq = 0; oq < p.Q; ++oq) {
    const TapRange t = taps_inside(p, 0, oq);
    cols += t.s_hi - t.s_lo;
  }
  return rows * cols;
}

namespace {

template <typename T>
void forward_few_pixels_with(const MicroKernel<T>& uk, const ConvParams& p, const T* x, const T* w, const T* bias,
                             T* y) {
  const int64_t C = p.C, K = p.K, PQ = p.PQ(), HW = p.HW();
  const bool nhwc = p.channels_last;

  // NCHW input is read as an NHWC copy (a few pixels per image: a small copy), so that a pixel's channels are
  // contiguous for the register transpose; gathering them 9 floats apart per value was a sixth of the time.
  std::vector<T> x_nhwc;
  if (!nhwc) {
    x_nhwc.resize(static_cast<size_t>(p.N * HW * C));
    transpose_images(x, x_nhwc.data(), p.N, C, HW);
  }
  const T* pixels = nhwc ? x : x_nhwc.data();  // x as (n, h, w, c)

  // B of tap t: rows c, columns k, w[k, c, t] (groups == 1: select.cpp).
  std::vector<Prepacked<T>> tap_weights(p.RS());
  for (int64_t t = 0; t < p.RS(); ++t)
    tap_weights[t] = prepack<T>(K, C, uk.nr, uk.kc, [&](T* dst, int64_t c0, int64_t clen, int64_t start, int64_t len) {
      pack_panels_by_row(dst, c0, clen, start, len, uk.nr, [&](T* out, int64_t c, int64_t k, int64_t count) {
        for (int64_t i = 0; i < count; ++i) out[i] = w[p.weight_offset(k + i, c, t / p.S, t % p.S)];
      });
    });

  // About 8 tasks (pixel x block of images) per thread: with one per pixel, 2 threads would split a 3x3 map's 9
  // pixels 5 to 4.
  const int64_t image_blocks = std::min(ceil_div(8 * num_threads(), PQ), ceil_div(p.N, int64_t{uk.mr}));
  const int64_t block = round_up(ceil_div(p.N, image_blocks), uk.mr), blocks = ceil_div(p.N, block);

  parallel_for(0, PQ * blocks, 1, [&](int64_t t0, int64_t t1) {
    PackBuffers<T> buf;
    std::vector<T> rows;  // NCHW: this task's outputs, [image][k]
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t pixel = task / blocks, op = pixel / p.Q, oq = pixel % p.Q;
      const int64_t n0 = task % blocks * block, count = std::min(block, p.N - n0);
      const TapRange taps = taps_inside(p, op, oq);
      // C of this task: NHWC, y's rows of pixel (op, oq); NCHW, a buffer of `count` rows of K.
      T* c = y + (op * p.Q + oq) * K;
      OutputMap map{PQ * K, K, 0, 0, 0};
      if (!nhwc) {
        rows.assign(static_cast<size_t>(count * K), T(0));
        c = rows.data();
        map = OutputMap{K, K, 0, n0, 0};
      }
      if (bias != nullptr)
        for (int64_t n = n0; n < n0 + count; ++n) std::copy(bias, bias + K, c + map.offset(n, 0));
      bool accumulate = bias != nullptr;
      for (int64_t r = taps.r_lo; r < taps.r_hi; ++r)
        for (int64_t s = taps.s_lo; s < taps.s_hi; ++s) {
          const int64_t h = p.in_row(op, r), xw = p.in_col(oq, s);
          const Prepacked<T>& wt = tap_weights[r * p.S + s];
          gemm_block(
              uk, n0, count, 0, K, C,
              [&](T* dst, int64_t c0, int64_t clen, int64_t m0, int64_t mlen) {
                for (int64_t pos = 0; pos < mlen; pos += uk.mr)
                  uk.transpose_panel(pixels + ((m0 + pos) * HW + h * p.W + xw) * C + c0, HW * C,
                                     std::min<int64_t>(uk.mr, mlen - pos), clen, dst + pos * clen, uk.mr);
                return static_cast<const T*>(dst);
              },
              [&](T*, int64_t c0, int64_t clen, int64_t, int64_t) { return prepacked_at(wt, K, uk.nr, c0, clen, 0); },
              c, map, accumulate, buf);
          accumulate = true;
        }
      if (!accumulate)  // no tap inside the input (a map of padding alone): y is the bias, or zeros
        for (int64_t n = n0; n < n0 + count; ++n) std::fill(c + map.offset(n, 0), c + map.offset(n, 0) + K, T(0));
      if (!nhwc)
        for (int64_t n = n0; n < n0 + count; ++n)
          for (int64_t k = 0; k < K; ++k) y[p.output_offset(n, k, op, oq)] = rows[(n - n0) * K + k];
    }
  });
}

}  // namespace

template <typename T>
void gemm_forward_few_pixels(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  forward_few_pixels_with(micro_kernel<T>(active_isa()), p, x, w, bias, y);
}

// NHWC bfloat16 with an even channel count: a pair of adjacent channels is one 32-bit element of a problem with
// half the channels (as gemm_forward_bf16_pairs): the packers move the pairs vdpbf16ps multiplies, the tap weights
// are packed at half the float bytes, and no panel is converted per GEMM (to_pairs and the float packing were a
// fifth of the float-copy path's time on 512 channels at 4x4).
void gemm_forward_few_pixels_bf16_pairs(const ConvParams& p, const uint16_t* x, const uint16_t* w, const float* bias,
                                        float* y) {
  if (p.groups != 1) throw std::logic_error("fastconv: the few-pixel GEMMs take groups == 1");
  forward_few_pixels_with(pair_element_kernel(active_isa()), channel_pair_problem(p, x, w),
                          reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(w), bias, y);
}

// dW[k, c, r, s] = sum over images and the output pixels whose tap (r, s) reads inside the input of
// dy[n, k, p, q] * x[n, c, h(p, r), w(q, s)]: per tap, a GEMM of rows k, columns c, reduction (pixel, image),
// both operands packed from NHWC rows (copies of NCHW tensors: select.cpp keeps the input map small too). Tasks are
// (tap, block of k, block of c); every entry sums its reduction in one fixed order.
template <typename T>
void gemm_grad_weight_few_pixels(const ConvParams& p, const T* dy, const T* x, T* dw) {
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  const int64_t C = p.C, K = p.K, PQ = p.PQ(), HW = p.HW(), RS = p.RS();
  const bool nhwc = p.channels_last;
  std::vector<T> dy_nhwc, x_nhwc;
  if (!nhwc) {
    dy_nhwc.resize(static_cast<size_t>(p.N * PQ * K));
    x_nhwc.resize(static_cast<size_t>(p.N * HW * C));
    transpose_images(dy, dy_nhwc.data(), p.N, K, PQ);
    transpose_images(x, x_nhwc.data(), p.N, C, HW);
  }
  const T* dy_rows = nhwc ? dy : dy_nhwc.data();  // (n, p, q, k)
  const T* x_rows = nhwc ? x : x_nhwc.data();     // (n, h, w, c)

  const int64_t cblock = std::min(round_up(ceil_div(C, 2), uk.nr), round_up(int64_t{512}, uk.nr));
  const int64_t cblocks = ceil_div(C, cblock), kblocks = ceil_div(K, uk.mc);
  parallel_for(0, RS * kblocks * cblocks, 1, [&](int64_t t0, int64_t t1) {
    PackBuffers<T> buf;
    std::vector<int64_t> dy_at, x_at;  // per output pixel reading inside at this tap: its dy and x row offsets
    std::vector<T> tile;               // NCHW: this task's K x C block, scattered into dw at the end
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t tap = task / (kblocks * cblocks), r = tap / p.S, s = tap % p.S;
      const int64_t k0 = task / cblocks % kblocks * uk.mc, klen = std::min(uk.mc, K - k0);
      const int64_t c0 = task % cblocks * cblock, clen = std::min(cblock, C - c0);
      dy_at.clear(), x_at.clear();
      for (int64_t op = 0; op < p.P; ++op)
        for (int64_t oq = 0; oq < p.Q; ++oq) {
          const int64_t h = p.in_row(op, r), xw = p.in_col(oq, s);
          if (!p.in_bounds(h, xw)) continue;
          dy_at.push_back((op * p.Q + oq) * K);
          x_at.push_back((h * p.W + xw) * C);
        }
      const int64_t pixels = static_cast<int64_t>(dy_at.size());
      if (pixels == 0) continue;  // dw is zeroed by the caller
      T* c = dw + tap * C;
      OutputMap map{RS * C, C, 0, 0, 0};
      if (!nhwc) {
        tile.assign(static_cast<size_t>(klen * clen), T(0));
        c = tile.data();
        map = OutputMap{clen, clen, 0, k0, c0};
      }
      // Reduction row i: image i / pixels at the (i % pixels)th of this tap's pixels.
      auto pack = [&](const T* rows, const std::vector<int64_t>& at, int64_t image_stride, int64_t width) {
        return [&, rows, image_stride, width](T* dst, int64_t i0, int64_t ilen, int64_t e0, int64_t elen) {
          pack_panels_by_row(dst, i0, ilen, e0, elen, width, [&](T* out, int64_t i, int64_t e, int64_t count) {
            const T* src = rows + i / pixels * image_stride + at[i % pixels] + e;
            if (count == width) {
              std::memcpy(out, src, sizeof(T) * static_cast<size_t>(width));
            } else {
              std::copy(src, src + count, out);
            }
          });
          return static_cast<const T*>(dst);
        };
      };
      gemm_block(uk, k0, klen, c0, clen, p.N * pixels, pack(dy_rows, dy_at, PQ * K, uk.mr),
                 pack(x_rows, x_at, HW * C, uk.nr), c, map, false, buf);
      if (!nhwc)
        for (int64_t k = k0; k < k0 + klen; ++k)
          for (int64_t ch = c0; ch < c0 + clen; ++ch) dw[(k * C + ch) * RS + tap] = tile[(k - k0) * clen + ch - c0];
    }
  });
}

template void gemm_forward_few_pixels<float>(const ConvParams&, const float*, const float*, const float*, float*);
template void gemm_forward_few_pixels<double>(const ConvParams&, const double*, const double*, const double*,
                                              double*);
template void gemm_grad_weight_few_pixels<float>(const ConvParams&, const float*, const float*, float*);
template void gemm_grad_weight_few_pixels<double>(const ConvParams&, const double*, const double*, double*);

}  // namespace fastconv::cpu
