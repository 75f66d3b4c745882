// Drivers of the direct conv kernels (see direct.h): applicability, weight layout, padded rows, threads.
#include "cpu/direct/direct.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "cpu/layout.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"

namespace fastconv::cpu {

namespace {

// Input rows h0 .. h1 of channel c of image n into dst (rows `width` apart): padded column i holds input column
// i - pad_w, zeros elsewhere (pad_w < 0 for some grad-input problems: the row's first columns are never read).
void pad_rows(const ConvParams& p, const float* x, int64_t n, int64_t c, int64_t h0, int64_t h1, int64_t width,
              float* dst) {
  const int64_t i0 = std::max<int64_t>(0, p.pad_w), i1 = std::min(width, p.W + p.pad_w);
  for (int64_t h = h0; h < h1 && i0 < i1; ++h)
    std::copy_n(x + p.input_offset(n, c, h, i0 - p.pad_w), i1 - i0, dst + (h - h0) * width + i0);
}

// Plane s of channel c of image n (layout in direct.h) into dst. Rows are short (LeNet's second layer: 10
// floats), so they are copied and zeroed by plain loops, kept from becoming memmove / memset calls: three calls a
// row took a third as long as the kernel's sums.
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void fill_shifted_plane(const ConvParams& p, const float* x, int64_t n, int64_t c, int64_t s, float* dst) {
  const int64_t plane = shifted_plane_size(p), rows = p.P + (p.R - 1) * p.dil_h;
  const int64_t shift = p.in_col(0, s);  // column q reads input column q + shift (stride_w is 1)
  const int64_t q0 = std::clamp<int64_t>(-shift, 0, p.Q), q1 = std::clamp<int64_t>(p.W - shift, q0, p.Q);
  for (int64_t i = 0; i < rows; ++i) {
    float* row = dst + i * p.Q;
    const int64_t h = p.in_row(0, 0) + i;
    const bool inside = h >= 0 && h < p.H;
    for (int64_t q = 0; q < (inside ? q0 : p.Q); ++q) row[q] = 0.0f;
    if (!inside) continue;
    const float* src = x + p.input_offset(n, c, h, 0);
    for (int64_t q = q0; q < q1; ++q) row[q] = src[q + shift];
    for (int64_t q = q1; q < p.Q; ++q) row[q] = 0.0f;
  }
  for (int64_t i = rows * p.Q; i < plane; ++i) dst[i] = 0.0f;
}

// The shifted planes of images n0 .. n0 + images into `planes`.
void fill_shifted_planes(const ConvParams& p, const float* x, int64_t n0, int64_t images, float* planes) {
  const int64_t plane = shifted_plane_size(p);
  parallel_for(0, images * p.C, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t s = 0; s < p.S; ++s)
        fill_shifted_plane(p, x, n0 + t / p.C, t % p.C, s, planes + (t * p.S + s) * plane);
  });
}

// Stride 1: the weight gradient's lane sums from shifted planes, built for a slice of images at a time (~1 MiB
// of planes and padded dy, or one image's; callers send images of over 16 MiB of planes to the row path) and
// 64-byte aligned, so that when Q is a multiple of 16 the kernel's loads stay on cache lines, as dy's do. Slices
// of ~16 MiB cost a fresh mapping and its page faults on most calls (the whitening layer's weight gradient at
// batch 256, between torch's calls: 4.2 ms against 2.5 with 1 MiB slices; in channels_last, through NCHW copies,
// 10.8 against 3.5).
// Tasks are (chunk of the slice's images, group of output channels) pairs, at least kFewTapsTasks of them: by
// groups alone LeNet's 3 -> 6 layer made 3 tasks, one thread idle for a third of the time. Each chunk has its own
// sums, added up in chunk order at the end: the result does not depend on the threads. A task takes its images a
// few at a time, as many as keep their dy rows and one input channel's planes in L1 (~24 KiB) while the R rows
// of taps pass over them.
constexpr int64_t kFewTapsTasks = 16;

