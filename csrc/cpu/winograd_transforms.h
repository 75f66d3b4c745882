// The pieces of Winograd F(2x2, 3x3) that its NCHW/NHWC tile-lane path (winograd.cpp) and its NCHW image-lane
// path (winograd_images.cpp) share: the transforms, the weights transformed into the micro-kernel's packed
// layout, and the 16 GEMMs of one block of tiles. See winograd.cpp for the method.
#pragma once
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "../conv_params.h"
#include "gemm_driver.h"
#include "huge_pages.h"

namespace fastconv::cpu::winograd {

constexpr int kTile = 4;               // input tile edge (m + r - 1 = 2 + 3 - 1)
constexpr int kXi = kTile * kTile;     // transform-domain positions, one GEMM each

// u = G g G^T for L 3x3 kernels at once (lane l: kernel l's tap t = 3 r + s at g[t][l]), G = [1 0 0;
// 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
template <int L, typename T>
inline void transform_weights(const T (&g)[9][L], T (&u)[kXi][L]) {
  T t[4][3][L];  // G g
  for (int j = 0; j < 3; ++j)
    for (int l = 0; l < L; ++l) {
      const T g0 = g[j][l], g1 = g[3 + j][l], g2 = g[6 + j][l];
      t[0][j][l] = g0;
      t[1][j][l] = T(0.5) * (g0 + g1 + g2);
      t[2][j][l] = T(0.5) * (g0 - g1 + g2);
      t[3][j][l] = g2;
    }
  for (int i = 0; i < 4; ++i)  // (G g) G^T
    for (int l = 0; l < L; ++l) {
      const T a = t[i][0][l], b = t[i][1][l], c = t[i][2][l];
      u[i * 4 + 0][l] = a;
      u[i * 4 + 1][l] = T(0.5) * (a + b + c);
      u[i * 4 + 2][l] = T(0.5) * (a - b + c);
      u[i * 4 + 3][l] = c;
    }
}

// v = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], for L tiles at once (lane l: tile l's
// 4x4 input d[.][.][l], row-major): the compiler turns the lane loops into vector adds.
template <int L, typename T>
inline void transform_input(const T (&d)[kTile][kTile][L], T (&v)[kXi][L]) {
  T t[4][4][L];  // B^T d
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < L; ++l) {
      t[0][j][l] = d[0][j][l] - d[2][j][l];
      t[1][j][l] = d[1][j][l] + d[2][j][l];
      t[2][j][l] = d[2][j][l] - d[1][j][l];
      t[3][j][l] = d[1][j][l] - d[3][j][l];
    }
  for (int i = 0; i < 4; ++i)  // (B^T d) B
    for (int l = 0; l < L; ++l) {
      v[i * 4 + 0][l] = t[i][0][l] - t[i][2][l];
      v[i * 4 + 1][l] = t[i][1][l] + t[i][2][l];
      v[i * 4 + 2][l] = t[i][2][l] - t[i][1][l];
      v[i * 4 + 3][l] = t[i][1][l] - t[i][3][l];
    }
}

// y = A^T m A, A^T = [1 1 1 0; 0 1 -1 -1]: the 2x2 outputs of L tiles.
template <int L, typename T>
inline void transform_output(const T (&m)[kXi][L], T (&y)[2][2][L]) {
  T t[2][4][L];  // A^T m
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < L; ++l) {
      t[0][j][l] = m[0 * 4 + j][l] + m[1 * 4 + j][l] + m[2 * 4 + j][l];
      t[1][j][l] = m[1 * 4 + j][l] - m[2 * 4 + j][l] - m[3 * 4 + j][l];
    }
  for (int i = 0; i < 2; ++i)
    for (int l = 0; l < L; ++l) {
      y[i][0][l] = t[i][0][l] + t[i][1][l] + t[i][2][l];
      y[i][1][l] = t[i][1][l] - t[i][2][l] - t[i][3][l];
    }
}

