// CPU harness: runs the fastconv CUDA launchers under emu.h against double-precision references.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/launchers.h"
#include "emu.h"

using namespace fastconv;
using namespace fastconv::cuda;

static std::mt19937_64 rng(12345);
static int64_t rnd(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
static double rndf() { return std::uniform_real_distribution<double>(-1, 1)(rng); }

static size_t esize(DType t) { return t == DType::Float64 ? 8 : t == DType::Float32 ? 4 : 2; }
static const char* dname(DType t) {
  return t == DType::Float64 ? "f64" : t == DType::Float32 ? "f32" : t == DType::Float16 ? "f16" : "bf16";
}
static void put(DType t, void* b, int64_t i, double v) {
  switch (t) {
    case DType::Float64: static_cast<double*>(b)[i] = v; break;
    case DType::Float32: static_cast<float*>(b)[i] = static_cast<float>(v); break;
    case DType::Float16: static_cast<__half*>(b)[i] = __float2half(static_cast<float>(v)); break;
    case DType::BFloat16: static_cast<__nv_bfloat16*>(b)[i] = __float2bfloat16(static_cast<float>(v)); break;
  }
}
static double get(DType t, const void* b, int64_t i) {
  switch (t) {
    case DType::Float64: return static_cast<const double*>(b)[i];
    case DType::Float32: return static_cast<const float*>(b)[i];
    case DType::Float16: return __half2float(static_cast<const __half*>(b)[i]);
    case DType::BFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(b)[i]);
  }
  return 0;
}

// Device-like buffer: n elements, optionally misaligned by one element, poisoned with NaN bytes.
struct Buf {
  std::vector<unsigned char> raw;
  void* p = nullptr;
  DType t;
  int64_t n;
  Buf(DType t_, int64_t n_, bool misalign) : t(t_), n(n_) {
    raw.assign((n + 64) * esize(t) + 64, 0xFF);
    uintptr_t a = (reinterpret_cast<uintptr_t>(raw.data()) + 63) & ~uintptr_t(63);
    if (misalign) a += esize(t);
    p = reinterpret_cast<void*>(a);
  }
};

static bool g_tc = false;
static double tol_rel(DType t) {
  if (g_tc && t == DType::Float32) return 2e-3;
  return t == DType::Float64 ? 1e-12 : t == DType::Float32 ? 2e-5 : t == DType::Float16 ? 1.5e-3 : 1e-2;
}

static int failures = 0, checks = 0, tc_cases = 0;
static bool check(const char* what, const std::string& cfg, DType t, double got, double ref, double scale) {
  ++checks;
  const double tol = tol_rel(t) * (std::fabs(ref) + (t == DType::Float64 || t == DType::Float32 ? scale : 0.05 * scale)) + (t == DType::Float16 ? 1e-7 : 1e-30);
  if (!(std::fabs(got - ref) <= tol)) {
    if (failures < 30) std::printf("FAIL %s %s: got %.10g ref %.10g (scale %.3g)\n", what, cfg.c_str(), got, ref, scale);
    ++failures;
    return false;
  }
  return true;
}

