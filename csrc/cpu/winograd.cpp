// Winograd F(2x2, 3x3) for stride-1 3x3 convs in NCHW, on the same GEMM engine (gemm_driver.h).
//
// Each 2x2 output tile of each (image, k) comes from a 4x4 input tile d of each c:
//   Y = A^T [ sum_c (G g G^T) (.) (B^T d B) ] A
// so the 9 * 4 = 36 multiplies per (tile, c, k) of the direct conv become 16: the element-wise products,
// summed over c, are 16 independent GEMMs (one per position xi of the 4x4 transform domain):
//   M[xi] (K x tiles) = U[xi] (K x C) * V[xi] (C x tiles),  U = G g G^T (weights),  V = B^T d B (input).
// Tiles go in blocks sized so one block's V and M stay in L2: per block the input transform writes V straight
// in the micro-kernel's packed B layout, the 16 GEMMs run, and the output transform writes y. Nothing of
// size im2col (or of the whole transformed input) is ever built.
//
// Exactness: the transforms add rounding of their own (G holds 1/2), so results differ from the direct
// conv's in the last bits, as cuDNN's and oneDNN's Winograd do; the order of every sum is fixed by the shape,
// so results stay bitwise the same for any thread count.
#include "winograd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gemm_driver.h"
#include "pack.h"

namespace fastconv::cpu {

namespace {

constexpr int kTile = 4;               // input tile edge (m + r - 1 = 2 + 3 - 1)
constexpr int kXi = kTile * kTile;     // transform-domain positions, one GEMM each

// u = G g G^T for a 3x3 kernel g (row-major), G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
template <typename T>
void transform_weight(const T* g, T* u, int64_t xi_stride) {
  T t[4][3];  // G g
  for (int j = 0; j < 3; ++j) {
    const T g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
    t[0][j] = g0;
    t[1][j] = T(0.5) * (g0 + g1 + g2);
    t[2][j] = T(0.5) * (g0 - g1 + g2);
    t[3][j] = g2;
  }
  for (int i = 0; i < 4; ++i) {  // (G g) G^T
    const T a = t[i][0], b = t[i][1], c = t[i][2];
    u[(i * 4 + 0) * xi_stride] = a;
    u[(i * 4 + 1) * xi_stride] = T(0.5) * (a + b + c);
    u[(i * 4 + 2) * xi_stride] = T(0.5) * (a - b + c);
    u[(i * 4 + 3) * xi_stride] = c;
  }
}

// v = B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], for a 4x4 tile d (row-major).
template <typename T>
inline void transform_input(const T (&d)[kTile][kTile], T (&v)[kXi]) {
  T t[4][4];  // B^T d
  for (int j = 0; j < 4; ++j) {
    t[0][j] = d[0][j] - d[2][j];
    t[1][j] = d[1][j] + d[2][j];
    t[2][j] = d[2][j] - d[1][j];
    t[3][j] = d[1][j] - d[3][j];
  }
  for (int i = 0; i < 4; ++i) {  // (B^T d) B
    v[i * 4 + 0] = t[i][0] - t[i][2];
    v[i * 4 + 1] = t[i][1] + t[i][2];
    v[i * 4 + 2] = t[i][2] - t[i][1];
    v[i * 4 + 3] = t[i][1] - t[i][3];
  }
}

// y = A^T m A, A^T = [1 1 1 0; 0 1 -1 -1]: the 2x2 outputs of one tile.
template <typename T>
inline void transform_output(const T (&m)[kXi], T (&y)[2][2]) {
  T t[2][4];  // A^T m
  for (int j = 0; j < 4; ++j) {
    t[0][j] = m[0 * 4 + j] + m[1 * 4 + j] + m[2 * 4 + j];
    t[1][j] = m[1 * 4 + j] - m[2 * 4 + j] - m[3 * 4 + j];
  }
  for (int i = 0; i < 2; ++i) {
    y[i][0] = t[i][0] + t[i][1] + t[i][2];
    y[i][1] = t[i][1] - t[i][2] - t[i][3];
  }
}

}  // namespace

bool winograd_applies(const ConvParams& p) {
  const char* env = std::getenv("FASTCONV_WINOGRAD");  // read at every call, as FASTCONV_ISA is
  const bool disabled = env != nullptr && std::strcmp(env, "0") == 0;
  // Below ~32 channels the transforms cost more than the multiplies they save.
  return !disabled && !p.channels_last && p.groups == 1 && p.R == 3 && p.S == 3 && p.stride_h == 1 &&
         p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 && p.C >= 32 && p.K >= 32 && p.P >= 2 && p.Q >= 2;
}

template <typename T>
void winograd_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  const int64_t C = p.C, K = p.K, TH = ceil_div(p.P, 2), TW = ceil_div(p.Q, 2), tiles = p.N * TH * TW;

