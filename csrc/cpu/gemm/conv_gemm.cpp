// conv2d forward, grad-input (strided) and grad-weight as implicit GEMMs on one engine (driver.h).
//
//                 GEMM rows (M)        columns (N)          reduction           packed from
// forward NCHW    k         (Kg)       pixel (n,p,q)        (c,r,s)             A: weights, B: im2col(x)
// forward NHWC    pixel (n,p,q)        k         (Kg)       (r,s,c)             A: im2col(x), B: weights
// grad-input      stride > 1: GEMMs over blocks of output pixels into a small column buffer, scattered back
//                 (col2im); stride 1 is a forward (select.h: flipped_forward)
// grad-weight     k x tap (NCHW: (c,r,s), NHWC: (r,s,c)); reduction = pixels, both operands packed pixel-major
//
// Work is split into tasks over groups and blocks of the pixel dimension (forward), whole images (grad-input) or
// tiles of the weight gradient plus a fixed number of batch chunks (grad-weight). Every output element is
// summed in an order fixed by the shape alone, so results are bitwise the same for any thread count.
#include "cpu/gemm/conv_gemm.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "cpu/bf16_bits.h"
#include "cpu/gemm/driver.h"
#include "cpu/gemm/im2col.h"
#include "cpu/gemm/phase_planes.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"

