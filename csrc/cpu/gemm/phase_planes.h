// NCHW im2col rows from a padded, phase-split copy of the input, for strided convs and small maps (the forward's
// B panels; grad-weight transposes the same rows into its panels).
//
// With stride 2 an im2col row (tap (c, r, s) over consecutive output pixels) reads every other input column,
// and on ResNet's small maps the runs are 8 or 16 pixels: packing gathered element by element, with bounds
// checks, and took a third of the layer's time. Split the padded input xp by phase - plane (a, b) of channel c
// holds xp[c][a + sh * i][b + sw * j] - and that row becomes contiguous runs, one per output row:
//   im2col(c, r, s)[n, p, q] = plane(c, r * dh % sh, s * dw % sw)[n][p + r * dh / sh][q + s * dw / sw]
// with no bounds checks left (the padding is in the copy). Only the phases some tap reads are kept (a 1x1
// stride-2 conv keeps one: a quarter of the input). With stride 1 the copy is just a padded one, which turns the
// gathers of small maps (runs shorter than a panel) into copies too.
// The planes hold the channels of the taps packed next (the forward's k block, grad-weight's tile of taps),
// filled just before they are packed: small enough to stay in cache, and the fill reads x row by row, a
// pattern the prefetchers follow.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "conv_params.h"
#include "cpu/gemm/im2col.h"

namespace fastconv::cpu {

// Whether an NCHW conv's im2col rows pack from phase planes: strided convs and maps too narrow for runs
// (kShortRun), except 1x1 kernels (each input element is packed at most once: the copy would only double the
// work) and outputs under 8 columns (4x4 maps measured ~10% slower than gathering straight from x).
inline bool packs_from_planes(const ConvParams& p) {
  return !p.channels_last && p.RS() > 1 && p.Q >= 8 && (p.stride_h > 1 || p.stride_w > 1 || p.Q < kShortRun) &&
         p.padded_extents_small();
}

template <typename T>
class PhasePlanes {
 public:
  // Prepares packing for output pixels [j0, j0 + count) of group g, in panels of `width` pixels, from planes that
  // hold the channels of at most `kc` consecutive taps at a time.
  void reset(const ConvParams& p, const T* x, int64_t g, int64_t j0, int64_t count, int64_t width, int64_t kc) {
    p_ = &p;
    group_ = x + g * p.Cg() * p.HW();
    width_ = width;
    count_ = count;
    const Pixel first = pixel_of(p, j0), last = pixel_of(p, j0 + count - 1);
    n0_ = first.n;
    images_ = last.n - first.n + 1;
    const int64_t extra_rows = (p.R - 1) * p.dil_h / p.stride_h, extra_cols = (p.S - 1) * p.dil_w / p.stride_w;
    i0_ = images_ == 1 ? first.p : 0;
    rows_ = (images_ == 1 ? last.p - first.p + 1 : p.P) + extra_rows;
    // A block spanning images reads the first from its row first.p on and the last up to row last.p only.
    first_image_rows_ = images_ == 1 ? 0 : first.p;
    last_image_rows_ = images_ == 1 ? rows_ : last.p + 1 + extra_rows;
    cols_ = p.Q + extra_cols;
    row_phases_.clear(), col_phases_.clear();
    row_phase_index_.assign(p.stride_h, -1), col_phase_index_.assign(p.stride_w, -1);
    for (int64_t r = 0; r < p.R; ++r) mark_phase(r * p.dil_h % p.stride_h, row_phases_, row_phase_index_);
    for (int64_t s = 0; s < p.S; ++s) mark_phase(s * p.dil_w % p.stride_w, col_phases_, col_phase_index_);
    col_windows_.clear();
    for (int64_t b : col_phases_) {  // the columns j of phase b that read inside x: input column w0 + j * sw
      ColumnWindow win{b - p.pad_w, 0, 0};
      inside_range(win.w0, p.stride_w, cols_, p.W, win.lo, win.hi);
      col_windows_.push_back(win);
    }
    plane_ = rows_ * cols_;
    channel_stride_ = static_cast<int64_t>(row_phases_.size() * col_phases_.size()) * plane_;
    // Room for the channels one k block reads (its first channel may continue one the previous block read).
    image_stride_ = std::min(p.Cg(), ceil_div(kc, p.RS()) + 1) * channel_stride_;
    planes_.resize(static_cast<size_t>(images_ * image_stride_));
    loaded_first_ = loaded_end_ = 0;

    // Runs of the block's pixels along output rows, cut at panel boundaries, with where each starts in a plane.
    // A panel's run length is recorded where all its runs share it (else 0).
    runs_.clear(), panel_first_run_.clear(), panel_run_len_.clear();
    for (int64_t done = 0; done < count;) {
      if (done % width == 0) {
        panel_first_run_.push_back(static_cast<int64_t>(runs_.size()));
        panel_run_len_.push_back(-1);
      }
      const Pixel px = pixel_of(p, j0 + done);
      const int64_t len = std::min({count - done, p.Q - px.q, width - done % width});
      runs_.push_back({done % width, len, (px.n - n0_) * image_stride_ + (px.p - i0_) * cols_ + px.q});
      int64_t& panel_len = panel_run_len_.back();
      panel_len = panel_len == -1 || panel_len == len ? len : 0;
      done += len;
    }
    panel_first_run_.push_back(static_cast<int64_t>(runs_.size()));
  }