static void conv_case(DType t, int64_t N, int64_t G, int64_t Cg, int64_t Kg, int64_t H, int64_t W, int64_t R, int64_t S,
                      int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t pb, int64_t pr, int64_t dh, int64_t dw,
                      bool cl, bool bias_on, bool misalign) {
  ConvParams p{};
  p.N = N; p.C = G * Cg; p.H = H; p.W = W; p.K = G * Kg; p.R = R; p.S = S;
  p.stride_h = sh; p.stride_w = sw; p.pad_h = pt; p.pad_w = pl; p.dil_h = dh; p.dil_w = dw; p.groups = G;
  p.channels_last = cl;
  if (H + pt + pb < dh * (R - 1) + 1 || W + pl + pr < dw * (S - 1) + 1) return;
  p.P = conv_output_size(H, pt, pb, R, sh, dh);
  p.Q = conv_output_size(W, pl, pr, S, sw, dw);
  char cfgbuf[300];
  std::snprintf(cfgbuf, sizeof cfgbuf, "%s N%ld G%ld Cg%ld Kg%ld H%ld W%ld R%ld S%ld st%ld,%ld pad%ld,%ld,%ld,%ld dil%ld,%ld cl%d b%d mis%d P%ld Q%ld",
                dname(t), N, G, Cg, Kg, H, W, R, S, sh, sw, pt, pl, pb, pr, dh, dw, cl, bias_on, misalign, p.P, p.Q);
  const std::string cfg = cfgbuf;
  if (conv_unsupported_reason(p)) { std::printf("unsupported %s\n", cfg.c_str()); return; }
  const int64_t nin = N * p.C * H * W, nw = p.K * Cg * R * S, nout = N * p.K * p.P * p.Q;
  Buf x(t, nin, misalign), w(t, nw, misalign), b(t, p.K, false), y(t, nout, false), gy(t, nout, misalign);
  std::vector<double> X(nin), Wt(nw), B(p.K), GY(nout);
  auto ix = [&](int64_t n, int64_t c, int64_t h, int64_t ww) { return ((n * p.C + c) * H + h) * W + ww; };
  auto iw = [&](int64_t k, int64_t c, int64_t r, int64_t s) { return ((k * Cg + c) * R + r) * S + s; };
  auto iy = [&](int64_t n, int64_t k, int64_t pp, int64_t q) { return ((n * p.K + k) * p.P + pp) * p.Q + q; };
  for (int64_t n = 0; n < N; ++n) for (int64_t c = 0; c < p.C; ++c) for (int64_t h = 0; h < H; ++h) for (int64_t ww = 0; ww < W; ++ww) {
    const int64_t o = p.input_offset(n, c, h, ww);
    put(t, x.p, o, rndf()); X[ix(n, c, h, ww)] = get(t, x.p, o);
  }
  for (int64_t k = 0; k < p.K; ++k) for (int64_t c = 0; c < Cg; ++c) for (int64_t r = 0; r < R; ++r) for (int64_t s = 0; s < S; ++s) {
    const int64_t o = p.weight_offset(k, c, r, s);
    put(t, w.p, o, rndf()); Wt[iw(k, c, r, s)] = get(t, w.p, o);
  }
  for (int64_t k = 0; k < p.K; ++k) { put(t, b.p, k, bias_on ? rndf() : 0.0); B[k] = get(t, b.p, k); }
  for (int64_t n = 0; n < N; ++n) for (int64_t k = 0; k < p.K; ++k) for (int64_t pp = 0; pp < p.P; ++pp) for (int64_t q = 0; q < p.Q; ++q) {
    const int64_t o = p.output_offset(n, k, pp, q);
    put(t, gy.p, o, rndf()); GY[iy(n, k, pp, q)] = get(t, gy.p, o);
  }
  // references (scatter form of the backward passes: independent of the kernels' gather algebra)
  std::vector<double> Y(nout), Ys(nout), GX(nin, 0), GXs(nin, 0), GW(nw, 0), GWs(nw, 0), GB(p.K, 0), GBs(p.K, 0);
  for (int64_t n = 0; n < N; ++n) for (int64_t k = 0; k < p.K; ++k) for (int64_t pp = 0; pp < p.P; ++pp) for (int64_t q = 0; q < p.Q; ++q) {
    const int64_t g = k / Kg;
    double acc = B[k], sc = std::fabs(B[k]);
    const double gv = GY[iy(n, k, pp, q)];
    GB[k] += gv; GBs[k] += std::fabs(gv);
    for (int64_t c = 0; c < Cg; ++c) for (int64_t r = 0; r < R; ++r) for (int64_t s = 0; s < S; ++s) {
      const int64_t h = pp * sh - pt + r * dh, ww = q * sw - pl + s * dw;
      if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
      const double xv = X[ix(n, g * Cg + c, h, ww)], wv = Wt[iw(k, c, r, s)];
      acc += xv * wv; sc += std::fabs(xv * wv);
      GX[ix(n, g * Cg + c, h, ww)] += gv * wv; GXs[ix(n, g * Cg + c, h, ww)] += std::fabs(gv * wv);
      GW[iw(k, c, r, s)] += gv * xv; GWs[iw(k, c, r, s)] += std::fabs(gv * xv);
    }
    Y[iy(n, k, pp, q)] = acc; Ys[iy(n, k, pp, q)] = sc;
  }
  Buf gx(t, nin, false), gw(t, nw, false), gb(t, p.K, false);
  std::vector<unsigned char> wsb(conv2d_backward_bias_workspace_bytes(t, p) + 64, 0xFF);
  if (g_tc) {
    if (!conv2d_tc_supported(t, p, true)) return;
    std::vector<unsigned char> ws(conv2d_backward_weight_tc_workspace_bytes(t, p) + 64, 0xFF);
    void* wsp = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(ws.data()) + 63) & ~uintptr_t(63));
    conv2d_forward_tc(t, x.p, w.p, bias_on ? b.p : nullptr, y.p, p, true, nullptr);
    conv2d_backward_input_tc(t, gy.p, w.p, gx.p, p, true, nullptr);
    conv2d_backward_weight_tc(t, gy.p, x.p, gw.p, wsp, p, true, nullptr);
    ++tc_cases;
  } else {
    std::vector<unsigned char> ws(conv2d_backward_weight_workspace_bytes(t, p) + 64, 0xFF);
    if (conv2d_forward(t, x.p, w.p, bias_on ? b.p : nullptr, y.p, p, nullptr) != cudaSuccess) { std::printf("launch fail\n"); ++failures; }
    conv2d_backward_input(t, gy.p, w.p, gx.p, p, nullptr);
    conv2d_backward_weight(t, gy.p, x.p, gw.p, ws.data(), p, nullptr);
  }
  conv2d_backward_bias(t, gy.p, gb.p, wsb.data(), p, nullptr);
  int bad = 0;
  for (int64_t n = 0; n < N && bad < 3; ++n) for (int64_t k = 0; k < p.K; ++k) for (int64_t pp = 0; pp < p.P; ++pp) for (int64_t q = 0; q < p.Q; ++q)
    bad += !check("fwd", cfg, t, get(t, y.p, p.output_offset(n, k, pp, q)), Y[iy(n, k, pp, q)], Ys[iy(n, k, pp, q)]);
  for (int64_t n = 0; n < N && bad < 3; ++n) for (int64_t c = 0; c < p.C; ++c) for (int64_t h = 0; h < H; ++h) for (int64_t ww = 0; ww < W; ++ww)
    bad += !check("dgrad", cfg, t, get(t, gx.p, p.input_offset(n, c, h, ww)), GX[ix(n, c, h, ww)], GXs[ix(n, c, h, ww)]);
  for (int64_t k = 0; k < p.K && bad < 3; ++k) for (int64_t c = 0; c < Cg; ++c) for (int64_t r = 0; r < R; ++r) for (int64_t s = 0; s < S; ++s)
    bad += !check("wgrad", cfg, t, get(t, gw.p, p.weight_offset(k, c, r, s)), GW[iw(k, c, r, s)], GWs[iw(k, c, r, s)]);
  for (int64_t k = 0; k < p.K && bad < 3; ++k) bad += !check("bgrad", cfg, t, get(t, gb.p, k), GB[k], GBs[k]);
}

