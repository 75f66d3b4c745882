// Direct kernels for depthwise-style convolutions (one input channel per group, a few output channels per
// group), where an implicit-GEMM tile would be nearly all padding; and the fixed-order split-K sum shared by
// the weight- and bias-gradient kernels. All deterministic: no atomics, fixed summation order.
#pragma once
#include "conv_ops.cuh"

namespace fastconv {
namespace cuda {

inline bool use_dw_path(const ConvParams& p) { return p.Cg() == 1 && p.Kg() <= 4; }

inline unsigned grid_1d(int64_t total, int threads) {
  const int64_t b = ceil_div(total, threads);
  return static_cast<unsigned>(b < (int64_t{1} << 20) ? b : (int64_t{1} << 20));
}

// out[i] = sum over j < nsplit, in order, of ws[j * n + i].
template <typename T, typename Acc>
__global__ void __launch_bounds__(256, 4) split_sum_kernel(const Acc* __restrict__ ws, T* __restrict__ out, int64_t n,
                                                        int nsplit) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Acc s = Acc(0);
    for (int j = 0; j < nsplit; ++j) s += ws[j * n + i];
    out[i] = from_acc<T>(s);
  }
}

template <typename T, typename Acc>
cudaError_t launch_split_sum(const Acc* ws, T* out, int64_t n, int nsplit, cudaStream_t st) {
  if (n == 0) return cudaSuccess;
  return launch_kernel(split_sum_kernel<T, Acc>, dim3(grid_1d(n, 256)), dim3(256), st, ws, out, n, nsplit);
}

// Shape-only split-K plan for grad_weight: enough blocks to fill a GPU, at least 16 BK-steps per chunk, and a
// workspace of at most 1 GiB. Never depends on timing or on the device, so results are reproducible anywhere.
struct WgradPlan { int64_t nsplit, chunk; };
inline WgradPlan wgrad_plan(const ConvParams& p, int bm, int bn, int bk, int64_t acc_bytes) {
  const int64_t npq = p.N * p.PQ();
  const int64_t tiles = ceil_div(p.Kg(), bm) * ceil_div(p.Cg() * p.RS(), bn) * p.groups;
  const int64_t steps = ceil_div(npq, bk);
  int64_t ns = ceil_div(1024, tiles > 0 ? tiles : 1);
  ns = ns < steps / 16 ? ns : steps / 16;
  ns = ns < 4096 ? ns : 4096;
  const int64_t per_split = p.K * p.Cg() * p.RS() * acc_bytes;
  if (per_split > 0 && ns * per_split > (int64_t{1} << 30)) ns = (int64_t{1} << 30) / per_split;
  if (ns < 1) ns = 1;
  const int64_t chunk = ceil_div(steps, ns) * bk;
  return WgradPlan{chunk > 0 ? ceil_div(npq, chunk) : 1, chunk};
}

// Output element i (memory order) -> n, k, pq.
template <bool CL> FC_DEV void split_out_index(const ConvDev& d, int64_t i, int64_t& n, int64_t& k, int64_t& pq) {
  if (CL) { const int64_t npq = i / d.K; k = i - npq * d.K; n = d.d_pq.divmod(npq, pq); }
  else { const int64_t nk = d.d_pq.divmod(i, pq); n = nk / d.K; k = nk - n * d.K; }
}

// Forward: one thread per output element, R*S taps; output channel k reads input channel k / Kg.
template <typename T, bool CL>
__global__ void __launch_bounds__(256, 4) dw_fwd_kernel(const T* __restrict__ in, const T* __restrict__ w,
                                                     const T* __restrict__ bias, T* __restrict__ out, const ConvDev d,
                                                     int64_t total) {
  using Acc = typename AccOf<T>::type;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, k, pq;
    split_out_index<CL>(d, i, n, k, pq);
    int q;
    const int p = d.d_q.divmod(static_cast<int>(pq), q);
    const int64_t c = k / d.Kg;
    const int h0 = p * d.sh - d.ph, w0 = q * d.sw - d.pw;
    const T* img = in + n * d.CHW + (CL ? c : c * d.HW);
    const T* wk = w + k * d.RS;  // K x 1 x R x S is the same memory in both layouts
    Acc acc = bias != nullptr ? to_acc<Acc>(bias[k]) : Acc(0);
    for (int r = 0; r < d.R; ++r) {
      const int h = h0 + r * d.dil_h;
      for (int s = 0; s < d.S; ++s) {
        const int wc = w0 + s * d.dil_w;
        const int64_t pix = static_cast<int64_t>(h) * d.W + wc;
        Acc x = Acc(0);
        if (in_range(h, d.H) && in_range(wc, d.W)) x = to_acc<Acc>(img[CL ? pix * d.C : pix]);
        acc = fma(x, to_acc<Acc>(wk[r * d.S + s]), acc);
      }
    }
    out[i] = from_acc<T>(acc);
  }
}