namespace fastconv::cpu {

namespace {

// Weights of group g as a packed GEMM operand: rows k, reduction kd, value w[(g*Kg + k) * red + kd]
// (kd follows the weight's own layout, so this holds for NCHW and NHWC alike).
template <typename T>
Prepacked<T> pack_weights(const ConvParams& p, const MicroKernel<T>& uk, const T* w, int64_t g, bool k_is_row) {
  const int64_t Kg = p.Kg(), red = p.Cg() * p.RS(), width = k_is_row ? uk.mr : uk.nr;
  const T* wg = w + g * Kg * red;
  return prepack<T>(Kg, red, width, uk.kc, [&](T* dst, int64_t k0, int64_t klen, int64_t start, int64_t len) {
    if (k_is_row) {  // weights are the A operand: panels over k, each a transpose of rows contiguous along kd
      // (the per-ISA register transposes: one 4-byte store per value was ~8% of a 256->512 stride-2 forward)
      for (int64_t pos = 0; pos < len; pos += width)
        uk.transpose_panel(wg + (start + pos) * red + k0, red, std::min(width, len - pos), klen,
                           dst + pos * klen, width);
    } else {  // weights are the B operand: panels over k, one reduction row at a time
      pack_panels_by_row(dst, k0, klen, start, len, width, [&](T* out, int64_t kd, int64_t k, int64_t count) {
        for (int64_t i = 0; i < count; ++i) out[i] = wg[(k + i) * red + kd];
      });
    }
  });
}

// Splits `extent` into about `parts` blocks, each a multiple of `unit` and at most `max_block` long.
int64_t block_size(int64_t extent, int64_t parts, int64_t unit, int64_t max_block) {
  const int64_t b = round_up(ceil_div(extent, std::max<int64_t>(parts, 1)), unit);
  return std::max(unit, std::min(b, round_up(max_block, unit)));
}

}  // namespace

// (Defined below: the forward with a given micro-kernel.)
template <typename T>
void gemm_forward_with(const MicroKernel<T>& uk, const ConvParams& p, const T* x, const T* w, const T* bias, T* y);

template <typename T>
void gemm_forward(const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  gemm_forward_with(micro_kernel<T>(active_isa()), p, x, w, bias, y);
}

// NHWC bfloat16: a pair of adjacent channels is one 32-bit element of a problem with half the channels, so the
// NHWC im2col rows and weight panels the packers write (moving 32-bit values, never computing with them) are
// already the bfloat16 pairs vdpbf16ps multiplies: nothing is widened to float or converted.
ConvParams channel_pair_problem(const ConvParams& p, const uint16_t* x, const uint16_t* w) {
  if (!p.channels_last || p.Cg() % 2 != 0 || reinterpret_cast<uintptr_t>(x) % 4 != 0 ||
      reinterpret_cast<uintptr_t>(w) % 4 != 0)
    throw std::logic_error("fastconv: bfloat16 pairs need NHWC, an even channel count per group, aligned data");
  ConvParams pairs = p;
  pairs.C = p.C / 2;
  return pairs;
}

void gemm_forward_bf16_pairs(const ConvParams& p, const uint16_t* x, const uint16_t* w, const float* bias, float* y) {
  gemm_forward_with(pair_element_kernel(active_isa()), channel_pair_problem(p, x, w),
                    reinterpret_cast<const float*>(x), reinterpret_cast<const float*>(w), bias, y);
}

template <typename T>
void gemm_forward_with(const MicroKernel<T>& uk, const ConvParams& p, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Kg = p.Kg(), red = p.Cg() * p.RS(), pixels = p.N * p.PQ();
  const bool nhwc = p.channels_last;

  std::vector<Prepacked<T>> packed(p.groups);
  auto pack_groups = [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      packed[g] = pack_weights(p, uk, w, g, !nhwc);
  };
  // Groups in parallel when there are enough; else one after another, each packed in parallel over its k
  // blocks (a parallel_for nested in another runs inline, even around a single group).
  if (p.groups >= num_threads())
    parallel_for(0, p.groups, 1, pack_groups);
  else
    pack_groups(0, p.groups);

  // Two pixel blocks per thread (four measured 4-13% slower on Zen 5: every block streams all of the group's
  // packed weights again); blocks stay small enough that the packed im2col block (kc x block) stays in L2.
  const int64_t unit = nhwc ? uk.mr : uk.nr;
  const int64_t block = block_size(pixels, ceil_div(2 * num_threads(), p.groups), unit, nhwc ? 1024 : 512);
  const int64_t blocks_per_group = ceil_div(pixels, block);
  const bool from_planes = packs_from_planes(p);  // else pack_im2col_nchw straight from x

  parallel_for(0, p.groups * blocks_per_group, 1, [&](int64_t t0, int64_t t1) {
    PackBuffers<T> buf;
    PhasePlanes<T> planes;
    std::vector<TapRun> taps;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / blocks_per_group, j0 = (t % blocks_per_group) * block;
      const int64_t jlen = std::min(block, pixels - j0);
      const Prepacked<T>& wp = packed[g];
      if (!nhwc) {
        T* c = y + g * Kg * p.PQ();
        const OutputMap map{p.PQ(), p.PQ(), p.K * p.PQ()};
        if (from_planes) planes.reset(p, x, g, j0, jlen, uk.nr, uk.kc);
        if (bias != nullptr) {  // C starts as the bias; the GEMM accumulates onto it
          std::vector<int64_t>& col_offset = buf.col_offset;
          col_offset.resize(jlen);
          map.column_offsets(j0, jlen, col_offset.data());
          for (int64_t k = 0; k < Kg; ++k)
            for (int64_t j = 0; j < jlen; ++j) c[k * map.row_stride + col_offset[j]] = bias[g * Kg + k];
        }
        gemm_block(
            uk, 0, Kg, j0, jlen, red,
            [&](T*, int64_t k0, int64_t klen, int64_t m0, int64_t) {
              return prepacked_at(wp, Kg, uk.mr, k0, klen, m0);
            },
            [&](T* dst, int64_t k0, int64_t klen, int64_t n0, int64_t nlen) {
              if (from_planes)
                planes.pack(dst, k0, klen);
              else
                pack_im2col_nchw(p, x, g, dst, k0, klen, n0, nlen, uk.nr);
              return static_cast<const T*>(dst);
            },
            c, map, bias != nullptr, buf);
      } else {
        T* c = y + g * Kg;
        const OutputMap map{p.K, Kg, 0};
        if (bias != nullptr)
          for (int64_t j = j0; j < j0 + jlen; ++j) std::copy(bias + g * Kg, bias + (g + 1) * Kg, c + j * p.K);
        gemm_block(
            uk, j0, jlen, 0, Kg, red,
            [&](T* dst, int64_t k0, int64_t klen, int64_t m0, int64_t mlen) {
              tap_runs_nhwc(p, k0, klen, taps);
              pack_im2col_nhwc(p, x, g, taps, dst, klen, m0, mlen, uk.mr, uk.transpose_panel);
              return static_cast<const T*>(dst);
            },
            [&](T*, int64_t k0, int64_t klen, int64_t n0, int64_t) {
              return prepacked_at(wp, Kg, uk.nr, k0, klen, n0);
            },
            c, map, bias != nullptr, buf);
      }
    }
  });
}

