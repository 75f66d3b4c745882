// max_pool2d forward (values + int64 indices h * W + w within the plane) and a deterministic backward.
//
// Forward follows torch's window scan exactly: rows then columns, first strict maximum wins, a NaN always takes
// the slot (`val > max || isnan(val)`), the index starts at the first in-bounds tap.
//
// Backward is a gather, not a scatter: every input element sums, in output order, the grad_out elements whose
// index names it. The op receives no window parameters, so the candidate outputs are bounded from the indices:
// for each output row p the range [hmin[p], hmax[p]] of input rows its indices name (over all planes and
// columns), likewise for columns; inverted, each input row h gets the output rows [plo[h], phi[h]] that can
// name it. Those bounds use integer atomicMin/atomicMax, whose result does not depend on order, so the
// gradient is bitwise reproducible. Indices outside [0, H*W) name no element and are ignored.
#include <climits>

#include "common.cuh"
#include "dispatch.cuh"

namespace fastconv {
namespace cuda {

const char* pool_unsupported_reason(const PoolParams& p) {
  const int64_t lim = int64_t{1} << 30;
  if (p.C >= lim || p.H >= lim || p.W >= lim || p.P >= lim || p.Q >= lim)
    return "fastconv CUDA max_pool2d supports channel counts and spatial sizes below 2^30";
  if (p.HW() >= (int64_t{1} << 31) || p.PQ() >= (int64_t{1} << 31))
    return "fastconv CUDA max_pool2d supports spatial planes of fewer than 2^31 elements";
  if (p.kernel_h * p.dil_h >= lim || p.kernel_w * p.dil_w >= lim || p.P * p.stride_h >= lim ||
      p.Q * p.stride_w >= lim || p.pad_h >= lim || p.pad_w >= lim)
    return "fastconv CUDA max_pool2d supports kernel extents, strides and padding below 2^30";
  return nullptr;
}

namespace {

struct PoolDev {
  int64_t N, C, H, W, P, Q, HW, PQ;
  int kh, kw, sh, sw, ph, pw, dil_h, dil_w;
  FastDiv64 d_pq, d_c, d_hw;
  FastDiv32 d_q, d_w;
  static PoolDev make(const PoolParams& p) {
    PoolDev d;
    d.N = p.N; d.C = p.C; d.H = p.H; d.W = p.W; d.P = p.P; d.Q = p.Q; d.HW = p.HW(); d.PQ = p.PQ();
    d.kh = int(p.kernel_h); d.kw = int(p.kernel_w); d.sh = int(p.stride_h); d.sw = int(p.stride_w);
    d.ph = int(p.pad_h); d.pw = int(p.pad_w); d.dil_h = int(p.dil_h); d.dil_w = int(p.dil_w);
    d.d_pq = FastDiv64(d.PQ > 0 ? d.PQ : 1); d.d_c = FastDiv64(d.C > 0 ? d.C : 1);
    d.d_hw = FastDiv64(d.HW > 0 ? d.HW : 1);
    d.d_q = FastDiv32(d.Q > 0 ? d.Q : 1); d.d_w = FastDiv32(d.W > 0 ? d.W : 1);
    return d;
  }
};

// Element i of a tensor [N, C, X] (X: a flattened plane) in memory order -> plane (n for channels_last, n*C + c
// otherwise), channel c (0 when not channels_last) and in-plane position x.
template <bool CL>
FC_DEV void split_index(const FastDiv64& d_x, const FastDiv64& d_c, int64_t i, int64_t& plane, int64_t& c,
                        int64_t& x) {
  if (CL) { plane = d_x.divmod(d_c.divmod(i, c), x); }
  else { plane = d_x.divmod(i, x); c = 0; }
}
// Offset of element 0 of that plane (X elements per plane) and the distance between plane elements.
template <bool CL> FC_DEV int64_t plane_base(int64_t plane, int64_t c, int64_t X, int64_t C) {
  return CL ? plane * X * C + c : plane * X;
}

// First in-bounds tap and end of a window along one dim, as torch computes them.
FC_DEV void window(int64_t o, int stride, int pad, int kernel, int dil, int64_t size, int64_t& start, int64_t& end) {
  start = o * stride - pad;
  end = start + static_cast<int64_t>(kernel - 1) * dil + 1;
  end = end < size ? end : size;
  if (start < 0) start += round_up(-start, dil);
}

template <typename T, bool CL>
__global__ void __launch_bounds__(256, 4) maxpool_fwd_kernel(const T* __restrict__ in, T* __restrict__ out,
                                                          int64_t* __restrict__ indices, const PoolDev d,
                                                          int64_t total) {
  using Acc = typename AccOf<T>::type;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t plane, c, pq;
    split_index<CL>(d.d_pq, d.d_c, i, plane, c, pq);
    const int64_t base = plane_base<CL>(plane, c, d.HW, d.C), es = CL ? d.C : 1;
    int q;
    const int p = d.d_q.divmod(static_cast<int>(pq), q);
    int64_t h0, h1, w0, w1;
    window(p, d.sh, d.ph, d.kh, d.dil_h, d.H, h0, h1);
    window(q, d.sw, d.pw, d.kw, d.dil_w, d.W, w0, w1);
    Acc best = -INFINITY;
    int64_t best_idx = h0 * d.W + w0;
    for (int64_t h = h0; h < h1; h += d.dil_h) {
      for (int64_t w = w0; w < w1; w += d.dil_w) {
        const Acc v = to_acc<Acc>(in[base + (h * d.W + w) * es]);
        if (v > best || isnan(v)) {
          best = v;
          best_idx = h * d.W + w;
        }
      }
    }
    out[i] = from_acc<T>(best);
    indices[i] = best_idx;
  }
}

// Workspace layout (int32): hmin[P] hmax[P] wmin[Q] wmax[Q] plo[H] phi[H] qlo[W] qhi[W].
struct Bounds {
  int *hmin, *hmax, *wmin, *wmax, *plo, *phi, *qlo, *qhi;
  static Bounds carve(void* ws, const PoolParams& p) {
    int* b = static_cast<int*>(ws);
    Bounds r;
    r.hmin = b; r.hmax = b + p.P; r.wmin = b + 2 * p.P; r.wmax = b + 2 * p.P + p.Q;
    int* c = b + 2 * (p.P + p.Q);
    r.plo = c; r.phi = c + p.H; r.qlo = c + 2 * p.H; r.qhi = c + 2 * p.H + p.W;
    return r;
  }
};

__global__ void __launch_bounds__(256, 4) bounds_init_kernel(Bounds b, int64_t P, int64_t Q) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < P + Q;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < P) { b.hmin[i] = INT_MAX; b.hmax[i] = -1; }
    else { b.wmin[i - P] = INT_MAX; b.wmax[i - P] = -1; }
  }
}

