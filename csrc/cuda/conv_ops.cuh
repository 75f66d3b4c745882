// Operand gatherers of the three conv2d GEMMs (see igemm.cuh). Index math follows conv_params.h:
//   forward       C[m = (n,p,q)][k]     = sum_red A[m][red] * B^T[k][red],   red in weight order
//   backward-in   C[m = (n,h,w)][c]     = sum over (k, r, s) with h + pad - r*dil = p*stride (likewise w)
//   backward-w    C[k][col = (c,r,s)]  = sum over npq = (n,p,q) in one split-K chunk
// Weight order of the reduction: (c, r, s) for NCHW (weight K x Cg x R x S), (r, s, c) for channels_last
// (weight K x R x S x Cg), so the weight row of output channel k is contiguous in red in both layouts.
// A row beyond the problem gets a context whose loads all fail their predicate (row offset -2^30 or limit 0).
#pragma once
#include "common.cuh"

namespace fastconv {
namespace cuda {

// ConvParams prepared for the device: 32-bit sizes (checked < 2^30 on the host) and magic divisors.
struct ConvDev {
  int C, H, W, K, R, S, P, Q, sh, sw, ph, pw, dil_h, dil_w, Cg, Kg, RS, CgRS, KgRS;
  int64_t N, G, HW, PQ, CHW, KPQ, NPQ, NHW;
  FastDiv64 d_pq, d_hw;
  FastDiv32 d_q, d_w, d_s, d_rs, d_cg, d_kg, d_sh, d_sw;