  // U[xi] = G g G^T, written straight into the micro-kernel's packed A layout (rows k in panels of mr,
  // reduction c in blocks of kc), planes skewed as V's are below.
  const int64_t u_stride = round_up(K, uk.mr) * C + 32;
  std::vector<T> packed_u(static_cast<size_t>(kXi * u_stride), T(0));
  at::parallel_for(0, ceil_div(K, uk.mr), 1, [&](int64_t panel0, int64_t panel1) {
    for (int64_t k = panel0 * uk.mr; k < std::min(K, panel1 * uk.mr); ++k)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t k0 = c / uk.kc * uk.kc, klen = std::min(uk.kc, C - k0);
        const int64_t at = k0 * round_up(K, uk.mr) + (k / uk.mr) * klen * uk.mr + (c - k0) * uk.mr + k % uk.mr;
        transform_weight(w + (k * C + c) * 9, packed_u.data() + at, u_stride);
      }
  });

  // Tile blocks: V (16 x C x block) and M (16 x K x block) of one block stay within L2.
  const int64_t block = std::max<int64_t>(uk.nr, std::min<int64_t>(256, round_up(16384 / std::max(C, K), uk.nr)));
  const int64_t blocks = ceil_div(tiles, block);

  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    PackBuffers<T> buf;
    // The 16 planes of V (and of M) are a power of two apart for common shapes, which would put a tile's 16
    // values in one L1 set; a 32-element skew between planes spreads them.
    const int64_t v_stride = C * block + 32, m_stride = K * block + 32;
    std::vector<T> v(static_cast<size_t>(kXi * v_stride)), m(static_cast<size_t>(kXi * m_stride));
    struct TileAt {
      int64_t n, th, tw;
    };
    std::vector<TileAt> tile_at(block);  // tile j of the block, decoded once
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t t0 = b * block, tlen = std::min(block, tiles - t0), width = round_up(tlen, uk.nr);
      for (int64_t j = 0, n = t0 / (TH * TW), th = (t0 / TW) % TH, tw = t0 % TW; j < tlen; ++j) {
        tile_at[j] = {n, th, tw};
        if (++tw == TW && (tw = 0, ++th == TH)) th = 0, ++n;
      }

      // Input transform into V[xi] in packed B layout: k block k0 (of kc channels), panel of nr tiles, [c][tile].
      for (int64_t c = 0; c < C; ++c) {
        const int64_t k0 = c / uk.kc * uk.kc, klen = std::min(uk.kc, C - k0);
        const T* channel = x + c * p.HW();
        for (int64_t j = 0; j < width; ++j) {
          T vt[kXi];
          if (j < tlen) {
            const TileAt& at = tile_at[j];
            const int64_t h0 = 2 * at.th - p.pad_h, w0 = 2 * at.tw - p.pad_w;
            const T* corner = channel + at.n * C * p.HW() + h0 * p.W + w0;  // may point into the padding
            T d[kTile][kTile];
            if (h0 >= 0 && w0 >= 0 && h0 + kTile <= p.H && w0 + kTile <= p.W) {
              for (int i = 0; i < kTile; ++i)
                for (int jj = 0; jj < kTile; ++jj) d[i][jj] = corner[i * p.W + jj];
            } else {
              for (int i = 0; i < kTile; ++i)
                for (int jj = 0; jj < kTile; ++jj)
                  d[i][jj] = p.in_bounds(h0 + i, w0 + jj) ? corner[i * p.W + jj] : T(0);
            }
            transform_input(d, vt);
          } else {
            std::fill(vt, vt + kXi, T(0));  // the last panel's padding columns
          }
          const int64_t packed_at = k0 * width + (j / uk.nr) * klen * uk.nr + (c - k0) * uk.nr + j % uk.nr;
          for (int xi = 0; xi < kXi; ++xi) v[xi * v_stride + packed_at] = vt[xi];
        }
      }

      // The 16 GEMMs: M[xi] (K x width) = U[xi] V[xi].
      for (int xi = 0; xi < kXi; ++xi) {
        const T* vx = v.data() + xi * v_stride;
        gemm_block(
            uk, 0, K, 0, tlen, C,
            [&](T*, int64_t k0, int64_t klen, int64_t m0, int64_t) {
              return packed_u.data() + xi * u_stride + k0 * round_up(K, uk.mr) + (m0 / uk.mr) * klen * uk.mr;
            },
            [&](T*, int64_t k0, int64_t, int64_t, int64_t) { return vx + k0 * width; },
            m.data() + xi * m_stride, OutputMap{width, width, 0}, false, buf);
      }

      // Output transform, plus bias, into y (tiles at the bottom/right edge may be half outside).
      for (int64_t k = 0; k < K; ++k) {
        const T bk = bias != nullptr ? bias[k] : T(0);
        const T* mk = m.data() + k * width;
        for (int64_t j = 0; j < tlen; ++j) {
          T mt[kXi], yt[2][2];
          for (int xi = 0; xi < kXi; ++xi) mt[xi] = mk[xi * m_stride + j];
          transform_output(mt, yt);
          const TileAt& at = tile_at[j];
          const int64_t oh = 2 * at.th, ow = 2 * at.tw;
          T* out = y + ((at.n * K + k) * p.P + oh) * p.Q + ow;
          if (oh + 1 < p.P && ow + 1 < p.Q) {
            out[0] = yt[0][0] + bk, out[1] = yt[0][1] + bk, out[p.Q] = yt[1][0] + bk, out[p.Q + 1] = yt[1][1] + bk;
          } else {
            for (int i = 0; i < 2; ++i)
              for (int jj = 0; jj < 2; ++jj)
                if (oh + i < p.P && ow + jj < p.Q) out[i * p.Q + jj] = yt[i][jj] + bk;
          }
        }
      }
    }
  });
}

template void winograd_forward<float>(const ConvParams&, const float*, const float*, const float*, float*);

}  // namespace fastconv::cpu