// Thread (x, y) owns output position pq (and channel c when channels_last) and the planes y, y + gridDim.y, ...
template <bool CL>
__global__ void __launch_bounds__(256, 4) bounds_kernel(const int64_t* __restrict__ indices, Bounds b, const PoolDev d) {
  const int64_t lanes = CL ? d.C : 1;
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= d.PQ * lanes) return;
  int64_t c = 0;
  const int64_t pq = CL ? d.d_c.divmod(e, c) : e;
  const int64_t planes = CL ? d.N : d.N * d.C;
  int hlo = INT_MAX, hhi = -1, wlo = INT_MAX, whi = -1;
  for (int64_t j = blockIdx.y; j < planes; j += gridDim.y) {
    const int64_t v = indices[CL ? (j * d.PQ + pq) * d.C + c : j * d.PQ + pq];
    if (v < 0 || v >= d.HW) continue;
    int w;
    const int h = d.d_w.divmod(static_cast<int>(v), w);
    hlo = h < hlo ? h : hlo; hhi = h > hhi ? h : hhi;
    wlo = w < wlo ? w : wlo; whi = w > whi ? w : whi;
  }
  if (hhi < 0) return;
  int q;
  const int p = d.d_q.divmod(static_cast<int>(pq), q);
  atomicMin(b.hmin + p, hlo); atomicMax(b.hmax + p, hhi);
  atomicMin(b.wmin + q, wlo); atomicMax(b.wmax + q, whi);
}

// plo[h] / phi[h]: first / last output row whose bound range holds input row h (phi < plo: none). Same for w.
__global__ void __launch_bounds__(256, 4) bounds_invert_kernel(Bounds b, int64_t H, int64_t W, int64_t P, int64_t Q) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= H + W) return;
  const bool rows = i < H;
  const int x = static_cast<int>(rows ? i : i - H);
  const int* lo = rows ? b.hmin : b.wmin;
  const int* hi = rows ? b.hmax : b.wmax;
  const int n = static_cast<int>(rows ? P : Q);
  int first = 0, last = -1;
  for (int o = 0; o < n; ++o) {
    if (lo[o] <= x && x <= hi[o]) {
      if (last < 0) first = o;
      last = o;
    }
  }
  (rows ? b.plo : b.qlo)[x] = first;
  (rows ? b.phi : b.qhi)[x] = last;
}