namespace {

// n values of an operand as the compute type T: a copy, or bfloat16 bits widened to float (exact) as they are
// packed, so a bfloat16 tensor is never widened whole.
template <typename T, typename In>
inline void copy_widened(const In* src, int64_t n, T* dst) {
  if constexpr (std::is_same_v<In, T>) {
    // Packing calls this once per reduction row with n = a panel's width: fixed-size copies are inlined vector
    // moves, where std::copy called memmove (a third of a 1x1 stride-2 NHWC weight gradient's time).
    switch (n) {
      case 8: std::memcpy(dst, src, 8 * sizeof(T)); break;
      case 16: std::memcpy(dst, src, 16 * sizeof(T)); break;
      case 32: std::memcpy(dst, src, 32 * sizeof(T)); break;
      default: std::copy(src, src + n, dst);
    }
  } else {
    static_assert(std::is_same_v<In, uint16_t> && std::is_same_v<T, float>, "bfloat16 bits into float only");
    widen_run(src, n, dst);
  }
}

// col2im, NCHW: cols[m - m0][pixel] (taps m0..m0+mlen) added onto the input pixels the taps read;
// dx_group points at channel 0 of the group in image `first_image` (the images of dx_group's buffer).
template <typename T>
void scatter_columns_nchw(const ConvParams& p, const std::vector<Tap>& taps, int64_t m0, int64_t mlen,
                          const PixelRuns& runs, const T* cols, int64_t ld, T* dx_group, int64_t first_image) {
  const int64_t base = first_image * p.C * p.HW();
  for (int64_t m = m0; m < m0 + mlen; ++m) {
    const Tap tap = taps[m];
    T* channel = dx_group + tap.c * p.HW();
    for (size_t r = 0; r < runs.runs.size(); ++r) {
      const PixelRun& run = runs.runs[r];
      const int64_t h = p.in_row(run.p, tap.r);
      if (static_cast<uint64_t>(h) >= static_cast<uint64_t>(p.H)) continue;
      const T* src = cols + (m - m0) * ld + run.pos;
      const ColumnWindow& win = runs.windows[r * p.S + tap.s];
      T* row = channel + (run.image_offset - base) + h * p.W;
      for (int64_t i = win.lo; i < win.hi; ++i) row[win.w0 + i * p.stride_w] += src[i];
    }
  }
}

// col2im, NHWC: cols[pixel][tap - m0] over the tap runs of one tap block; dx_group points at the group's
// first channel in image `first_image`.
template <typename T>
void scatter_columns_nhwc(const ConvParams& p, const std::vector<TapRun>& tap_runs, const PixelRuns& runs,
                          const T* cols, int64_t ld, T* dx_group, int64_t first_image) {
  const int64_t base = first_image * p.C * p.HW();
  for (const PixelRun& run : runs.runs)
    for (int64_t i = 0; i < run.len; ++i) {
      const T* src = cols + (run.pos + i) * ld;
      for (const TapRun& tr : tap_runs) {
        const int64_t h = p.in_row(run.p, tr.r), xw = p.in_col(run.q0 + i, tr.s);
        if (!p.in_bounds(h, xw)) continue;
        T* dst = dx_group + (run.image_offset - base) + p.input_offset(0, tr.c0, h, xw);
        for (int64_t c = 0; c < tr.len; ++c) dst[c] += src[tr.pos + c];
      }
    }
}

// Stride > 1: cols = W^T dy (taps x output pixels), block by block, each block scattered into dx (col2im) right
// after its GEMM. A task owns whole images of one group, so the scatter needs no atomics; small images go
// several to a task, so that each block of packed weights serves ~128+ pixels instead of being streamed from
// memory again for every image (ResNet's 4x4 maps). The adds into a dx element come from its own image only,
// in an order fixed by the shape (column blocks are whole images or fixed slices of one), so results do not
// depend on how images are grouped into tasks, nor on the thread count.
// In / Out: T, or (float T, groups 1) bfloat16 bits: dy widened as it is packed, and dx summed in a float buffer
// of the task's images, rounded into dx once they are done, so neither has a float copy of its whole tensor.
template <typename T, typename In, typename Out>
void col2im_grad_input(const ConvParams& p, const In* dy, const T* w, Out* dx) {
  constexpr bool kInPlace = std::is_same_v<Out, T>;
  static_assert(kInPlace || (std::is_same_v<T, float> && std::is_same_v<Out, uint16_t>), "float into bfloat16");
  if (!kInPlace && p.groups != 1) throw std::logic_error("fastconv: bfloat16 col2im needs groups == 1");
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  const int64_t Kg = p.Kg(), Cg = p.Cg(), red = Cg * p.RS(), PQ = p.PQ();
  const bool nhwc = p.channels_last;
  std::vector<Prepacked<T>> packed(p.groups);  // weights with rows = taps, reduction = k
  for (int64_t g = 0; g < p.groups; ++g) {
    const T* wg = w + g * Kg * red;
    const int64_t width = nhwc ? uk.nr : uk.mr;
    packed[g] = prepack<T>(red, Kg, width, uk.kc, [&](T* dst, int64_t k0, int64_t klen, int64_t start, int64_t len) {
      pack_panels_by_row(dst, k0, klen, start, len, width, [&](T* out, int64_t k, int64_t m, int64_t count) {
        std::copy(wg + k * red + m, wg + k * red + m + count, out);
      });
    });
  }
  constexpr int64_t kColumns = 256;  // output pixels per GEMM block
  const int64_t task_images =
      PQ >= kColumns ? 1 : std::max<int64_t>(1, std::min(kColumns / PQ, p.N / (4 * num_threads())));
  const int64_t col_block = std::min(kColumns, task_images * PQ), tasks_per_group = ceil_div(p.N, task_images);
  const int64_t dy_width = nhwc ? uk.mr : uk.nr;              // dy is the A operand for NHWC, B for NCHW
  const int64_t tap_block = nhwc ? round_up(256, uk.nr) : uk.mc;  // taps x pixels block: ~256 KiB

  std::vector<Tap> taps;         // NCHW taps (c, r, s) of the column rows
  if (!nhwc) tap_table(p, 0, red, taps);

  parallel_for(0, p.groups * tasks_per_group, 1, [&](int64_t t0, int64_t t1) {
    PackBuffers<T> buf;
    PixelRuns runs;
    std::vector<TapRun> tap_runs;  // NHWC taps (r, s, c) of a tap block, as channel runs
    std::vector<T> cols(static_cast<size_t>(tap_block * col_block));
    std::vector<T> dy_packed(static_cast<size_t>(round_up(col_block, dy_width) * Kg));
    std::vector<T> dx_images(kInPlace ? 0 : static_cast<size_t>(task_images * p.C * p.HW()));
    std::vector<T> dy_rows(kInPlace || !nhwc ? 0 : static_cast<size_t>(dy_width * uk.kc));
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / tasks_per_group, n0 = (t % tasks_per_group) * task_images;
      const int64_t n1 = std::min(p.N, n0 + task_images);
      // Where the scatter sums: dx itself (from image 0), or the task's float buffer (from image n0).
      T* sums = nullptr;
      int64_t first_image = 0;
      if constexpr (kInPlace) {
        sums = dx;
      } else {
        sums = dx_images.data(), first_image = n0;
      }
      for (int64_t n = n0; n < n1; ++n) {  // the group's part of the images: NCHW one run, NHWC one per pixel
        T* image = sums + (n - first_image) * p.C * p.HW();
        if (!nhwc) {
          T* first = image + g * Cg * p.HW();
          std::fill(first, first + Cg * p.HW(), T(0));
        } else if (p.groups == 1) {
          std::fill(image, image + p.HW() * p.C, T(0));
        } else {
          for (int64_t i = 0; i < p.HW(); ++i) std::fill_n(image + i * p.C + g * Cg, Cg, T(0));
        }
      }
      for (int64_t j0 = n0 * PQ; j0 < n1 * PQ; j0 += col_block) {
        const int64_t jlen = std::min(col_block, n1 * PQ - j0), panels = round_up(jlen, dy_width);
        // dy of the block, packed once for all tap blocks (pixels j are global: j = n * PQ + pq).
        for (int64_t k0 = 0; k0 < Kg; k0 += uk.kc) {
          const int64_t klen = std::min(uk.kc, Kg - k0);
          T* dst = dy_packed.data() + k0 * panels;
          if (!nhwc) {
            pack_panels_by_row(dst, k0, klen, j0, jlen, dy_width, [&](T* out, int64_t k, int64_t j, int64_t cnt) {
              for_runs_in_images(PQ, j, cnt, [&](int64_t n, int64_t pq, int64_t i, int64_t len) {
                copy_widened(dy + (n * p.K + g * Kg + k) * PQ + pq, len, out + i);
              });
            });
          } else {
            for (int64_t pos = 0; pos < jlen; pos += dy_width) {  // pixels are p.K apart in dy
              const int64_t rows = std::min(dy_width, jlen - pos);
              const In* first = dy + (j0 + pos) * p.K + g * Kg + k0;
              if constexpr (std::is_same_v<In, T>) {
                uk.transpose_panel(first, p.K, rows, klen, dst + pos * klen, dy_width);
              } else {  // each pixel's klen channels widened, then transposed as a dense rows x klen block
                for (int64_t i = 0; i < rows; ++i) copy_widened(first + i * p.K, klen, dy_rows.data() + i * klen);
                uk.transpose_panel(dy_rows.data(), klen, rows, klen, dst + pos * klen, dy_width);
              }
            }
          }
        }
        auto dy_block = [&](T*, int64_t k0, int64_t klen, int64_t start, int64_t) {
          return static_cast<const T*>(dy_packed.data() + k0 * panels + ((start - j0) / dy_width) * klen * dy_width);
        };
        pixel_runs(p, j0, jlen, runs);
        for (int64_t m0 = 0; m0 < red; m0 += tap_block) {
          const int64_t mlen = std::min(tap_block, red - m0);
          if (!nhwc) {  // cols[tap][pixel] = sum_k W[k][tap] dy[n][k][pixel]
            gemm_block(
                uk, m0, mlen, j0, jlen, Kg,
                [&](T*, int64_t k0, int64_t klen, int64_t mb, int64_t) {
                  return prepacked_at(packed[g], red, uk.mr, k0, klen, mb);
                },
                dy_block, cols.data(), OutputMap{jlen, jlen, 0, m0, j0}, false, buf);
            scatter_columns_nchw(p, taps, m0, mlen, runs, cols.data(), jlen, sums + g * Cg * p.HW(), first_image);
          } else {  // cols[pixel][tap] = sum_k dy[n][pixel][k] W[k][tap]
            gemm_block(
                uk, j0, jlen, m0, mlen, Kg, dy_block,
                [&](T*, int64_t k0, int64_t klen, int64_t nb, int64_t) {
                  return prepacked_at(packed[g], red, uk.nr, k0, klen, nb);
                },
                cols.data(), OutputMap{mlen, mlen, 0, j0, m0}, false, buf);
            tap_runs_nhwc(p, m0, mlen, tap_runs);
            scatter_columns_nhwc(p, tap_runs, runs, cols.data(), mlen, sums + g * Cg, first_image);
          }
        }
      }
      if constexpr (!kInPlace)  // groups 1: the task's images are one run in either layout
        store_run(sums, (n1 - n0) * p.C * p.HW(), dx + n0 * p.C * p.HW());
    }
  });
}

}  // namespace

