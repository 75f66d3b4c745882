// Packing: writing GEMM micro-panels straight from conv tensors (implicit im2col), never building the
// im2col matrix. A panel is klen rows (the reduction index kd) of `width` consecutive entries of the other
// GEMM index; entries past the operand's end are zeros so the micro-kernel never needs an edge case.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "conv_params.h"
#include "cpu/gemm/micro.h"

namespace fastconv::cpu {

// fill(out, kd, idx, count) writes entries idx..idx+count of reduction row kd, contiguously.
// Suits operands that are contiguous along the panel index (NCHW activations along q, weights along k).
template <typename T, class Fill>
void pack_panels_by_row(T* dst, int64_t k0, int64_t klen, int64_t start, int64_t len, int64_t width, Fill&& fill) {
  for (int64_t pos = 0; pos < len; pos += width, dst += klen * width) {
    const int64_t count = std::min(width, len - pos);
    for (int64_t kk = 0; kk < klen; ++kk) {
      T* out = dst + kk * width;
      fill(out, k0 + kk, start + pos, count);
      for (int64_t w = count; w < width; ++w) out[w] = T(0);
    }
  }
}

// Calls fn(n, pq, i, len) for pixels j0 .. j0 + count of an NCHW batch (PQ pixels per image) cut into runs
// that stay within one image: run i .. i + len of the range starts at pixel pq of image n.
template <class Fn>
inline void for_runs_in_images(int64_t PQ, int64_t j0, int64_t count, Fn&& fn) {
  int64_t n = j0 / PQ, pq = j0 % PQ;
  for (int64_t i = 0; i < count; ++n, pq = 0) {
    const int64_t len = std::min(count - i, PQ - pq);
    fn(n, pq, i, len);
    i += len;
  }
}

// Reduction index of a conv over an NCHW input: kd = (c * R + r) * S + s. Over NHWC: kd = (r * S + s) * Cg + c.
struct Tap {
  int64_t c, r, s;
};
inline Tap tap_nchw(const ConvParams& p, int64_t kd) { return {kd / (p.R * p.S), (kd / p.S) % p.R, kd % p.S}; }
inline Tap tap_nhwc(const ConvParams& p, int64_t kd) {
  const int64_t rs = kd / p.Cg();
  return {kd % p.Cg(), rs / p.S, rs % p.S};
}

// Output pixel j of the batch, j = (n * P + p) * Q + q.
struct Pixel {
  int64_t n, p, q;
};
inline Pixel pixel_of(const ConvParams& p, int64_t j) {
  return {j / (p.P * p.Q), (j / p.Q) % p.P, j % p.Q};
}

// The i in [0, count) for which start + i * step lies in [0, limit): the columns of a (strided) run of output
// pixels whose tap falls inside the image, so loops over a run need no per-element bounds check.
inline void inside_range(int64_t start, int64_t step, int64_t count, int64_t limit, int64_t& lo, int64_t& hi) {
  lo = start >= 0 ? 0 : std::min(count, ceil_div(-start, step));
  hi = start >= limit ? lo : std::max(lo, std::min(count, (limit - 1 - start) / step + 1));
}

// Runs of consecutive output pixels that share an output row, for a pixel range [j0, j0 + count), with each
// run's input columns per kernel column s: computed once per packing call and reused for every tap, so the
// inner loops do no divisions.
struct PixelRun {
  int64_t image_offset;  // offset of x[n, 0, 0, 0]
  int64_t p, q0, len, pos;  // output row, first column, length, position within the range
};
struct ColumnWindow {
  int64_t w0, lo, hi;  // input column of the run's first pixel; the run's pixels [lo, hi) read inside the image
};
struct PixelRuns {
  std::vector<PixelRun> runs;
  std::vector<ColumnWindow> windows;  // windows[i * S + s]: run i, kernel column s
};

inline void pixel_runs(const ConvParams& p, int64_t j0, int64_t count, PixelRuns& out) {
  out.runs.clear();
  out.windows.clear();
  for (int64_t done = 0; done < count;) {
    const Pixel px = pixel_of(p, j0 + done);
    const int64_t len = std::min(count - done, p.Q - px.q);
    out.runs.push_back({px.n * p.C * p.HW(), px.p, px.q, len, done});
    for (int64_t s = 0; s < p.S; ++s) {
      ColumnWindow win{p.in_col(px.q, s), 0, 0};
      inside_range(win.w0, p.stride_w, len, p.W, win.lo, win.hi);
      out.windows.push_back(win);
    }
    done += len;
  }
}

// Taps kd0..kd0+klen of an NCHW reduction, decoded once per packing call.
inline void tap_table(const ConvParams& p, int64_t kd0, int64_t klen, std::vector<Tap>& taps) {
  taps.resize(klen);
  for (int64_t i = 0; i < klen; ++i) taps[i] = tap_nchw(p, kd0 + i);
}

// NCHW im2col entries of one tap of group g over a pixel range, written contiguously:
// x[n, g*Cg + c, h, w], or 0 in the padding. Within a run, input columns advance by stride_w.
template <typename T>
void im2col_tap_nchw(const ConvParams& p, const T* x, int64_t g, const Tap& t, const PixelRuns& runs, T* out) {
  const T* channel = x + (g * p.Cg() + t.c) * p.HW();
  const int64_t sw = p.stride_w;
  for (size_t r = 0; r < runs.runs.size(); ++r) {
    const PixelRun& run = runs.runs[r];
    T* o = out + run.pos;
    const int64_t h = p.in_row(run.p, t.r);
    if (static_cast<uint64_t>(h) >= static_cast<uint64_t>(p.H)) {
      std::fill(o, o + run.len, T(0));
      continue;
    }
    const T* row = channel + run.image_offset + h * p.W;
    const ColumnWindow& win = runs.windows[r * p.S + t.s];
    const int64_t w0 = win.w0, lo = win.lo, hi = win.hi;
    std::fill(o, o + lo, T(0));
    if (sw == 1)
      std::memcpy(o + lo, row + w0 + lo, (hi - lo) * sizeof(T));
    else
      for (int64_t i = lo; i < hi; ++i) o[i] = row[w0 + i * sw];
    std::fill(o + hi, o + run.len, T(0));
  }
}

// Brings into cache the input rows that tap t reads over the runs.
template <typename T>
void prefetch_tap_rows(const ConvParams& p, const T* x, int64_t g, const Tap& t, const PixelRuns& runs) {
  const T* channel = x + (g * p.Cg() + t.c) * p.HW();
  const int64_t bytes = p.W * static_cast<int64_t>(sizeof(T));
  for (const PixelRun& run : runs.runs) {
    const int64_t h = p.in_row(run.p, t.r);
    if (static_cast<uint64_t>(h) >= static_cast<uint64_t>(p.H)) continue;
    const char* first = reinterpret_cast<const char*>(channel + run.image_offset + h * p.W);
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(first + b);
  }
}

// Runs of output pixels shorter than this cost more to walk than to gather (pack_im2col_nchw).
constexpr int64_t kShortRun = 32;

// offsets[(r * S + s) * count + i]: where pixel i of the runs reads tap (r, s), relative to its channel's first
// element in image 0, or -1 in the padding.
inline void gather_table(const ConvParams& p, const PixelRuns& runs, int64_t count, std::vector<int64_t>& offsets) {
  offsets.resize(p.RS() * count);
  for (int64_t r = 0; r < p.R; ++r)
    for (size_t k = 0; k < runs.runs.size(); ++k) {
      const PixelRun& run = runs.runs[k];
      const int64_t h = p.in_row(run.p, r), row = run.image_offset + h * p.W;
      const bool row_inside = static_cast<uint64_t>(h) < static_cast<uint64_t>(p.H);
      for (int64_t s = 0; s < p.S; ++s) {
        const ColumnWindow& win = runs.windows[k * p.S + s];
        int64_t* out = offsets.data() + (r * p.S + s) * count + run.pos;
        for (int64_t i = 0; i < run.len; ++i)
          out[i] = row_inside && i >= win.lo && i < win.hi ? row + win.w0 + i * p.stride_w : -1;
      }
    }
}

// Forward NCHW B operand: panels of `width` pixels, reduction rows = taps (c, r, s).
template <typename T>
void pack_im2col_nchw(const ConvParams& p, const T* x, int64_t g, T* dst, int64_t k0, int64_t klen, int64_t j0,
                      int64_t jlen, int64_t width) {
  thread_local PixelRuns runs, next;
  thread_local std::vector<Tap> taps;
  thread_local std::vector<int64_t> offsets;
  tap_table(p, k0, klen, taps);
  pixel_runs(p, j0, std::min(width, jlen), next);
  for (int64_t pos = 0; pos < jlen; pos += width, dst += klen * width) {
    const int64_t count = std::min(width, jlen - pos);
    std::swap(runs, next);
    // The input rows of the next panel are fetched while this one is packed: this panel's loads follow the
    // taps across channels and rows, a pattern the hardware prefetchers do not follow, and every row is new.
    if (pos + width < jlen) {
      pixel_runs(p, j0 + pos + width, std::min(width, jlen - pos - width), next);
      for (const Tap& t : taps)
        if (t.s == 0) prefetch_tap_rows(p, x, g, t, next);  // the other columns s read the same rows
    }
    if (static_cast<int64_t>(runs.runs.size()) * kShortRun > count) {  // short runs (small maps): gather by table
      gather_table(p, runs, count, offsets);
      const T* group = x + g * p.Cg() * p.HW();
      for (int64_t kk = 0; kk < klen; ++kk) {
        T* out = dst + kk * width;
        const T* channel = group + taps[kk].c * p.HW();
        const int64_t* at = offsets.data() + (taps[kk].r * p.S + taps[kk].s) * count;
        for (int64_t i = 0; i < count; ++i) out[i] = at[i] >= 0 ? channel[at[i]] : T(0);
        for (int64_t w = count; w < width; ++w) out[w] = T(0);
      }
      continue;
    }
    for (int64_t kk = 0; kk < klen; ++kk) {
      T* out = dst + kk * width;
      im2col_tap_nchw(p, x, g, taps[kk], runs, out);
      for (int64_t w = count; w < width; ++w) out[w] = T(0);
    }
  }
}

// Taps kd0..kd0+klen of an NHWC reduction as runs of consecutive channels of one (r, s), decoded once per
// packing call.
struct TapRun {
  int64_t r, s, c0, len, pos;  // kernel row/column, first channel, length, position within the range
};

inline void tap_runs_nhwc(const ConvParams& p, int64_t kd0, int64_t klen, std::vector<TapRun>& runs) {
  runs.clear();
  for (int64_t kk = 0; kk < klen;) {
    const Tap t = tap_nhwc(p, kd0 + kk);
    const int64_t len = std::min(klen - kk, p.Cg() - t.c);
    runs.push_back({t.r, t.s, t.c, len, kk});
    kk += len;
  }
}

// Forward NHWC A operand: panels of `width` output pixels from pixel j0, reduction rows = the tap runs
// (r, s, c) of one k block. A pixel's tap run is contiguous in x; where a whole panel shares an output row and
// reads inside the image, the run's entries for the panel's pixels are `stride_w * C` apart and pack by
// transposition (`transpose`, the micro-kernel's); elsewhere pixel by pixel, zeros in the padding.
template <typename T>
void pack_im2col_nhwc(const ConvParams& p, const T* x, int64_t g, const std::vector<TapRun>& runs, T* dst,
                      int64_t klen, int64_t j0, int64_t jlen, int64_t width, TransposeFn<T> transpose) {
  thread_local std::vector<Pixel> pixels;  // the panel's pixels, decoded once for all its tap runs
  pixels.resize(width);
  for (int64_t pos = 0; pos < jlen; pos += width, dst += klen * width) {
    const int64_t count = std::min(width, jlen - pos);
    for (int64_t i = 0; i < count; ++i) pixels[i] = pixel_of(p, j0 + pos + i);
    const Pixel first = pixels[0];
    const bool whole_row = count == width && first.q + count <= p.Q;
    for (const TapRun& run : runs) {
      T* out = dst + run.pos * width;
      const int64_t h = p.in_row(first.p, run.r), w0 = p.in_col(first.q, run.s);
      if (whole_row && p.in_bounds(h, w0) && p.in_bounds(h, w0 + (count - 1) * p.stride_w)) {
        transpose(x + p.input_offset(first.n, g * p.Cg() + run.c0, h, w0), p.stride_w * p.C, count, run.len, out,
                  width);
        continue;
      }
      for (int64_t i = 0; i < width; ++i) {
        const Pixel px = i < count ? pixels[i] : first;
        const int64_t hi = p.in_row(px.p, run.r), wi = p.in_col(px.q, run.s);
        if (i < count && p.in_bounds(hi, wi)) {
          const T* src = x + p.input_offset(px.n, g * p.Cg() + run.c0, hi, wi);
          for (int64_t c = 0; c < run.len; ++c) out[c * width + i] = src[c];
        } else {
          for (int64_t c = 0; c < run.len; ++c) out[c * width + i] = T(0);
        }
      }
    }
  }
}

}  // namespace fastconv::cpu