template <typename T, bool CL>
__global__ void __launch_bounds__(256, 4) maxpool_bwd_kernel(const T* __restrict__ gout,
                                                          const int64_t* __restrict__ indices, T* __restrict__ gin,
                                                          const Bounds b, const PoolDev d, int64_t total) {
  using Acc = typename AccOf<T>::type;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t plane, c, hw;
    split_index<CL>(d.d_hw, d.d_c, i, plane, c, hw);
    const int64_t obase = plane_base<CL>(plane, c, d.PQ, d.C), es = CL ? d.C : 1;
    int w;
    const int h = d.d_w.divmod(static_cast<int>(hw), w);
    const int p1 = b.phi[h], q0 = b.qlo[w], q1 = b.qhi[w];
    Acc acc = Acc(0);
    for (int p = b.plo[h]; p <= p1; ++p) {
      for (int q = q0; q <= q1; ++q) {
        const int64_t o = obase + (static_cast<int64_t>(p) * d.Q + q) * es;
        if (indices[o] == hw) acc += to_acc<Acc>(gout[o]);
      }
    }
    gin[i] = from_acc<T>(acc);
  }
}

unsigned blocks_for(int64_t total) {
  const int64_t b = ceil_div(total, 256);
  return static_cast<unsigned>(b < (int64_t{1} << 20) ? b : (int64_t{1} << 20));
}

}  // namespace

cudaError_t max_pool2d_forward(DType dtype, const void* in, void* out, int64_t* indices, const PoolParams& p,
                               cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const int64_t total = p.N * p.C * p.PQ();
    if (total == 0) return cudaSuccess;
    const PoolDev d = PoolDev::make(p);
    const auto kernel = p.channels_last ? maxpool_fwd_kernel<T, true> : maxpool_fwd_kernel<T, false>;
    return launch_kernel(kernel, dim3(blocks_for(total)), dim3(256), stream, static_cast<const T*>(in),
                         static_cast<T*>(out), indices, d, total);
  });
}

size_t max_pool2d_backward_workspace_bytes(const PoolParams& p) {
  return static_cast<size_t>(2 * (p.P + p.Q + p.H + p.W)) * sizeof(int);
}

cudaError_t max_pool2d_backward(DType dtype, const void* grad_out, const int64_t* indices, void* grad_in,
                                void* workspace, const PoolParams& p, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const int64_t total = p.N * p.C * p.HW();
    if (total == 0) return cudaSuccess;
    const PoolDev d = PoolDev::make(p);
    const Bounds b = Bounds::carve(workspace, p);
    cudaError_t err = cudaSuccess;
    if (p.P + p.Q > 0) err = launch_kernel(bounds_init_kernel, dim3(blocks_for(p.P + p.Q)), dim3(256), stream, b, p.P, p.Q);
    if (err != cudaSuccess) return err;
    const int64_t positions = p.PQ() * (p.channels_last ? p.C : 1);
    const int64_t planes = p.channels_last ? p.N : p.N * p.C;
    const int64_t xb = ceil_div(positions, 256);
    int64_t yb = ceil_div(2048, xb);  // about 2048 blocks, each thread over >= 8 planes
    const int64_t by_planes = ceil_div(planes, 8);
    yb = yb < by_planes ? yb : by_planes;
    yb = yb < 65535 ? (yb > 0 ? yb : 1) : 65535;
    if (xb > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
    const auto bk = p.channels_last ? bounds_kernel<true> : bounds_kernel<false>;
    if (xb > 0 && planes > 0)
      err = launch_kernel(bk, dim3(static_cast<unsigned>(xb), static_cast<unsigned>(yb)), dim3(256), stream, indices,
                          b, d);
    if (err != cudaSuccess) return err;
    err = launch_kernel(bounds_invert_kernel, dim3(static_cast<unsigned>(ceil_div(p.H + p.W, 256))), dim3(256),
                        stream, b, p.H, p.W, p.P, p.Q);
    if (err != cudaSuccess) return err;
    const auto kernel = p.channels_last ? maxpool_bwd_kernel<T, true> : maxpool_bwd_kernel<T, false>;
    return launch_kernel(kernel, dim3(blocks_for(total)), dim3(256), stream, static_cast<const T*>(grad_out), indices,
                         static_cast<T*>(grad_in), b, d, total);
  });
}

}  // namespace cuda
}  // namespace fastconv
