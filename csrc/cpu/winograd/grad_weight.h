// The Winograd weight gradient's driver, shared by both lane strategies (tile_lanes.cpp, image_lanes.cpp).
//
// dW = G^T [ sum over tiles (A e A^T) (.) (B^T d B) ] G with e the m x m dy tile, d the (m + 2) x (m + 2) input
// tile (F: F2x2, m = 2, or F4x4, m = 4; common.h): per xi
// a GEMM  Mw[xi] (K x C) = E[xi] (K x tiles) * V[xi]^T (tiles x C), reduced over tiles. The tiles go in blocks of
// one reduction block (kc); a strategy says how many blocks there are and transforms a block's dy tiles into E
// (the A operand: rows k in panels of mr) and its input tiles into V (the B operand: columns c in panels of nr),
// panel by panel. The blocks are cut into a number of chunks fixed by the shape, each summed into its own
// partial result in block order, and the partials are added in chunk order: bitwise the same result for any
// thread count.
//
// A strategy (class Lanes) has: a per-task `State`; blocks(); begin_block(b, state) -> the block's reduction
// length (tiles); transform_grad_output(state, panel0, panel1, e) and transform_input(state, panel0, panel1, v),
// which fill panels [panel0, panel1) of E and V through PackedPlanes::store.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>

#include "cpu/gemm/driver.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"
#include "cpu/winograd/common.h"