// Backward-input: one thread per input element (n, c, h, w), gathering the Kg channels c*Kg + j of grad_out at
// every tap (r, s) that maps an output pixel onto (h, w).
template <typename T, bool CL>
__global__ void __launch_bounds__(256, 4) dw_bwd_in_kernel(const T* __restrict__ gout, const T* __restrict__ w,
                                                        T* __restrict__ gin, const ConvDev d, int64_t total) {
  using Acc = typename AccOf<T>::type;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n, c, hw;
    if (CL) { const int64_t nhw = i / d.C; c = i - nhw * d.C; n = d.d_hw.divmod(nhw, hw); }
    else { const int64_t nc = d.d_hw.divmod(i, hw); n = nc / d.C; c = nc - n * d.C; }
    int wi;
    const int h = d.d_w.divmod(static_cast<int>(hw), wi);
    const T* img = gout + n * d.KPQ;
    Acc acc = Acc(0);
    for (int j = 0; j < d.Kg; ++j) {
      const int64_t k = c * d.Kg + j;
      for (int r = 0; r < d.R; ++r) {
        const int hn = h + d.ph - r * d.dil_h;
        int rh;
        const int p = d.d_sh.divmod(hn, rh);
        if (hn < 0 || rh != 0 || p >= d.P) continue;
        for (int s = 0; s < d.S; ++s) {
          const int wn = wi + d.pw - s * d.dil_w;
          int rw;
          const int q = d.d_sw.divmod(wn, rw);
          if (wn < 0 || rw != 0 || q >= d.Q) continue;
          const int64_t pix = static_cast<int64_t>(p) * d.Q + q;
          const T g = img[CL ? pix * d.K + k : k * d.PQ + pix];
          acc = fma(to_acc<Acc>(g), to_acc<Acc>(w[k * d.RS + r * d.S + s]), acc);
        }
      }
    }
    gin[i] = from_acc<T>(acc);
  }
}

// Backward-weight: block (x, split) reduces tap rs of one output channel (NCHW: 256 threads over pixels) or of
// 32 channels (channels_last: lanes over channels, 8 thread rows over pixels) over its chunk of N*P*Q.
template <typename T, bool CL>
__global__ void __launch_bounds__(256, 4) dw_wgrad_kernel(const T* __restrict__ gout, const T* __restrict__ in,
                                                       T* __restrict__ gw, typename AccOf<T>::type* __restrict__ ws,
                                                       const ConvDev d, int64_t chunk) {
  using Acc = typename AccOf<T>::type;
  __shared__ Acc red[256];
  const int t = static_cast<int>(threadIdx.x);
  const int lanes = CL ? 32 : 1, rows = 256 / lanes;
  const int64_t kt = blockIdx.x / d.RS;
  const int rs = static_cast<int>(blockIdx.x - kt * d.RS);
  int s;
  const int r = d.d_s.divmod(rs, s);
  const int64_t k = CL ? kt * 32 + t % 32 : kt;
  const int64_t c = k / d.Kg;
  const int64_t begin = blockIdx.y * chunk;
  const int64_t end = begin + chunk < d.NPQ ? begin + chunk : d.NPQ;
  Acc acc = Acc(0);
  if (k < d.K) {
    for (int64_t e = begin + t / lanes; e < end; e += rows) {
      int64_t pq;
      const int64_t n = d.d_pq.divmod(e, pq);
      int q;
      const int p = d.d_q.divmod(static_cast<int>(pq), q);
      const int h = p * d.sh - d.ph + r * d.dil_h, wc = q * d.sw - d.pw + s * d.dil_w;
      if (!in_range(h, d.H) || !in_range(wc, d.W)) continue;
      const int64_t pix = static_cast<int64_t>(h) * d.W + wc;
      const T g = gout[CL ? e * d.K + k : (n * d.K + k) * d.PQ + pq];
      const T x = in[CL ? (n * d.HW + pix) * d.C + c : (n * d.C + c) * d.HW + pix];
      acc = fma(to_acc<Acc>(g), to_acc<Acc>(x), acc);
    }
  }
  red[t] = acc;
  __syncthreads();
  for (int width = 128; width >= lanes; width /= 2) {
    if (t < width) red[t] += red[t + width];
    __syncthreads();
  }
  if (t < lanes && k < d.K) {
    const int64_t idx = k * d.RS + rs;
    if (ws != nullptr) ws[blockIdx.y * (d.K * d.RS) + idx] = red[t];
    else gw[idx] = from_acc<T>(red[t]);
  }
}