void grad_weight_from_planes(const ConvParams& p, const float* dy, const float* x, const DirectKernels& kernels,
                             int64_t groups, double* sums) {
  const int64_t plane = shifted_plane_size(p), per_image = p.C * p.S * plane, PQ = p.PQ();
  const int64_t KB = kernels.wgrad_channels, group_sums = kernels.wgrad_sums(p);
  const int64_t dy_plane = round_up(PQ, 16);  // whole vectors: a copy with zeros after each plane if need be
  const int64_t dy_copy = dy_plane == PQ ? 0 : p.K * dy_plane;  // per image
  const int64_t slice = std::clamp<int64_t>((int64_t{1} << 18) / (per_image + dy_copy), 1, p.N);
  const int64_t chunks = std::min(slice, ceil_div(kFewTapsTasks, groups));
  const int64_t batch = std::max<int64_t>(1, 6144 / (KB * dy_plane + p.S * plane));  // ~24 KiB
  AlignedBuffer<float> storage, dy_storage;
  storage.reserve(static_cast<size_t>(slice * per_image));
  float* planes = storage.data();
  dy_storage.reserve(static_cast<size_t>(slice * dy_copy));
  std::vector<double> chunk_sums(static_cast<size_t>((chunks - 1) * groups * group_sums), 0.0);
  for (int64_t n0 = 0; n0 < p.N; n0 += slice) {
    const int64_t images = std::min(slice, p.N - n0);
    fill_shifted_planes(p, x, n0, images, planes);
    const float* dy_slice = dy + n0 * p.K * PQ;
    if (dy_plane != PQ) {
      float* padded = dy_storage.data();
      parallel_for(0, images * p.K, 16, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          std::copy_n(dy_slice + t * PQ, PQ, padded + t * dy_plane);
          std::fill(padded + t * dy_plane + PQ, padded + (t + 1) * dy_plane, 0.0f);
        }
      });
      dy_slice = padded;
    }
    parallel_for(0, chunks * groups, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t chunk = t / groups, g = t % groups;
        double* at = (chunk == 0 ? sums : chunk_sums.data() + (chunk - 1) * groups * group_sums) + g * group_sums;
        const int64_t i1 = images * (chunk + 1) / chunks;
        for (int64_t b0 = images * chunk / chunks; b0 < i1; b0 += batch)
          kernels.grad_weight_planes(p, planes, dy_slice, dy_plane, g * KB, b0, std::min(i1, b0 + batch), at);
      }
    });
  }
  for (int64_t chunk = 1; chunk < chunks; ++chunk)
    for (int64_t i = 0; i < groups * group_sums; ++i) sums[i] += chunk_sums[(chunk - 1) * groups * group_sums + i];
}

// Stride_h > 1: padded input rows (as the forward's) and dy rows of whole vectors, a slice of images at a time.
void grad_weight_from_rows(const ConvParams& p, const float* dy, const float* x, const DirectKernels& kernels,
                           int64_t groups, double* sums) {
  // dy rows in whole vectors of the widest ISA (16 floats), which every narrower one divides.
  const int64_t width = padded_row_width(p), columns = round_up(p.Q, 16);
  const int64_t slice = std::max<int64_t>(1, (int64_t{1} << 22) / (p.C * p.H * width + p.K * p.P * columns));
  std::vector<float> padded_x, padded_dy;
  for (int64_t n0 = 0; n0 < p.N; n0 += slice) {
    const int64_t images = std::min(slice, p.N - n0);
    padded_x.assign(static_cast<size_t>(images * p.C * p.H * width), 0.0f);
    parallel_for(0, images * p.C, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        pad_rows(p, x, n0 + t / p.C, t % p.C, 0, p.H, width, padded_x.data() + t * p.H * width);
    });
    // dy rows as they are when they fill whole vectors, else copied with zeros after them.
    const float* dy_rows = dy + n0 * p.K * p.P * p.Q;
    if (columns != p.Q) {
      padded_dy.assign(static_cast<size_t>(images * p.K * p.P * columns), 0.0f);
      const float* src = dy_rows;
      parallel_for(0, images * p.K * p.P, 64, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) std::copy_n(src + r * p.Q, p.Q, padded_dy.data() + r * columns);
      });
      dy_rows = padded_dy.data();
    }
    parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g)
        kernels.grad_weight(p, padded_x.data(), width, dy_rows, columns, g * kernels.wgrad_channels, images,
                            sums + g * kernels.wgrad_sums(p));
    });
  }
}