namespace fastconv::cpu::winograd {

// One operand of a block's F::kXi GEMMs, in the micro-kernel's packed layout: `extent` channels in panels of `width`
// (mr or nr), `reduction` rows (the block's tiles), plane xi at data + xi * plane.
template <typename T>
struct PackedPlanes {
  T* data;
  int64_t plane, width, extent, kc, reduction;
  TransposeFn<T> transpose;
  // The transformed tiles of `count` channels from `first` on, over reduction rows j .. j + lanes:
  // tiles[i][xi][l] is channel first + i, row j + l. Stored by transposition (Xi planes of lanes x channels),
  // not one value per store `width` apart; channels past `count` in the panel become zeros.
  template <int Xi>
  void store(const T (&tiles)[kMaxPanel][Xi][kLanes], int64_t j, int64_t lanes, int64_t first, int64_t count) const {
    T* dst = data + packed_offset(j, first, extent, width, kc, reduction);
    for (int xi = 0; xi < Xi; ++xi) transpose(&tiles[0][xi][0], Xi * kLanes, count, lanes, dst + xi * plane, width);
  }
};

// Returns whether every weight gradient is finite (winograd.h).
template <class F = F2x2, typename T, class Lanes>
bool grad_weight_blocks(const ConvParams& p, const MicroKernel<T>& uk, const Lanes& lanes, T* dw) {
  constexpr int64_t kXi = F::kXi;
  if (std::max(uk.mr, uk.nr) > kMaxPanel) throw std::logic_error("fastconv: Winograd panel wider than kMaxPanel");
  const int64_t C = p.C, K = p.K, block = uk.kc;
  const int64_t blocks = lanes.blocks();
  const int64_t m_stride = K * C + 32;  // skewed planes, as in the forward
  // Two ways to spread the work, chosen by the shape alone (so the sums are the same for any thread count):
  // - small K x C: block chunks, one per task, each summed into its own 16 x K x C partial result (added up
  //   below); few chunks, as each partial is written and read again;
  // - large K x C (a partial of 4 MiB or more, ResNet's 256- and 512-channel layers with few tiles): one
  //   result, the blocks in order, each block's transforms split over channels and its 16 GEMMs over threads.
  const bool planes_in_parallel = kXi * m_stride * int64_t{sizeof(T)} >= (int64_t{4} << 20);
  const int64_t memory_cap = std::max<int64_t>(1, (int64_t{64} << 20) / (kXi * m_stride * int64_t{sizeof(T)}));
  const int64_t chunks = planes_in_parallel ? 1 : std::max<int64_t>(1, std::min<int64_t>({blocks, 4, memory_cap}));
  // Left uninitialised (first writes overwrite): zero-filling fresh pages costs as much as the GEMMs here.
  std::unique_ptr<T[]> partial = fresh_array<T>(chunks * kXi * m_stride);

  const int64_t e_stride = round_up(K, uk.mr) * block + 32, v_stride = round_up(C, uk.nr) * block + 32;
  const int64_t k_panels = ceil_div(K, uk.mr), c_panels = ceil_div(C, uk.nr);
  // One task's buffers, reused block after block (every entry of e and v that the GEMMs read is written).
  struct Scratch {
    AlignedBuffer<T> e, v;
    typename Lanes::State state;
    PackBuffers<T> buf;
  };
  auto make_scratch = [&] {
    Scratch scratch;
    scratch.e.reserve(kXi * e_stride), scratch.v.reserve(kXi * v_stride);
    return scratch;
  };
  // Block b's kXi GEMMs into acc (onto it when accumulate). In parallel: its transforms over channel panels and
  // its GEMMs over xi on all threads; else all on the calling thread.
  auto run_block = [&](int64_t b, T* acc, bool accumulate, Scratch& scratch, bool parallel) {
    const int64_t tlen = lanes.begin_block(b, scratch.state);
    const PackedPlanes<T> e{scratch.e.data(), e_stride, uk.mr, K, block, tlen, uk.transpose_panel};
    const PackedPlanes<T> v{scratch.v.data(), v_stride, uk.nr, C, block, tlen, uk.transpose_panel};
    auto transform_e = [&](int64_t panel0, int64_t panel1) {
      lanes.transform_grad_output(scratch.state, panel0, panel1, e);
    };
    auto transform_v = [&](int64_t panel0, int64_t panel1) { lanes.transform_input(scratch.state, panel0, panel1, v); };
    auto gemms = [&](int64_t xi0, int64_t xi1, PackBuffers<T>& buf) {
      for (int64_t xi = xi0; xi < xi1; ++xi) {
        const T* ex = e.data + xi * e_stride;
        gemm_block(
            uk, 0, K, 0, C, tlen,
            [&](T*, int64_t, int64_t klen, int64_t m0, int64_t) { return ex + (m0 / uk.mr) * klen * uk.mr; },
            [&](T*, int64_t, int64_t, int64_t, int64_t) { return static_cast<const T*>(v.data + xi * v_stride); },
            acc + xi * m_stride, OutputMap{C, C, 0}, accumulate, buf);
      }
    };
    if (!parallel) {
      transform_e(0, k_panels), transform_v(0, c_panels), gemms(0, kXi, scratch.buf);
      return;
    }
    parallel_for(0, k_panels, 1, transform_e);
    parallel_for(0, c_panels, 1, transform_v);
    parallel_for(0, kXi, 1, [&](int64_t xi0, int64_t xi1) {
      PackBuffers<T> buf;
      gemms(xi0, xi1, buf);
    });
  };

  if (planes_in_parallel) {
    Scratch scratch = make_scratch();
    for (int64_t b = 0; b < blocks; ++b) run_block(b, partial.get(), b > 0, scratch, true);
  } else {
    parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      Scratch scratch = make_scratch();
      for (int64_t chunk = c0; chunk < c1; ++chunk) {
        const int64_t first = blocks * chunk / chunks, last = blocks * (chunk + 1) / chunks;
        for (int64_t b = first; b < last; ++b)
          run_block(b, partial.get() + chunk * kXi * m_stride, b > first, scratch, false);
      }
    });
  }

  // Partials summed in chunk order into the first: plane by plane, two sequential streams at a time (one pass
  // reading all 16 x chunks planes at once outruns the hardware prefetchers).
  if (chunks > 1) {
    constexpr int64_t kSpan = 4096;
    const int64_t spans = ceil_div(K * C, kSpan);
    parallel_for(0, kXi * spans, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t xi = i / spans, e0 = (i % spans) * kSpan, e1 = std::min(K * C, e0 + kSpan);
        T* sum = partial.get() + xi * m_stride;
        for (int64_t chunk = 1; chunk < chunks; ++chunk) {
          const T* add = partial.get() + (chunk * kXi + xi) * m_stride;
          for (int64_t e = e0; e < e1; ++e) sum[e] += add[e];
        }
      }
    });
  }
  // dW = G^T m G. A non-finite sum reaches all 9 taps of its (k, c) through G^T m G: checked on m.
  std::atomic<bool> all_finite{true};
  parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    T probe = T(0);  // m * 0 is NaN exactly when m is not finite
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t c = 0; c < C; ++c) {
        T m[kXi];
        for (int xi = 0; xi < kXi; ++xi) m[xi] = partial[xi * m_stride + k * C + c], probe += m[xi] * T(0);
        F::weight_grad(m, dw + weight_at(p, k, c), tap_stride(p));
      }
    if (probe != probe) all_finite.store(false, std::memory_order_relaxed);
  });
  return all_finite.load();
}

}  // namespace fastconv::cpu::winograd