struct DwPlan { int64_t xblocks, nsplit, chunk; };
inline DwPlan dw_wgrad_plan(const ConvParams& p) {
  const int64_t npq = p.N * p.PQ();
  const int64_t xb = (p.channels_last ? ceil_div(p.K, 32) : p.K) * p.RS();
  int64_t ns = ceil_div(1024, xb > 0 ? xb : 1);
  const int64_t by_len = ceil_div(npq, 8192);
  ns = ns < by_len ? ns : by_len;
  ns = ns < 1024 ? ns : 1024;
  if (ns < 1) ns = 1;
  const int64_t chunk = ceil_div(npq, ns);
  return DwPlan{xb, chunk > 0 ? ceil_div(npq, chunk) : 1, chunk};
}
inline size_t dw_wgrad_workspace_bytes(const ConvParams& p, size_t acc_bytes) {
  const DwPlan plan = dw_wgrad_plan(p);
  return plan.nsplit > 1 ? static_cast<size_t>(plan.nsplit * p.K * p.RS()) * acc_bytes : 0;
}

template <typename T>
cudaError_t launch_dw_fwd(const T* in, const T* w, const T* bias, T* out, const ConvParams& p, cudaStream_t st) {
  const int64_t total = p.N * p.K * p.PQ();
  if (total == 0) return cudaSuccess;
  const ConvDev d = ConvDev::make(p);
  const auto kernel = p.channels_last ? dw_fwd_kernel<T, true> : dw_fwd_kernel<T, false>;
  return launch_kernel(kernel, dim3(grid_1d(total, 256)), dim3(256), st, in, w, bias, out, d, total);
}

template <typename T>
cudaError_t launch_dw_bwd_in(const T* gout, const T* w, T* gin, const ConvParams& p, cudaStream_t st) {
  const int64_t total = p.N * p.C * p.HW();
  if (total == 0) return cudaSuccess;
  const ConvDev d = ConvDev::make(p);
  const auto kernel = p.channels_last ? dw_bwd_in_kernel<T, true> : dw_bwd_in_kernel<T, false>;
  return launch_kernel(kernel, dim3(grid_1d(total, 256)), dim3(256), st, gout, w, gin, d, total);
}

template <typename T>
cudaError_t launch_dw_wgrad(const T* gout, const T* in, T* gw, void* workspace, const ConvParams& p,
                            cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  const DwPlan plan = dw_wgrad_plan(p);
  if (plan.xblocks == 0) return cudaSuccess;
  if (plan.xblocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  Acc* ws = plan.nsplit > 1 ? static_cast<Acc*>(workspace) : nullptr;
  const ConvDev d = ConvDev::make(p);
  const dim3 grid(static_cast<unsigned>(plan.xblocks), static_cast<unsigned>(plan.nsplit));
  const auto kernel = p.channels_last ? dw_wgrad_kernel<T, true> : dw_wgrad_kernel<T, false>;
  cudaError_t err = launch_kernel(kernel, grid, dim3(256), st, gout, in, gw, ws, d, plan.chunk);
  if (err != cudaSuccess || ws == nullptr) return err;
  return launch_split_sum<T, Acc>(ws, gw, p.K * p.RS(), static_cast<int>(plan.nsplit), st);
}

}  // namespace cuda
}  // namespace fastconv