// dW tile = G^T m G for the weight gradient's F(3x3, 2x2) (m: 4x4 sum of element-wise products).
template <typename T>
inline void transform_weight_grad(const T (&m)[kXi], T* g, int64_t tap_stride) {
  T t[3][4];  // G^T m, G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1]
  for (int j = 0; j < 4; ++j) {
    t[0][j] = m[0 * 4 + j] + T(0.5) * (m[1 * 4 + j] + m[2 * 4 + j]);
    t[1][j] = T(0.5) * (m[1 * 4 + j] - m[2 * 4 + j]);
    t[2][j] = T(0.5) * (m[1 * 4 + j] + m[2 * 4 + j]) + m[3 * 4 + j];
  }
  for (int i = 0; i < 3; ++i) {
    g[(i * 3 + 0) * tap_stride] = t[i][0] + T(0.5) * (t[i][1] + t[i][2]);
    g[(i * 3 + 1) * tap_stride] = T(0.5) * (t[i][1] - t[i][2]);
    g[(i * 3 + 2) * tap_stride] = T(0.5) * (t[i][1] + t[i][2]) + t[i][3];
  }
}

// e' = A e A^T, A = [1 0; 1 1; 1 -1; 0 -1], for L 2x2 tiles e of dy (the weight gradient's data transform).
template <int L, typename T>
inline void transform_grad_output(const T (&e)[2][2][L], T (&v)[kXi][L]) {
  T t[4][2][L];  // A e
  for (int j = 0; j < 2; ++j)
    for (int l = 0; l < L; ++l) {
      t[0][j][l] = e[0][j][l];
      t[1][j][l] = e[0][j][l] + e[1][j][l];
      t[2][j][l] = e[0][j][l] - e[1][j][l];
      t[3][j][l] = -e[1][j][l];
    }
  for (int i = 0; i < 4; ++i)  // (A e) A^T
    for (int l = 0; l < L; ++l) {
      v[i * 4 + 0][l] = t[i][0][l];
      v[i * 4 + 1][l] = t[i][0][l] + t[i][1][l];
      v[i * 4 + 2][l] = t[i][0][l] - t[i][1][l];
      v[i * 4 + 3][l] = -t[i][1][l];
    }
}
constexpr int kLanes = 16;  // tiles transformed together (the lanes of the transforms above)

// Weight (k, c)'s first tap and the distance between taps, in p's layout (K x C x 3 x 3 or K x 3 x 3 x C).
inline int64_t weight_at(const ConvParams& p, int64_t k, int64_t c) {
  return p.channels_last ? k * 9 * p.C + c : (k * p.C + c) * 9;
}
inline int64_t tap_stride(const ConvParams& p) { return p.channels_last ? p.C : 1; }

// The 3x3 kernel that maps input channel c to output channel k of p's forward: its tap t = 3 r + s at
// first[t * step]. With `flipped`, w holds the weights of the conv whose grad-input p is (p.C outputs, p.K
// inputs, same layout), read transposed and rotated by 180 degrees - reversing the 9 taps - in place.
template <typename T>
struct KernelTaps {
  const T* first;
  int64_t step;
};
template <typename T>
KernelTaps<T> kernel_taps(const ConvParams& p, const T* w, int64_t k, int64_t c, bool flipped) {
  if (!flipped) return {w + weight_at(p, k, c), tap_stride(p)};
  const int64_t step = p.channels_last ? p.K : 1;
  const int64_t tap0 = p.channels_last ? c * 9 * p.K + k : (c * p.K + k) * 9;
  return {w + tap0 + 8 * step, -step};
}

// Where element (reduction r, index e) lives in the micro-kernel's packed layout of an operand whose other
// index runs over `extent` in panels of `width`, reduction in blocks of kc out of `reduction` (as prepack()).
inline int64_t packed_offset(int64_t r, int64_t e, int64_t extent, int64_t width, int64_t kc, int64_t reduction) {
  const int64_t r0 = r / kc * kc, rlen = std::min(kc, reduction - r0);
  return r0 * round_up(extent, width) + (e / width) * rlen * width + (r - r0) * width + e % width;
}