// The NCHW twin of a channels_last problem.
ConvParams as_nchw(const ConvParams& p) {
  ConvParams nchw = p;
  nchw.channels_last = false;
  return nchw;
}

// Runs fn(slice, n0, xt, kt) for slices of a channels_last problem's batch: `slice` is the NCHW twin of images
// n0 .. n0 + slice.N, xt their input x transposed to NCHW, kt room for their K-channel NCHW tensor (dy or y).
// A slice at a time through one scratch buffer of ~4 MiB (one image's worth when that is more): the copies stay
// in cache, and only that buffer's pages are faulted in, not a batch-sized copy's (two 16 MiB copies took 3x the
// first layer's NCHW grad-input).
template <class Fn>
void over_nchw_slices(const ConvParams& p, const float* x, Fn&& fn) {
  const int64_t x_image = p.C * p.HW(), per_image = x_image + p.K * p.PQ();
  const int64_t slice = std::clamp<int64_t>((int64_t{1} << 20) / std::max<int64_t>(per_image, 1), 1, p.N);
  std::unique_ptr<float[]> scratch(new float[slice * per_image]);
  ConvParams twin = as_nchw(p);
  for (int64_t n0 = 0; n0 < p.N; n0 += slice) {
    twin.N = std::min(slice, p.N - n0);
    float* xt = scratch.get();
    transpose_images(x + n0 * x_image, xt, twin.N, p.HW(), p.C);
    fn(static_cast<const ConvParams&>(twin), n0, static_cast<const float*>(xt), xt + twin.N * x_image);
  }
}

// Weights from `from`'s layout (K x C x R x S or K x R x S x C) into `to`'s.
void copy_weights(const ConvParams& from, const float* src, const ConvParams& to, float* dst) {
  for (int64_t k = 0; k < from.K; ++k)
    for (int64_t c = 0; c < from.C; ++c)
      for (int64_t r = 0; r < from.R; ++r)
        for (int64_t s = 0; s < from.S; ++s) dst[to.weight_offset(k, c, r, s)] = src[from.weight_offset(k, c, r, s)];
}

// An image input to more than a few channels (nhwc_image_input), or over half a vector to 16 output channels
// (nhwc_grad_weight_in_place): read in place (an image input's dy is too wide to copy: the fast CIFAR net's
// whitening layer 3.5-3.9 -> 2.5 ms, ResNet-18's first layer 5.6 -> 2.8; LeNet's 6 -> 16 layer 1.2-1.4 ->
// 0.3-0.5 ms, Zen 4). T: float, or bfloat16 bits, widened as read (no float copies of dy: ~2.5 ms of ResNet-18's
// first layer). Tasks are blocks of output rows, a number fixed by the shape whatever the thread count, each with
// its own sums, added up in block order at the end: the result does not depend on the threads. At most 64 blocks,
// fewer where their sums would pass ~16 MiB (wide layers: 4 -> 1024 channels, 5x5, would take 52 MiB).
constexpr int64_t kImageGradBlocks = 64;
constexpr int64_t kImageGradSumsMax = int64_t{1} << 21;  // doubles

template <typename T>
void image_grad_weight_nhwc(const ConvParams& p, const T* dy, const T* x, float* dw) {
  const DirectKernels kernels = direct_kernels(active_isa());
  ImageGradWeightNhwc<T> kernel;
  if constexpr (std::is_same_v<T, float>)
    kernel = kernels.image_grad_weight_nhwc;
  else
    kernel = kernels.image_grad_weight_nhwc_bf16;
  const int64_t taps = p.C * p.R * p.S, kpad = image_grad_kpad(p), per_block = taps * kpad;
  const int64_t rows = p.N * p.P;
  const int64_t blocks = std::min({rows, kImageGradBlocks, std::max<int64_t>(1, kImageGradSumsMax / per_block)});
  std::vector<double> sums(static_cast<size_t>(blocks * per_block), 0.0);
  parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> scratch(static_cast<size_t>(image_grad_scratch_floats(p)));
    for (int64_t b = b0; b < b1; ++b)
      kernel(p, dy, x, rows * b / blocks, rows * (b + 1) / blocks, scratch.data(), sums.data() + b * per_block);
  });
  for (int64_t tap = 0; tap < taps; ++tap)
    for (int64_t k = 0; k < p.K; ++k) {
      double sum = 0.0;
      for (int64_t b = 0; b < blocks; ++b) sum += sums[b * per_block + tap * kpad + k];
      dw[p.weight_offset(k, tap % p.C, tap / p.C / p.S, tap / p.C % p.S)] = static_cast<float>(sum);
    }
}