static int64_t pool_out(int64_t in, int64_t k, int64_t pad, int64_t st, int64_t dil, bool ceil) {
  return pool_output_size(in, k, pad, st, dil, ceil);
}

static void pool_case(DType t, int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                      int64_t ph, int64_t pw, int64_t dh, int64_t dw, bool ceil, bool cl, int value_mode) {
  if (ph > ((kh - 1) * dh + 1) / 2 || pw > ((kw - 1) * dw + 1) / 2) return;
  PoolParams p{};
  p.N = N; p.C = C; p.H = H; p.W = W; p.kernel_h = kh; p.kernel_w = kw; p.stride_h = sh; p.stride_w = sw;
  p.pad_h = ph; p.pad_w = pw; p.dil_h = dh; p.dil_w = dw; p.channels_last = cl;
  p.P = pool_out(H, kh, ph, sh, dh, ceil); p.Q = pool_out(W, kw, pw, sw, dw, ceil);
  if (p.P < 1 || p.Q < 1) return;
  char cfgbuf[300];
  std::snprintf(cfgbuf, sizeof cfgbuf, "pool %s N%ld C%ld H%ld W%ld k%ld,%ld s%ld,%ld p%ld,%ld d%ld,%ld ceil%d cl%d vm%d P%ld Q%ld",
                dname(t), N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ceil, cl, value_mode, p.P, p.Q);
  const std::string cfg = cfgbuf;
  const int64_t nin = N * C * H * W, nout = N * C * p.P * p.Q;
  Buf x(t, nin, false), y(t, nout, false), gy(t, nout, false), gx(t, nin, false);
  std::vector<int64_t> idx(nout + 1, -7);
  auto off_in = [&](int64_t n, int64_t c, int64_t h, int64_t w) { return cl ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w; };
  auto off_out = [&](int64_t n, int64_t c, int64_t a, int64_t b) { return cl ? ((n * p.P + a) * p.Q + b) * C + c : ((n * C + c) * p.P + a) * p.Q + b; };
  for (int64_t i = 0; i < nin; ++i) {
    double v = value_mode == 0 ? rndf() : static_cast<double>(rnd(0, 3));
    if (value_mode == 2 && rnd(0, 9) == 0) v = NAN;
    if (value_mode == 2 && rnd(0, 19) == 0) v = -INFINITY;
    put(t, x.p, i, v);
  }
  for (int64_t i = 0; i < nout; ++i) put(t, gy.p, i, rndf());
  max_pool2d_forward(t, x.p, y.p, idx.data(), p, nullptr);
  std::vector<unsigned char> ws(max_pool2d_backward_workspace_bytes(p) + 16);
  max_pool2d_backward(t, gy.p, idx.data(), gx.p, ws.data(), p, nullptr);
  std::vector<double> GX(nin, 0);
  int bad = 0;
  for (int64_t n = 0; n < N; ++n) for (int64_t c = 0; c < C; ++c) for (int64_t a = 0; a < p.P; ++a) for (int64_t b = 0; b < p.Q; ++b) {
    // torch's CPU/CUDA loop
    int64_t hs = a * sh - ph, ws_ = b * sw - pw;
    const int64_t he = std::min(hs + (kh - 1) * dh + 1, H), we = std::min(ws_ + (kw - 1) * dw + 1, W);
    while (hs < 0) hs += dh;
    while (ws_ < 0) ws_ += dw;
    int64_t mi = hs * W + ws_;
    double mv = -INFINITY;
    for (int64_t h = hs; h < he; h += dh) for (int64_t w = ws_; w < we; w += dw) {
      const double v = get(t, x.p, off_in(n, c, h, w));
      if (v > mv || std::isnan(v)) { mi = h * W + w; mv = v; }
    }
    const int64_t o = off_out(n, c, a, b);
    const double got = get(t, y.p, o);
    ++checks;
    const bool same = (std::isnan(got) && std::isnan(mv)) || got == mv;
    if (!same || idx[o] != mi) {
      if (bad++ < 3) std::printf("FAIL pool fwd %s at n%ld c%ld p%ld q%ld: got %g/%ld ref %g/%ld\n", cfg.c_str(), n, c, a, b, got, idx[o], mv, mi);
      ++failures;
    }
    if (mi >= 0 && mi < H * W) GX[off_in(n, c, mi / W, mi % W)] += get(t, gy.p, o);  // empty windows: torch's index is out of the plane
  }
  for (int64_t i = 0; i < nin && bad < 3; ++i) bad += !check("pool bwd", cfg, t, get(t, gx.p, i), GX[i], 1.0);
}

