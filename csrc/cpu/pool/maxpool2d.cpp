// max_pool2d forward (with argmax indices) and backward, bandwidth-bound: one streaming pass each.
// The forward's inner loops are the per-ISA row kernels of rows.h (semantics there); this file
// splits the work over threads, and holds the backward scatter.
#include "cpu/pool/maxpool2d.h"

#include <algorithm>
#include <climits>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/bf16_bits.h"

#include "cpu/parallel.h"
#include "cpu/pool/rows.h"

namespace fastconv::cpu {

namespace {

// Where a window's scan starts: -inf for floating types, the lowest value for integers (as torch).
template <typename T>
T lowest() {
  return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::lowest();
}

template <typename S, typename Pos>
PoolRowKernels<S, Pos> row_kernels(Isa isa) {
  return pick_for_isa(isa, &scalar::pool_rows<S, Pos>, &avx2::pool_rows<S, Pos>, &avx512::pool_rows<S, Pos>);
}

// NHWC with fewer channels than a vector: the NHWC row kernel would do every channel as a scalar tail, so
// instead each image is transposed to planes in a per-thread scratch, pooled by the vectorised NCHW rows, and
// transposed back (LeNet's 6-channel pool at batch 64, 2 threads: 0.25 ms against 0.79-0.89 ms with the row
// kernel; torch 0.31). Tasks over images, so only with enough images to go round: one thread this way does ~4x
// what one thread of the row kernel does.
constexpr int64_t kPlanarChannelsMax = 15;
// Elements of one image: the scratch (its planes, outputs and int64 indices) stays under ~4 MiB for float.
constexpr int64_t kPlanarImageMax = int64_t{1} << 18;
bool pools_through_planes(const PoolParams& p) {
  return p.channels_last && p.C <= kPlanarChannelsMax && p.HW() * p.C <= kPlanarImageMax &&
         4 * p.N >= num_threads() && padded_rows_fit(p);
}

// S: the element type (rows.h; uint16_t: bfloat16 bits), T the type it is compared in.
template <typename S, typename Pos, typename T = pool_compute_t<S>>
void forward_through_planes(const PoolParams& p, const PoolRowKernels<S, Pos>& rows, const S* x, S* y,
                            int64_t* indices) {
  const int64_t C = p.C, HW = p.HW(), PQ = p.PQ();
  parallel_for(0, p.N, 1, [&](int64_t n0, int64_t n1) {
    std::vector<S> planes(C * HW), out(C * PQ);
    std::vector<T> best(padded_columns(p)), padded(padded_rows_size(p));
    std::vector<int64_t> idx(C * PQ);
    std::vector<Pos> best_pos(best.size());
    for (int64_t n = n0; n < n1; ++n) {
      const S* image = x + n * HW * C;
      for (int64_t i = 0; i < HW; ++i)
        for (int64_t c = 0; c < C; ++c) planes[c * HW + i] = image[i * C + c];
      for (int64_t c = 0; c < C; ++c)
        for (int64_t op = 0; op < p.P; op += kPoolRowBlock)
          rows.nchw_rows(p, planes.data() + c * HW, op, std::min(op + kPoolRowBlock, p.P), lowest<T>(),
                         out.data() + c * PQ + op * p.Q, idx.data() + c * PQ + op * p.Q, best.data(),
                         best_pos.data(), padded.data());
      S* y_image = y + n * PQ * C;
      int64_t* idx_image = indices + n * PQ * C;
      for (int64_t i = 0; i < PQ; ++i)
        for (int64_t c = 0; c < C; ++c) y_image[i * C + c] = out[c * PQ + i], idx_image[i * C + c] = idx[c * PQ + i];
    }
  });
}

// Tasks over (plane or image, output row) ranges; each row is written by exactly one task.
template <typename S, typename Pos, typename T = pool_compute_t<S>>
void forward_rows(const PoolParams& p, const S* x, S* y, int64_t* indices) {
  const PoolRowKernels<S, Pos> rows = row_kernels<S, Pos>(active_isa());
  if (pools_through_planes(p)) return forward_through_planes(p, rows, x, y, indices);
  if (!p.channels_last && !padded_rows_fit(p)) {  // an NCHW plane is an NHWC image of one channel
    PoolParams planes_as_images = p;
    planes_as_images.N = p.N * p.C;
    planes_as_images.C = 1;
    planes_as_images.channels_last = true;
    return forward_rows<S, Pos>(planes_as_images, x, y, indices);
  }
  const int64_t planes = p.channels_last ? p.N : p.N * p.C;
  const int64_t in_plane = p.channels_last ? p.HW() * p.C : p.HW(), out_row = p.channels_last ? p.Q * p.C : p.Q;
  parallel_for(0, planes * p.P, std::max<int64_t>(1, 4096 / std::max<int64_t>(out_row, 1)),
                   [&](int64_t r0, int64_t r1) {
    std::vector<T> best(std::max(padded_columns(p), p.C));
    std::vector<Pos> best_pos(best.size());
    if (p.channels_last) {
      for (int64_t r = r0; r < r1; ++r)
        rows.nhwc_row(p, x + (r / p.P) * in_plane, r % p.P, lowest<T>(), y + r * out_row, indices + r * out_row,
                      best.data(), best_pos.data());
      return;
    }
    std::vector<T> padded(padded_rows_size(p));
    for (int64_t r = r0; r < r1;) {  // blocks of rows within one plane
      const int64_t plane = r / p.P, op = r % p.P, count = std::min({r1 - r, p.P - op, kPoolRowBlock});
      rows.nchw_rows(p, x + plane * in_plane, op, op + count, lowest<T>(), y + r * out_row, indices + r * out_row,
                     best.data(), best_pos.data(), padded.data());
      r += count;
    }
  });
}

}  // namespace

template <typename S>
void max_pool2d_forward(const PoolParams& p, const S* x, S* y, int64_t* indices) {
  if (p.N * p.C * p.P * p.Q == 0) return;
  // 32-bit positions while the plane allows: same lane width as float, so the compare-and-blend vectorises.
  if (p.HW() <= INT32_MAX)
    forward_rows<S, int32_t>(p, x, y, indices);
  else
    forward_rows<S, int64_t>(p, x, y, indices);
}

namespace {

// dst += g, in the tensor's type: bfloat16 (its bits) adds in float and rounds to nearest even each time, as
// torch's bfloat16 backward does, so where windows overlap the sums round as torch's do, in the same order.
template <typename T>
inline void accumulate(T& dst, T g) {
  if constexpr (std::is_same_v<T, uint16_t>)
    dst = round_to_bf16(widen_bf16(dst) + widen_bf16(g));
  else
    dst += g;
}

}  // namespace

template <typename T>
void max_pool2d_backward(const PoolParams& p, const T* dy, const int64_t* indices, T* dx) {
  const int64_t HW = p.HW();
  // A window wholly in the padding (possible with dilation) has torch's index of its first tap, which may lie
  // outside the plane: such an index names no element and gets no gradient (as on CUDA).
  auto in_plane = [HW](int64_t i) { return static_cast<uint64_t>(i) < static_cast<uint64_t>(HW); };
  if (!p.channels_last) {
    // One plane per task: the scatter into it is serial, hence race-free and in a fixed order.
    parallel_for(0, p.N * p.C, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t plane = b0; plane < b1; ++plane) {
        const T* g = dy + plane * p.PQ();
        const int64_t* idx = indices + plane * p.PQ();
        T* out = dx + plane * HW;
        std::fill(out, out + HW, T(0));
        for (int64_t o = 0; o < p.PQ(); ++o)
          if (in_plane(idx[o])) accumulate(out[idx[o]], g[o]);
      }
    });
    return;
  }
  // NHWC: a task owns one image; within it, output pixels are visited in order and each pixel's channels
  // scatter to distinct addresses.
  const int64_t C = p.C;
  parallel_for(0, p.N, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      T* image = dx + n * HW * C;
      std::fill(image, image + HW * C, T(0));
      for (int64_t o = n * p.PQ(); o < (n + 1) * p.PQ(); ++o) {
        const int64_t* idx = indices + o * C;
        const T* g = dy + o * C;
        bool all_in_plane = true;  // one vectorised range check per pixel, then an unchecked scatter
        for (int64_t c = 0; c < C; ++c) all_in_plane &= in_plane(idx[c]);
        if (all_in_plane) {
          for (int64_t c = 0; c < C; ++c) accumulate(image[idx[c] * C + c], g[c]);
          continue;
        }
        for (int64_t c = 0; c < C; ++c)
          if (in_plane(idx[c])) accumulate(image[idx[c] * C + c], g[c]);
      }
    }
  });
}

#define FASTCONV_INSTANTIATE(T)                                                              \
  template void max_pool2d_forward<T>(const PoolParams&, const T*, T*, int64_t*);            \
  template void max_pool2d_backward<T>(const PoolParams&, const T*, const int64_t*, T*);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
FASTCONV_INSTANTIATE(uint16_t)  // bfloat16 bits
FASTCONV_INSTANTIATE(uint8_t)
FASTCONV_INSTANTIATE(int8_t)
FASTCONV_INSTANTIATE(int16_t)
FASTCONV_INSTANTIATE(int32_t)
FASTCONV_INSTANTIATE(int64_t)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv::cpu