// The forward of an image input to more than a few channels, or of a vector or more of output channels
// (nhwc_forward_in_place): in place, pixel by pixel (no NCHW copies of x and y). With under a vector most lanes
// would idle: LeNet's 3->6 layer is faster through NCHW copies. T as above (y rounded once: no float y to round
// afterwards, ~1 ms of the whitening layer at batch 256).
template <typename T>
void image_forward_nhwc(const ConvParams& p, const T* x, const float* w, const float* bias, T* y) {
  const int64_t kpad = round_up(p.K, 16), taps = p.R * p.S * p.C;
  std::vector<float> wt(static_cast<size_t>(taps * kpad), 0.0f), bias_padded(static_cast<size_t>(kpad), 0.0f);
  for (int64_t k = 0; k < p.K; ++k) {
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s)
        for (int64_t c = 0; c < p.C; ++c) wt[((r * p.S + s) * p.C + c) * kpad + k] = w[p.weight_offset(k, c, r, s)];
    if (bias != nullptr) bias_padded[k] = bias[k];
  }
  const DirectKernels kernels = direct_kernels(active_isa());
  ImageRowsNhwc<T> image_rows;
  if constexpr (std::is_same_v<T, float>)
    image_rows = kernels.image_rows_nhwc;
  else
    image_rows = kernels.image_rows_nhwc_bf16;
  parallel_for(0, p.N * p.P, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> rows(static_cast<size_t>(image_rows_floats(p)));
    for (int64_t t = t0; t < t1; ++t)
      image_rows(p, x, wt.data(), kpad, bias_padded.data(), y, t / p.P, t % p.P, rows.data());
  });
}

}  // namespace

DirectKernels direct_kernels(Isa isa) {
  return pick_for_isa(isa, &scalar::direct_kernels, &avx2::direct_kernels, &avx512::direct_kernels);
}

// The result does not depend on the thread count: the row path's tasks own whole output channels and sum over
// every image and row in order; the plane path's keep a sum per chunk of images, added up in chunk order. Images
// go in slices (at most ~16 MiB of padded input and dy), so the scratch stays bounded for large images and batches.
void few_taps_grad_weight(const ConvParams& p, const float* dy, const float* x, float* dw) {
  const DirectKernels kernels = direct_kernels(active_isa());
  if (nhwc_grad_weight_in_place(p, kernels.lanes)) return image_grad_weight_nhwc(p, dy, x, dw);
  const int64_t groups = ceil_div(p.K, kernels.wgrad_channels);
  std::vector<double> sums(static_cast<size_t>(groups * kernels.wgrad_sums(p)), 0.0);
  auto add_sums = [&](const ConvParams& nchw, const float* dy_nchw, const float* x_nchw) {
    // One image's planes are S copies of its input: over ~16 MiB, the padded rows of the row path cost less.
    if (nchw.stride_h == 1 && nchw.C * nchw.S * shifted_plane_size(nchw) <= (int64_t{1} << 22))
      grad_weight_from_planes(nchw, dy_nchw, x_nchw, kernels, groups, sums.data());
    else
      grad_weight_from_rows(nchw, dy_nchw, x_nchw, kernels, groups, sums.data());
  };
  const ConvParams twin = as_nchw(p);
  std::vector<float> dw_nchw;
  if (p.channels_last) {  // NCHW copies of x and dy; the sums go on over the slices in image order
    dw_nchw.resize(static_cast<size_t>(p.K * p.C * p.R * p.S));
    over_nchw_slices(p, x, [&](const ConvParams& slice, int64_t n0, const float* xt, float* dyt) {
      transpose_images(dy + n0 * p.PQ() * p.K, dyt, slice.N, p.PQ(), p.K);
      add_sums(slice, dyt, xt);
    });
  } else {
    add_sums(p, dy, x);
  }
  float* out = p.channels_last ? dw_nchw.data() : dw;
  parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g)
      kernels.grad_weight_finish(twin, sums.data() + g * kernels.wgrad_sums(p), g * kernels.wgrad_channels, out);
  });
  if (p.channels_last) copy_weights(twin, dw_nchw.data(), p, dw);
}