static int tc_main(int iters) {
  g_tc = true;
  const DType types[3] = {DType::Float16, DType::BFloat16, DType::Float32};
  for (DType t : types) {
    conv_case(t, 2, 1, 16, 136, 9, 10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, true, false);   // 2 n-tiles, 2 k-stages+
    conv_case(t, 3, 2, 8, 8, 11, 9, 3, 2, 2, 1, 1, 0, 2, 1, 2, 1, true, true, false);      // groups, stride, dilation
    conv_case(t, 4, 1, 64, 16, 8, 8, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, true, false, false);    // 1x1, long reduction
    conv_case(t, 8, 1, 8, 8, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, true, false);     // wgrad split-K
    conv_case(t, 1, 1, 40, 24, 6, 7, 5, 3, 2, 3, 2, 1, 1, 2, 1, 2, true, true, false);     // multi-stage, padding
    conv_case(t, 0, 1, 8, 8, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, true, false);       // N = 0
    conv_case(t, 2, 1, 8, 8, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, true, true, true);        // misaligned: fallback
  }
  std::printf("tc hand-picked: %d cases, %d checks, %d failures\n", tc_cases, checks, failures);
  for (int it = 0; it < iters; ++it) {
    const DType t = types[rnd(0, 2)];
    const int64_t v = t == DType::Float32 ? 4 : 8;
    conv_case(t, rnd(1, 3), rnd(0, 3) == 0 ? rnd(2, 3) : 1, v * rnd(1, 5), v * rnd(1, 18), rnd(1, 12), rnd(1, 12),
              rnd(1, 4), rnd(1, 4), rnd(1, 3), rnd(1, 3), rnd(0, 2), rnd(0, 2), rnd(0, 2), rnd(0, 2), rnd(1, 2),
              rnd(1, 2), true, rnd(0, 1), false);
  }
  std::printf("tc total: %d cases, %d checks, %d failures\n", tc_cases, checks, failures);
  emu::pool.stop();
  return failures != 0;
}

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 200;
  if (argc > 3) rng.seed(std::atoll(argv[3]));
  if (argc > 2 && std::string(argv[2]) == "tc") return tc_main(iters);
  const DType types[4] = {DType::Float32, DType::Float64, DType::Float16, DType::BFloat16};
  // hand-picked: multi-tile M/N, split-K wgrad, split bias, vector paths, depthwise, empty reductions, N=0
  for (DType t : types) {
    for (int cl = 0; cl < 2; ++cl) {
      conv_case(t, 2, 1, 8, 70, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, cl, true, false);
      conv_case(t, 2, 1, 8, 70, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, cl, true, true);
      conv_case(t, 2, 2, 3, 5, 17, 16, 3, 2, 2, 1, 1, 0, 2, 1, 2, 1, cl, true, false);
      conv_case(t, 3, 1, 4, 4, 16, 16, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, cl, false, false);   // wgrad split-K
      conv_case(t, 2, 6, 1, 1, 9, 11, 3, 3, 2, 1, 1, 2, 0, 1, 1, 2, cl, true, false);    // depthwise
      conv_case(t, 2, 3, 1, 2, 9, 11, 5, 3, 1, 2, 2, 1, 2, 1, 1, 1, cl, false, false);   // depthwise x2
      conv_case(t, 0, 1, 3, 4, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, cl, true, false);     // N = 0
      conv_case(t, 2, 2, 0, 3, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, cl, true, false);     // Cg = 0
      conv_case(t, 1, 1, 16, 8, 4, 4, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, cl, true, false);    // mostly padding
    }
  }
  conv_case(DType::Float32, 5, 1, 2, 3, 64, 64, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, false, true, false);  // bias split
  conv_case(DType::Float32, 5, 1, 2, 40, 64, 64, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, true, true, false);  // bias split CL
  std::printf("hand-picked conv: %d checks, %d failures\n", checks, failures);
  for (int it = 0; it < iters; ++it) {
    const DType t = types[rnd(0, 3)];
    const int64_t G = rnd(0, 3) == 0 ? rnd(2, 4) : 1;
    int64_t Cg = rnd(1, 12), Kg = rnd(1, 12);
    if (rnd(0, 4) == 0) Cg = 4 * rnd(1, 5);
    if (rnd(0, 4) == 0) Kg = rnd(60, 70);
    if (rnd(0, 5) == 0) { Cg = 1; Kg = rnd(1, 3); }
    conv_case(t, rnd(1, 3), G, Cg, Kg, rnd(1, 12), rnd(1, 12), rnd(1, 4), rnd(1, 4), rnd(1, 3), rnd(1, 3), rnd(0, 2),
              rnd(0, 2), rnd(0, 2), rnd(0, 2), rnd(1, 2), rnd(1, 2), rnd(0, 1), rnd(0, 1), rnd(0, 3) == 0);
  }
  std::printf("random conv: %d checks, %d failures\n", checks, failures);
  for (DType t : types) {
    pool_case(t, 2, 3, 9, 10, 3, 3, 2, 2, 1, 1, 1, 1, true, false, 1);
    pool_case(t, 2, 3, 9, 10, 3, 3, 2, 2, 1, 1, 1, 1, true, true, 2);
    pool_case(t, 1, 40, 8, 8, 2, 2, 2, 2, 0, 0, 1, 1, false, true, 0);
  }
  for (int it = 0; it < iters; ++it) {
    const DType t = types[rnd(0, 3)];
    pool_case(t, rnd(0, 2), rnd(1, 5), rnd(1, 12), rnd(1, 12), rnd(1, 4), rnd(1, 4), rnd(1, 3), rnd(1, 3), rnd(0, 2),
              rnd(0, 2), rnd(1, 2), rnd(1, 2), rnd(0, 1), rnd(0, 1), static_cast<int>(rnd(0, 2)));
  }
  std::printf("total: %d checks, %d failures, %lld emulated blocks\n", checks, failures, emu_blocks_run);
  emu::pool.stop();
  return failures != 0;
}