  // Fills the planes with the channels of taps k0..k0+klen (at most kc taps), unless they hold them already.
  void load(int64_t k0, int64_t klen) {
    const int64_t c_first = k0 / p_->RS(), c_end = (k0 + klen - 1) / p_->RS() + 1;
    if (c_first >= loaded_first_ && c_end <= loaded_end_) return;
    fill_channels(c_first, c_end);
    loaded_first_ = c_first, loaded_end_ = c_end;
  }

  // Panels of `width` pixels of taps k0..k0+klen (reduction rows) over the whole block, as pack_im2col_nchw.
  void pack(T* dst, int64_t k0, int64_t klen) {
    const ConvParams& p = *p_;
    load(k0, klen);
    const int64_t c_first = loaded_first_;
    tap_offset_.resize(klen);
    for (int64_t kk = 0; kk < klen; ++kk) {
      const Tap t = tap_nchw(p, k0 + kk);
      const int64_t a = t.r * p.dil_h, b = t.s * p.dil_w;
      const int64_t phase = row_phase_index_[a % p.stride_h] * static_cast<int64_t>(col_phases_.size()) +
                            col_phase_index_[b % p.stride_w];
      tap_offset_[kk] = (t.c - c_first) * channel_stride_ + phase * plane_ + (a / p.stride_h) * cols_ + b / p.stride_w;
    }
    const int64_t panels = static_cast<int64_t>(panel_first_run_.size()) - 1;
    for (int64_t panel = 0; panel < panels; ++panel, dst += klen * width_) {
      const Run* first = runs_.data() + panel_first_run_[panel];
      const Run* end = runs_.data() + panel_first_run_[panel + 1];
      const int64_t filled = std::min(width_, count_ - panel * width_);
      for (int64_t kk = 0; kk < klen; ++kk) {
        T* out = dst + kk * width_;
        const T* src = planes_.data() + tap_offset_[kk];
        // Runs of ResNet's 4-, 8- and 16-wide maps are copied with their length known to the compiler.
        switch (panel_run_len_[panel]) {
          case 4: copy_runs<4>(first, end, src, out); break;
          case 8: copy_runs<8>(first, end, src, out); break;
          case 16: copy_runs<16>(first, end, src, out); break;
          default:
            for (const Run* run = first; run != end; ++run) std::copy_n(src + run->source, run->len, out + run->pos);
        }
        for (int64_t w = filled; w < width_; ++w) out[w] = T(0);
      }
    }
  }

 private:
  struct Run {
    int64_t pos, len, source;  // position within the panel, length, offset in the planes of channel 0, tap (0, 0)
  };

  // memcpy of a constant size compiles to a few vector moves (std::copy_n's memmove stayed a library call).
  template <int kLen>
  static void copy_runs(const Run* first, const Run* end, const T* src, T* out) {
    for (const Run* run = first; run != end; ++run) std::memcpy(out + run->pos, src + run->source, kLen * sizeof(T));
  }