void few_outputs_forward(const ConvParams& p, const float* x, const float* w, const float* bias, float* y) {
  if (nhwc_forward_in_place(p, direct_kernels(active_isa()).lanes)) return image_forward_nhwc(p, x, w, bias, y);
  if (p.channels_last) {  // through NCHW copies of x and y
    std::vector<float> wt(static_cast<size_t>(p.K * p.C * p.R * p.S));
    copy_weights(p, w, as_nchw(p), wt.data());
    over_nchw_slices(p, x, [&](const ConvParams& slice, int64_t n0, const float* xt, float* yt) {
      few_outputs_forward(slice, xt, wt.data(), bias, yt);
      transpose_images(yt, y + n0 * p.PQ() * p.K, slice.N, p.K, p.PQ());
    });
    return;
  }
  const FewOutputsRows rows_kernel = direct_kernels(active_isa()).forward_rows;
  std::vector<float> wp(static_cast<size_t>(p.C * p.R * p.S * p.K));  // [c][r][s][k]: k contiguous
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s) wp[((c * p.R + r) * p.S + s) * p.K + k] = w[p.weight_offset(k, c, r, s)];
  const int64_t width = padded_row_width(p);
  // Tasks of several output rows of one image: their input rows are padded once and read by up to R output
  // rows each. Whole images when there are enough of them to share out (and they fit in a few MiB).
  const int64_t threads = num_threads();
  const int64_t share = p.N >= 2 * threads ? p.P : std::max<int64_t>(1, p.P / (2 * threads));
  const int64_t fit = (int64_t{1} << 20) / (p.C * width) - (p.R - 1) * p.dil_h;  // <= ~4 MiB of padded rows
  const int64_t rows = std::max<int64_t>(1, std::min(share, fit));
  const int64_t blocks = ceil_div(p.P, rows);
  parallel_for(0, p.N * blocks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> padded;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, p0 = (t % blocks) * rows, p1 = std::min(p.P, p0 + rows);
      // Every row the block reads, the vertical padding included (as zeros): the kernel skips none.
      const int64_t first = p.in_row(p0, 0), count = p.in_row(p1 - 1, p.R - 1) - first + 1;
      const int64_t h0 = std::max<int64_t>(0, first), h1 = std::min(p.H, first + count);
      padded.assign(static_cast<size_t>(p.C * count * width), 0.0f);
      for (int64_t c = 0; c < p.C && h0 < h1; ++c)
        pad_rows(p, x, n, c, h0, h1, width, padded.data() + (c * count + h0 - first) * width);
      rows_kernel(p, PaddedRows{padded.data(), count * width, first}, wp.data(), bias, y, n, p0, p1);
    }
  });
}

void few_outputs_forward_bf16(const ConvParams& p, const uint16_t* x, const float* w, const float* bias, uint16_t* y) {
  if (!nhwc_image_input(p)) throw std::logic_error("fastconv: bfloat16 direct forward of a non-image input");
  image_forward_nhwc(p, x, w, bias, y);
}

void few_taps_grad_weight_bf16(const ConvParams& p, const uint16_t* dy, const uint16_t* x, float* dw) {
  if (!nhwc_image_input(p)) throw std::logic_error("fastconv: bfloat16 direct weight gradient of a non-image input");
  image_grad_weight_nhwc(p, dy, x, dw);
}

}  // namespace fastconv::cpu