  static ConvDev make(const ConvParams& p) {
    ConvDev d;
    d.C = int(p.C); d.H = int(p.H); d.W = int(p.W); d.K = int(p.K); d.R = int(p.R); d.S = int(p.S);
    d.P = int(p.P); d.Q = int(p.Q); d.sh = int(p.stride_h); d.sw = int(p.stride_w);
    d.ph = int(p.pad_h); d.pw = int(p.pad_w); d.dil_h = int(p.dil_h); d.dil_w = int(p.dil_w);
    d.Cg = int(p.Cg()); d.Kg = int(p.Kg()); d.RS = int(p.RS()); d.CgRS = d.Cg * d.RS; d.KgRS = d.Kg * d.RS;
    d.N = p.N; d.G = p.groups; d.HW = p.HW(); d.PQ = p.PQ(); d.CHW = p.C * p.HW(); d.KPQ = p.K * p.PQ();
    d.NPQ = p.N * p.PQ(); d.NHW = p.N * p.HW();
    d.d_pq = FastDiv64(d.PQ > 0 ? d.PQ : 1); d.d_hw = FastDiv64(d.HW > 0 ? d.HW : 1);
    d.d_q = FastDiv32(d.Q > 0 ? d.Q : 1); d.d_w = FastDiv32(d.W > 0 ? d.W : 1); d.d_s = FastDiv32(d.S);
    d.d_rs = FastDiv32(d.RS); d.d_cg = FastDiv32(d.Cg > 0 ? d.Cg : 1); d.d_kg = FastDiv32(d.Kg);
    d.d_sh = FastDiv32(d.sh); d.d_sw = FastDiv32(d.sw);
    return d;
  }
};

constexpr int kOffRow = -(1 << 30);  // row offset of a row past the problem: every tap lands at a negative index

#if defined(FC_KERNELS)

FC_DEV bool in_range(int v, int n) { return static_cast<unsigned>(v) < static_cast<unsigned>(n); }

// A of forward: input pixels gathered for output pixel m = (n, p, q).
template <typename T, typename Acc, bool CL>
struct FwdInputOp {
  const T* base;  // input image 0 at this group's first channel
  ConvDev d;
  int red_end;
  int64_t M;
  struct Ctx { const T* img; int h0, w0; };
  FC_DEV Ctx ctx(int64_t m) const {
    int64_t pq;
    const int64_t n = d.d_pq.divmod(m, pq);
    int q;
    const int p = d.d_q.divmod(static_cast<int>(pq), q);
    const bool ok = m < M;
    return Ctx{base + (ok ? n : 0) * d.CHW, ok ? p * d.sh - d.ph : kOffRow, q * d.sw - d.pw};
  }
  template <int V> FC_DEV void load(const Ctx& c, int red, Acc (&v)[V]) const {
    int ci, r, s, rs;
    if (CL) { rs = d.d_cg.divmod(red, ci); } else { ci = d.d_rs.divmod(red, rs); }
    r = d.d_s.divmod(rs, s);
    const int h = c.h0 + r * d.dil_h, w = c.w0 + s * d.dil_w;
    const bool pred = red < red_end && in_range(h, d.H) && in_range(w, d.W);
    const int64_t off = CL ? (static_cast<int64_t>(h) * d.W + w) * d.C + ci
                           : static_cast<int64_t>(ci) * d.HW + static_cast<int64_t>(h) * d.W + w;
    load_vec<T, V>(c.img + off, pred, v);
  }
};

// B^T of forward (row k) and A of backward-weight in NCHW-free form: a row whose red-th element sits at
// row_base + red * 1, i.e. one contiguous weight row. Used for the forward weight.
template <typename T, typename Acc>
struct ContigRowOp {
  const T* base;       // row 0
  int64_t row_stride;  // elements between rows
  int64_t rows;
  int red_end;
  struct Ctx { const T* row; };  // nullptr: row past the problem
  FC_DEV Ctx ctx(int64_t k) const { return Ctx{k < rows ? base + k * row_stride : nullptr}; }
  template <int V> FC_DEV void load(const Ctx& c, int red, Acc (&v)[V]) const {
    load_vec<T, V>(c.row + red, c.row != nullptr && red < red_end, v);
  }
};

// A of backward-input: grad_out gathered for input pixel m = (n, h, w); red = (k, r, s) NCHW, (r, s, k) CL.
template <typename T, typename Acc, bool CL>
struct BwdGradOutOp {
  const T* base;  // grad_out image 0 at this group's first channel
  ConvDev d;
  int red_end;
  int64_t M;
  struct Ctx { const T* img; int hb, wb; };
  FC_DEV Ctx ctx(int64_t m) const {
    int64_t hw;
    const int64_t n = d.d_hw.divmod(m, hw);
    int w;
    const int h = d.d_w.divmod(static_cast<int>(hw), w);
    const bool ok = m < M;
    return Ctx{base + (ok ? n : 0) * d.KPQ, ok ? h + d.ph : kOffRow, w + d.pw};
  }
  template <int V> FC_DEV void load(const Ctx& c, int red, Acc (&v)[V]) const {
    int k, rs, s, rh, rw;
    if (CL) { rs = d.d_kg.divmod(red, k); } else { k = d.d_rs.divmod(red, rs); }
    const int r = d.d_s.divmod(rs, s);
    const int hn = c.hb - r * d.dil_h, wn = c.wb - s * d.dil_w;  // = p * stride_h when tap r reaches this row
    const int p = d.d_sh.divmod(hn, rh), q = d.d_sw.divmod(wn, rw);
    const bool pred = red < red_end && hn >= 0 && wn >= 0 && rh == 0 && rw == 0 && p < d.P && q < d.Q;
    const int64_t pix = static_cast<int64_t>(p) * d.Q + q;
    const int64_t off = CL ? pix * d.K + k : static_cast<int64_t>(k) * d.PQ + pix;
    load_vec<T, V>(c.img + off, pred, v);
  }
};

// B^T of backward-input: row c holds weight[k, c, r, s] in the red order of BwdGradOutOp.
template <typename T, typename Acc, bool CL>
struct BwdWeightRowOp {
  const T* base;  // weight of this group's first output channel
  ConvDev d;
  int red_end;
  struct Ctx { const T* col; };  // nullptr: column past the problem
  FC_DEV Ctx ctx(int64_t c) const {
    const int ci = static_cast<int>(c);
    return Ctx{c < d.Cg ? base + (CL ? ci : ci * d.RS) : nullptr};
  }
  template <int V> FC_DEV void load(const Ctx& c, int red, Acc (&v)[V]) const {
    static_assert(V == 1, "weight columns are strided");
    int k, rs;
    if (CL) { rs = d.d_kg.divmod(red, k); } else { k = d.d_rs.divmod(red, rs); }
    const int64_t off = static_cast<int64_t>(k) * d.CgRS + (CL ? rs * d.Cg : rs);
    load_vec<T, 1>(c.col + off, c.col != nullptr && red < red_end, v);
  }
};

// A of backward-weight: row k holds grad_out[n, k, p, q] over npq = (n, p, q) (one split-K chunk).
template <typename T, typename Acc, bool CL>
struct WgradGradOutOp {
  const T* base;  // grad_out at this group's first channel
  ConvDev d;
  int64_t red_end;
  struct Ctx { const T* row; };  // nullptr: row past the problem
  FC_DEV Ctx ctx(int64_t k) const { return Ctx{k < d.Kg ? base + k * (CL ? 1 : d.PQ) : nullptr}; }
  template <int V> FC_DEV void load(const Ctx& c, int64_t npq, Acc (&v)[V]) const {
    int64_t pq;
    const int64_t n = d.d_pq.divmod(npq, pq);
    const int64_t off = CL ? npq * d.K : n * d.KPQ + pq;
    load_vec<T, V>(c.row + off, c.row != nullptr && npq < red_end, v);
  }
};

// B^T of backward-weight: row col = (c, r, s) NCHW or (r, s, c) CL holds input[n, c, p*sh - ph + r*dil_h, ...].
template <typename T, typename Acc, bool CL>
struct WgradInputOp {
  const T* base;  // input at this group's first channel
  ConvDev d;
  int64_t red_end;
  struct Ctx { const T* chan; int hoff, woff; };
  FC_DEV Ctx ctx(int64_t col) const {
    const bool ok = col < d.CgRS;
    const int cc = ok ? static_cast<int>(col) : 0;
    int ci, rs, s;
    if (CL) { rs = d.d_cg.divmod(cc, ci); } else { ci = d.d_rs.divmod(cc, rs); }
    const int r = d.d_s.divmod(rs, s);
    return Ctx{base + static_cast<int64_t>(ci) * (CL ? 1 : d.HW), ok ? r * d.dil_h - d.ph : kOffRow, s * d.dil_w - d.pw};
  }
  template <int V> FC_DEV void load(const Ctx& c, int64_t npq, Acc (&v)[V]) const {
    static_assert(V == 1, "input taps are gathered");
    int64_t pq;
    const int64_t n = d.d_pq.divmod(npq, pq);
    int q;
    const int p = d.d_q.divmod(static_cast<int>(pq), q);
    const int h = p * d.sh + c.hoff, w = q * d.sw + c.woff;
    const bool pred = npq < red_end && in_range(h, d.H) && in_range(w, d.W);
    const int64_t pix = static_cast<int64_t>(h) * d.W + w;
    const int64_t off = CL ? (n * d.HW + pix) * d.C : n * d.CHW + pix;
    load_vec<T, 1>(c.chan + off, pred, v);
  }
};

#endif  // FC_KERNELS

}  // namespace cuda
}  // namespace fastconv