  // out[j] = src[j * step] for j in [lo, hi). Stride 2 in float: four at a time, the even lanes of two vectors
  // (SSE2, in every x86-64 build), instead of a load and a store per value (~4% of a stride-2 weight gradient).
  // The vectors read up to src[2 j + 7] < src[2 (hi - 1)], inside the row.
  static void deinterleave(const T* src, int64_t step, T* out, int64_t lo, int64_t hi) {
    int64_t j = lo;
#if defined(__SSE2__)
    if constexpr (std::is_same_v<T, float>) {
      if (step == 2)
        for (; j + 4 < hi; j += 4) {
          const __m128 a = _mm_loadu_ps(src + 2 * j), b = _mm_loadu_ps(src + 2 * j + 4);
          _mm_storeu_ps(out + j, _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
        }
    }
#endif
    for (; j < hi; ++j) out[j] = src[j * step];
  }

  static void mark_phase(int64_t phase, std::vector<int64_t>& phases, std::vector<int64_t>& index) {
    if (index[phase] >= 0) return;
    index[phase] = static_cast<int64_t>(phases.size());
    phases.push_back(phase);
  }

  // Copies channels c_first..c_end of the block's images into the planes, channel c_first first. Rows are read
  // in order, each once for all its phases, while the same rows of the next channel are prefetched: a channel
  // of a small map is only a few cache lines, too short a stream for the hardware prefetchers to pick up.
  void fill_channels(int64_t c_first, int64_t c_end) {
    const ConvParams& p = *p_;
    const int64_t sh = p.stride_h, sw = p.stride_w, nb = static_cast<int64_t>(col_phases_.size());
    const int64_t row_bytes = p.W * static_cast<int64_t>(sizeof(T));
    for (int64_t n = 0; n < images_; ++n)
      for (int64_t c = c_first; c < c_end; ++c) {
        const T* channel = group_ + (n0_ + n) * p.C * p.HW() + c * p.HW();
        const T* next = c + 1 < c_end ? channel + p.HW() : group_ + (n0_ + n + 1) * p.C * p.HW() + c_first * p.HW();
        const bool prefetch = c + 1 < c_end || n + 1 < images_;
        T* planes = planes_.data() + n * image_stride_ + (c - c_first) * channel_stride_;
        const int64_t i_begin = n == 0 ? first_image_rows_ : 0, i_end = n == images_ - 1 ? last_image_rows_ : rows_;
        for (int64_t i = i_begin; i < i_end; ++i)
          for (size_t ia = 0; ia < row_phases_.size(); ++ia) {
            const int64_t h = row_phases_[ia] + sh * (i0_ + i) - p.pad_h;
            const bool inside = static_cast<uint64_t>(h) < static_cast<uint64_t>(p.H);
            const T* row = channel + h * p.W;
            if (inside && prefetch) {
              const char* next_row = reinterpret_cast<const char*>(next + h * p.W);
              for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(next_row + b);
            }
            for (int64_t ib = 0; ib < nb; ++ib) {
              T* out = planes + (static_cast<int64_t>(ia) * nb + ib) * plane_ + i * cols_;
              if (!inside) {
                std::fill(out, out + cols_, T(0));
                continue;
              }
              const int64_t w0 = col_windows_[ib].w0, lo = col_windows_[ib].lo, hi = col_windows_[ib].hi;
              std::fill(out, out + lo, T(0));
              if (sw == 1)
                std::copy(row + w0 + lo, row + w0 + hi, out + lo);
              else
                deinterleave(row + w0, sw, out, lo, hi);
              std::fill(out + hi, out + cols_, T(0));
            }
          }
      }
  }

  const ConvParams* p_ = nullptr;
  const T* group_ = nullptr;
  int64_t width_ = 0, count_ = 0, n0_ = 0, images_ = 0, i0_ = 0, rows_ = 0, cols_ = 0;
  int64_t plane_ = 0, channel_stride_ = 0, image_stride_ = 0, loaded_first_ = 0, loaded_end_ = 0;
  int64_t first_image_rows_ = 0, last_image_rows_ = 0;  // rows filled: [first_image_rows_, ..) of image 0, etc.
  std::vector<int64_t> row_phases_, col_phases_, row_phase_index_, col_phase_index_;
  std::vector<int64_t> panel_first_run_, panel_run_len_, tap_offset_;
  std::vector<Run> runs_;
  std::vector<ColumnWindow> col_windows_;
  std::vector<T> planes_;
};

}  // namespace fastconv::cpu