template <typename T>
void gemm_grad_input_col2im(const ConvParams& p, const T* dy, const T* w, T* dx) {
  col2im_grad_input(p, dy, w, dx);
}

void gemm_grad_input_col2im_bf16(const ConvParams& p, const uint16_t* dy, const float* w, uint16_t* dx) {
  if (active_isa() == Isa::kAvx512Bf16 && bf16_products() && p.channels_last && p.K % 2 == 0 &&
      reinterpret_cast<uintptr_t>(dy) % 4 == 0)
    return pair_rows_grad_input_strided(p, dy, w, dx);
  col2im_grad_input(p, dy, w, dx);
}

namespace {

// dW[k][tap] = sum_pixels dy[k][pixel] * im2col(x)[pixel][tap], M = k, N = taps, reduction = pixels.
// NCHW: dy rows and im2col rows are both contiguous along the pixels: each packs by transposition (micro.h).
// NHWC: dy rows are contiguous along k and the taps (r, s, c) along c, so both pack from contiguous runs too;
// there the operands may be bfloat16 (In = uint16_t), widened as they are packed.
template <typename T, typename In>
void grad_weight(const ConvParams& p, const In* dy, const In* x, T* dw) {
  constexpr bool kSameType = std::is_same_v<In, T>;
  const int64_t Kg = p.Kg(), red = p.Cg() * p.RS(), PQ = p.PQ(), total = p.K * red;
  const MicroKernel<T> uk = micro_kernel<T>(active_isa());
  const bool nhwc = p.channels_last;
  const int64_t M = Kg, N = red;

  // Tiles of the per-group result, and the batch cut into a number of chunks that depends on the shape only.
  const int64_t mblocks = ceil_div(M, uk.mc);
  const int64_t nblock = round_up(std::min<int64_t>(N, 512), uk.nr), nblocks = ceil_div(N, nblock);
  const int64_t tiles = p.groups * mblocks * nblocks;
  const int64_t memory_cap = std::max<int64_t>(1, (int64_t{1} << 24) / total);
  // About 16 tasks (enough to feed 16 threads; more chunks mean more partial results to fault in and add up),
  // each keeping a reduction of >= kc pixels: shorter ones spend their time packing and summing partials (a 1x1
  // stride-2 layer at 4x4 has only 16 pixels per image).
  const int64_t min_chunk_images = ceil_div(uk.kc, PQ);
  const int64_t chunks = std::max<int64_t>(1, std::min({p.N, ceil_div(16, tiles), memory_cap, p.N / min_chunk_images}));
  const bool direct = chunks == 1;  // else partial results, reduced at the end
  // Not zeroed: every chunk's first k block stores (rather than adds) every entry of its partial result.
  std::unique_ptr<T[]> partial = direct ? nullptr : fresh_array<T>(chunks * total);

  const bool from_planes = packs_from_planes(p);

  // A task: NCHW (chunk, group, m block), over every tile of taps (see below); NHWC (chunk, tile).
  const int64_t tasks_per_chunk = nhwc ? tiles : p.groups * mblocks;
  parallel_for(0, chunks * tasks_per_chunk, 1, [&](int64_t t0, int64_t t1) {
    PackBuffers<T> buf;
    PhasePlanes<T> planes;
    std::vector<T> tap_rows(nhwc ? 0 : static_cast<size_t>(uk.nr * uk.kc));  // one panel's im2col rows
    AlignedBuffer<T> dy_block;  // NCHW: one k block of dy, packed
    std::vector<TapRun> taps;   // NHWC: the tap runs of a block of x's columns
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t chunk = t / tasks_per_chunk, task = t % tasks_per_chunk;
      const int64_t g = nhwc ? task / (mblocks * nblocks) : task / mblocks;
      const int64_t mb = nhwc ? (task / nblocks) % mblocks : task % mblocks;
      const int64_t n_lo = p.N * chunk / chunks, n_hi = p.N * (chunk + 1) / chunks;
      const int64_t m0 = mb * uk.mc, mlen = std::min(uk.mc, M - m0);
      const int64_t pix0 = n_lo * PQ;  // first pixel (n, p, q) of this chunk; reduction index kd = pixel - pix0
      T* c = (direct ? dw : partial.get() + chunk * total) + g * Kg * red;
      const int64_t pixels = (n_hi - n_lo) * PQ;
      if (!nhwc) {
        if constexpr (kSameType) {
          // Both operands are rows contiguous along the pixels (the reduction), packed by transposition: dy rows
          // image by image, im2col rows (from phase planes or x, as the forward packs them) a panel at a time.
          auto pack_dy = [&](T* dst, int64_t k0, int64_t klen, int64_t a0, int64_t alen) {
            for (int64_t pos = 0; pos < alen; pos += uk.mr) {
              const int64_t rows = std::min<int64_t>(uk.mr, alen - pos);
              for_runs_in_images(PQ, pix0 + k0, klen, [&](int64_t n, int64_t pq, int64_t i, int64_t len) {
                const T* src = dy + (n * p.K + g * Kg + a0 + pos) * PQ + pq;
                uk.transpose_panel(src, PQ, rows, len, dst + pos * klen + i * uk.mr, uk.mr);
              });
            }
            return static_cast<const T*>(dst);
          };
          auto pack_x = [&](T* dst, int64_t k0, int64_t klen, int64_t b0, int64_t blen) {
            if (from_planes) {  // the planes of this pixel block, all the tile's channels at once
              planes.reset(p, x, g, pix0 + k0, klen, klen, blen);
              planes.load(b0, blen);
            }
            for (int64_t pos = 0; pos < blen; pos += uk.nr) {
              const int64_t count = std::min<int64_t>(uk.nr, blen - pos);
              if (from_planes)
                planes.pack(tap_rows.data(), b0 + pos, count);
              else
                pack_im2col_nchw(p, x, g, tap_rows.data(), b0 + pos, count, pix0 + k0, klen, klen);
              uk.transpose_panel(tap_rows.data(), klen, count, klen, dst + pos * klen, uk.nr);
            }
            return static_cast<const T*>(dst);
          };
          // The pixels go in k blocks, outermost, so that each block of dy is packed once for all the tiles of
          // taps, not once per tile (three times over on the 128->256 stride-2 layer).
          // Every entry still sums its k blocks in order, as one gemm_block over all the pixels would.
          dy_block.reserve(static_cast<size_t>(round_up(uk.mc, uk.mr) * uk.kc));
          for (int64_t k0 = 0; k0 < pixels; k0 += uk.kc) {
            const int64_t klen = std::min(uk.kc, pixels - k0);
            pack_dy(dy_block.data(), k0, klen, m0, mlen);
            for (int64_t j0 = 0; j0 < N; j0 += nblock)
              gemm_block(
                  uk, m0, mlen, j0, std::min(nblock, N - j0), klen,
                  [&](T*, int64_t, int64_t, int64_t, int64_t) { return static_cast<const T*>(dy_block.data()); },
                  [&](T* dst, int64_t, int64_t kl, int64_t b0, int64_t blen) { return pack_x(dst, k0, kl, b0, blen); },
                  c, OutputMap{red, red, 0}, k0 > 0, buf);
          }
        }
      } else {
        const int64_t nb = task % nblocks, j0 = nb * nblock, jlen = std::min(nblock, N - j0);
        // A reduction row (one pixel) is one run of dy's k and, per tap, runs of x's c. x packs row by row into
        // every panel of the block, the pixel stepped rather than decoded: decoding it and its taps for every
        // panel's row was much of the packing time of a 1x1 stride-2 layer's weight gradient.
        auto pack_dy = [&](T* dst, int64_t k0, int64_t klen, int64_t a0, int64_t alen) {
          pack_panels_by_row(dst, k0, klen, a0, alen, uk.mr, [&](T* out, int64_t kd, int64_t k, int64_t cnt) {
            copy_widened(dy + (pix0 + kd) * p.K + g * Kg + k, cnt, out);
          });
          return static_cast<const T*>(dst);
        };
        // dy's pixel rows hold mr output channels side by side already: the micro-kernel reads them in place
        // (float dy, no bfloat16 products, whole tiles of channels).
        const bool dy_in_place = kSameType && uk.bf16 == nullptr && uk.run_strided_a != nullptr && Kg % uk.mr == 0;
        auto dy_rows = [&](T*, int64_t k0, int64_t, int64_t a0, int64_t) {
          if constexpr (kSameType) return RowsInPlace<T>{dy + (pix0 + k0) * p.K + g * Kg + a0, p.K};
          else return RowsInPlace<T>{nullptr, 0};
        };
        auto pack_x = [&](T* dst, int64_t k0, int64_t klen, int64_t b0, int64_t blen) {
          tap_runs_nhwc(p, b0, blen, taps);  // (taps split at panel edges below)
          Pixel px = pixel_of(p, pix0 + k0);
          for (int64_t kk = 0; kk < klen; ++kk) {
            for (const TapRun& run : taps)
              for (int64_t m = run.pos; m < run.pos + run.len;) {  // the part of the run in each panel
                const int64_t len = std::min(run.pos + run.len - m, uk.nr - m % uk.nr);
                T* out = dst + (m / uk.nr) * klen * uk.nr + kk * uk.nr + m % uk.nr;
                const int64_t h = p.in_row(px.p, run.r), xw = p.in_col(px.q, run.s);
                if (p.in_bounds(h, xw))
                  copy_widened(x + p.input_offset(px.n, g * p.Cg() + run.c0 + m - run.pos, h, xw), len, out);
                else
                  std::fill(out, out + len, T(0));
                m += len;
              }
            if (blen % uk.nr != 0) {  // the last panel's columns past the block
              T* out = dst + (blen / uk.nr) * klen * uk.nr + kk * uk.nr;
              std::fill(out + blen % uk.nr, out + uk.nr, T(0));
            }
            if (++px.q == p.Q) {
              px.q = 0;
              if (++px.p == p.P) px.p = 0, ++px.n;
            }
          }
          return static_cast<const T*>(dst);
        };
        if (dy_in_place)
          gemm_block(uk, m0, mlen, j0, jlen, pixels, dy_rows, pack_x, c, OutputMap{red, red, 0}, false, buf);
        else
          gemm_block(uk, m0, mlen, j0, jlen, pixels, pack_dy, pack_x, c, OutputMap{red, red, 0}, false, buf);
      }
    }
  });

  if (direct) return;
  // Sum the chunks in chunk order.
  parallel_for(0, total, 4096, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) dw[e] = partial[e];
    for (int64_t chunk = 1; chunk < chunks; ++chunk) {
      const T* part = partial.get() + chunk * total;
      for (int64_t e = e0; e < e1; ++e) dw[e] += part[e];
    }
  });
}

}  // namespace

template <typename T>
void gemm_grad_weight(const ConvParams& p, const T* dy, const T* x, T* dw) {
  grad_weight<T, T>(p, dy, x, dw);
}

void gemm_grad_weight_bf16_nhwc(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw) {
  if (!p.channels_last) throw std::logic_error("fastconv: the bfloat16 weight gradient reads NHWC only");
  grad_weight<float, uint16_t>(p, dy, x, dw);
}

#define FASTCONV_INSTANTIATE(T)                                                                   \
  template void gemm_forward<T>(const ConvParams&, const T*, const T*, const T*, T*);           \
  template void gemm_grad_input_col2im<T>(const ConvParams&, const T*, const T*, T*);         \
  template void gemm_grad_weight<T>(const ConvParams&, const T*, const T*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv::cpu