// Panel `panel` of U (kernels k = panel * MR .. + MR, every c) into its place in the packed planes: the MR
// kernels of one c are transformed together (lanes) and each plane gets MR contiguous values.
template <int MR, typename T>
void transform_weight_panel(const ConvParams& p, const T* w, bool flipped, int64_t panel, int64_t kc, T* packed_u,
                            int64_t u_stride) {
  const int64_t k0 = panel * MR, lanes = std::min<int64_t>(MR, p.K - k0);
  for (int64_t c = 0; c < p.C; ++c) {
    T g[9][MR], u[kXi][MR];  // not `= {}`: a rep stos for every c
    for (int64_t l = 0; l < MR; ++l) {
      if (l >= lanes) {  // rows past K
        for (int t = 0; t < 9; ++t) g[t][l] = T(0);
        continue;
      }
      const KernelTaps<T> taps = kernel_taps(p, w, k0 + l, c, flipped);
      for (int t = 0; t < 9; ++t) g[t][l] = taps.first[t * taps.step];
    }
    transform_weights(g, u);
    T* dst = packed_u + packed_offset(c, k0, p.K, MR, kc, p.C);
    for (int xi = 0; xi < kXi; ++xi) std::copy(u[xi], u[xi] + MR, dst + xi * u_stride);
  }
}
// U[xi] = G g G^T of every kernel, written straight into the micro-kernel's packed A layout (rows k in panels
// of mr, reduction c in blocks of kc), plane xi at data + xi * stride. The planes are skewed by 32 elements (a
// power-of-two distance would put a tile's 16 values in one L1 set); rows past K are zeros, the skew gaps are
// never read.
template <typename T>
struct TransformedWeights {
  std::unique_ptr<T[]> data;
  int64_t stride;
};

template <typename T>
TransformedWeights<T> transformed_weights(const ConvParams& p, const MicroKernel<T>& uk, const T* w, bool flipped) {
  const int64_t stride = round_up(p.K, uk.mr) * p.C + 32;
  TransformedWeights<T> u{fresh_array<T>(kXi * stride), stride};
  at::parallel_for(0, ceil_div(p.K, uk.mr), 1, [&](int64_t panel0, int64_t panel1) {
    for (int64_t panel = panel0; panel < panel1; ++panel)
      switch (uk.mr) {  // the panel width as a constant: vector transforms and stores
        case 4: transform_weight_panel<4>(p, w, flipped, panel, uk.kc, u.data.get(), stride); break;
        case 6: transform_weight_panel<6>(p, w, flipped, panel, uk.kc, u.data.get(), stride); break;
        case 8: transform_weight_panel<8>(p, w, flipped, panel, uk.kc, u.data.get(), stride); break;
        default: TORCH_CHECK(false, "fastconv: no Winograd weight transform for mr = ", uk.mr);
      }
  });
  return u;
}

// The 16 GEMMs of a block of `count` tiles: M[xi] (K x width) = U[xi] V[xi], V[xi] at v + xi * v_stride in
// packed B layout (`width` columns, a multiple of nr), M[xi] at m + xi * m_stride, row-major.
template <typename T>
void block_gemms(const ConvParams& p, const MicroKernel<T>& uk, const TransformedWeights<T>& u, const T* v,
                 int64_t v_stride, int64_t count, int64_t width, T* m, int64_t m_stride, PackBuffers<T>& buf) {
  const int64_t K = p.K, k_rows = round_up(K, uk.mr);
  for (int xi = 0; xi < kXi; ++xi) {
    const T* ux = u.data.get() + xi * u.stride;
    const T* vx = v + xi * v_stride;
    gemm_block(
        uk, 0, K, 0, count, p.C,
        [&](T*, int64_t k0, int64_t klen, int64_t m0, int64_t) { return ux + k0 * k_rows + (m0 / uk.mr) * klen * uk.mr; },
        [&](T*, int64_t k0, int64_t, int64_t, int64_t) { return vx + k0 * width; },
        m + xi * m_stride, OutputMap{width, width, 0}, false, buf);
  }
}

// The NCHW forward with lanes over images (winograd_images.cpp), for batches of at least kImageLanesMinBatch
// (fewer images leave the vectors mostly empty).
constexpr int64_t kImageLanesMinBatch = 8;
template <typename T>
void forward_image_lanes(const ConvParams& p, const T* x, const T* w, const T* bias, T* y, bool flipped);

}  // namespace fastconv::cpu::winograd
