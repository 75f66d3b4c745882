// conv2d backward on CUDA cores, all deterministic (no atomics):
//  - grad_input: implicit GEMM with M = N*H*W input pixels, NN = Cg, red = Kg*R*S; each input pixel gathers the
//    grad_out taps that read it (output-stationary in grad_input);
//  - grad_weight: implicit GEMM with M = Kg, NN = Cg*R*S, red = N*P*Q split into a shape-determined number of
//    chunks; each chunk writes its own workspace slice, and split_sum_kernel adds the slices in a fixed order;
//  - grad_bias: per-channel sums over N*P*Q, same split-then-fixed-order-sum scheme, tree reduction in a block.
// Depthwise-style problems (Cg == 1, few channels per group) use the direct kernels of conv_dw.cu instead.
#include "conv_ops.cuh"
#include "dispatch.cuh"
#include "depthwise.cuh"
#include "igemm.cuh"

namespace fastconv {
namespace cuda {
namespace {

template <typename T_, bool CL, int VA>
struct BwdInProblem {
  using T = T_;
  using Acc = typename AccOf<T>::type;
  using Red = int;
  using AOp = BwdGradOutOp<T, Acc, CL>;
  using BOp = BwdWeightRowOp<T, Acc, CL>;
  static constexpr bool A_RED_FAST = CL && VA > 1, B_RED_FAST = false;  // scalar NHWC: pixel-fast
  static constexpr int A_V = VA, B_V = 1;

  const T* gout;
  const T* w;
  T* gin;
  ConvDev d;
  int64_t M;
  int NN, ntn;
  int64_t group0;

  FC_DEV AOp a_op(int64_t g, int red_end) const { return AOp{gout + g * d.Kg * (CL ? 1 : d.PQ), d, red_end, M}; }
  FC_DEV BOp b_op(int64_t g, int red_end) const {
    return BOp{w + g * d.Kg * static_cast<int64_t>(d.CgRS), d, red_end};
  }
  FC_DEV void red_range(int, int& begin, int& end) const { begin = 0; end = d.KgRS; }
  FC_DEV void store(int64_t g, int64_t m, int n, Acc v, int) const {
    const int64_t c = g * d.Cg + n;
    int64_t hw;
    const int64_t img = d.d_hw.divmod(m, hw);
    gin[CL ? m * d.C + c : (img * d.C + c) * d.HW + hw] = from_acc<T>(v);
  }
};

template <typename T_, bool CL, int VA>
struct WgradProblem {
  using T = T_;
  using Acc = typename AccOf<T>::type;
  using Red = int64_t;
  using AOp = WgradGradOutOp<T, Acc, CL>;
  using BOp = WgradInputOp<T, Acc, CL>;
  static constexpr bool A_RED_FAST = !CL, B_RED_FAST = !CL;
  static constexpr int A_V = VA, B_V = 1;

  const T* gout;
  const T* in;
  T* gw;
  Acc* ws;  // nullptr: one chunk, written straight to gw
  ConvDev d;
  int64_t chunk;
  int64_t M;
  int NN, ntn;
  int64_t group0;

  FC_DEV AOp a_op(int64_t g, int64_t red_end) const { return AOp{gout + g * d.Kg * (CL ? 1 : d.PQ), d, red_end}; }
  FC_DEV BOp b_op(int64_t g, int64_t red_end) const { return BOp{in + g * d.Cg * (CL ? 1 : d.HW), d, red_end}; }
  FC_DEV void red_range(int split, int64_t& begin, int64_t& end) const {
    begin = split * chunk;
    end = begin + chunk < d.NPQ ? begin + chunk : d.NPQ;
  }
  FC_DEV void store(int64_t g, int64_t m, int n, Acc v, int split) const {
    const int64_t idx = (g * d.Kg + m) * d.CgRS + n;  // weight order in both layouts
    if (ws != nullptr) ws[split * (d.K * static_cast<int64_t>(d.CgRS)) + idx] = v;
    else gw[idx] = from_acc<T>(v);
  }
};

template <typename T>
WgradPlan wgrad_plan_for(const ConvParams& p) {
  using Cfg = GemmCfg<T>;
  return wgrad_plan(p, Cfg::BM, Cfg::BN, Cfg::BK, sizeof(typename AccOf<T>::type));
}

template <typename T, bool CL, int VA>
cudaError_t launch_wgrad(const T* gout, const T* in, T* gw, void* workspace, const ConvParams& p, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  const WgradPlan plan = wgrad_plan_for<T>(p);
  WgradProblem<T, CL, VA> prob{};
  prob.gout = gout; prob.in = in; prob.gw = gw;
  prob.ws = plan.nsplit > 1 ? static_cast<Acc*>(workspace) : nullptr;
  prob.d = ConvDev::make(p);
  prob.chunk = plan.chunk;
  prob.M = p.Kg();
  prob.NN = static_cast<int>(p.Cg() * p.RS());
  cudaError_t err = launch_igemm(prob, p.groups, static_cast<int>(plan.nsplit), st);
  if (err != cudaSuccess || plan.nsplit == 1) return err;
  return launch_split_sum<T, Acc>(prob.ws, gw, p.K * p.Cg() * p.RS(), static_cast<int>(plan.nsplit), st);
}

template <typename T, bool CL, int VA>
cudaError_t launch_bwd_in(const T* gout, const T* w, T* gin, const ConvParams& p, cudaStream_t st) {
  BwdInProblem<T, CL, VA> prob{};
  prob.gout = gout; prob.w = w; prob.gin = gin;
  prob.d = ConvDev::make(p);
  prob.M = p.N * p.HW();
  prob.NN = static_cast<int>(p.Cg());
  return launch_igemm(prob, p.groups, 1, st);
}

// Bias gradient: block (x, split) sums one channel (NCHW: 256 threads on channel x) or 32 channels (channels_last:
// 32 lanes on channels, 8 rows of threads on pixels) over its chunk of N*P*Q; fixed-order tree reduction.
template <typename T, bool CL>
__global__ void __launch_bounds__(256, 4) bias_grad_kernel(const T* __restrict__ gout, T* __restrict__ out,
                                                        typename AccOf<T>::type* __restrict__ ws, int64_t K,
                                                        int64_t PQ, int64_t NPQ, int64_t chunk, FastDiv64 d_pq) {
  using Acc = typename AccOf<T>::type;
  __shared__ Acc red[256];
  const int t = static_cast<int>(threadIdx.x);
  const int64_t begin = blockIdx.y * chunk;
  const int64_t end = begin + chunk < NPQ ? begin + chunk : NPQ;
  const int lanes = CL ? 32 : 1, rows = 256 / lanes;
  const int64_t k = CL ? blockIdx.x * 32LL + t % 32 : static_cast<int64_t>(blockIdx.x);
  Acc s = Acc(0);
  if (k < K) {
    for (int64_t e = begin + t / lanes; e < end; e += rows) {
      int64_t pq;
      const int64_t n = d_pq.divmod(e, pq);
      s += to_acc<Acc>(gout[CL ? e * K + k : (n * K + k) * PQ + pq]);
    }
  }
  red[t] = s;
  __syncthreads();
  for (int width = 128; width >= lanes; width /= 2) {  // pairs (t, t + width) with the same t % lanes
    if (t < width) red[t] += red[t + width];
    __syncthreads();
  }
  if (t < lanes && k < K) {
    if (ws != nullptr) ws[blockIdx.y * K + k] = red[t];
    else out[k] = from_acc<T>(red[t]);
  }
}

struct BiasPlan { int64_t nsplit, chunk; };
BiasPlan bias_plan(const ConvParams& p) {
  const int64_t npq = p.N * p.PQ();
  const int64_t xblocks = p.channels_last ? ceil_div(p.K, 32) : p.K;
  int64_t ns = ceil_div(512, xblocks > 0 ? xblocks : 1);
  const int64_t by_len = ceil_div(npq, 16384);
  ns = ns < by_len ? ns : by_len;
  ns = ns < 1024 ? ns : 1024;
  if (ns < 1) ns = 1;
  const int64_t chunk = ceil_div(npq, ns);
  return BiasPlan{chunk > 0 ? ceil_div(npq, chunk) : 1, chunk};
}

}  // namespace

cudaError_t conv2d_backward_input(DType dtype, const void* grad_out, const void* w, void* grad_in,
                                  const ConvParams& p, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using Cfg = GemmCfg<T>;
    const T* go = static_cast<const T*>(grad_out);
    const T* wt = static_cast<const T*>(w);
    T* gi = static_cast<T*>(grad_in);
    if (use_dw_path(p)) return launch_dw_bwd_in<T>(go, wt, gi, p, stream);
    constexpr int VA = max_vec<T, Cfg::BM, Cfg::BK, Cfg::THREADS>();
    if (!p.channels_last) return launch_bwd_in<T, false, 1>(go, wt, gi, p, stream);
    if (p.Kg() % VA == 0 && aligned_to(grad_out, VA * sizeof(T)))
      return launch_bwd_in<T, true, VA>(go, wt, gi, p, stream);
    return launch_bwd_in<T, true, 1>(go, wt, gi, p, stream);
  });
}

size_t conv2d_backward_weight_workspace_bytes(DType dtype, const ConvParams& p) {
  size_t bytes = 0;
  dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using Acc = typename AccOf<T>::type;
    if (use_dw_path(p)) {
      bytes = dw_wgrad_workspace_bytes(p, sizeof(Acc));
    } else {
      const WgradPlan plan = wgrad_plan_for<T>(p);
      bytes = plan.nsplit > 1 ? static_cast<size_t>(plan.nsplit * p.K * p.Cg() * p.RS()) * sizeof(Acc) : 0;
    }
    return cudaSuccess;
  });
  return bytes;
}

cudaError_t conv2d_backward_weight(DType dtype, const void* grad_out, const void* in, void* grad_w, void* workspace,
                                   const ConvParams& p, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using Cfg = GemmCfg<T>;
    const T* go = static_cast<const T*>(grad_out);
    const T* x = static_cast<const T*>(in);
    T* gw = static_cast<T*>(grad_w);
    if (use_dw_path(p)) return launch_dw_wgrad<T>(go, x, gw, workspace, p, stream);
    constexpr int VA = max_vec<T, Cfg::BM, Cfg::BK, Cfg::THREADS>();
    if (p.channels_last) return launch_wgrad<T, true, 1>(go, x, gw, workspace, p, stream);
    if (p.PQ() % VA == 0 && aligned_to(grad_out, VA * sizeof(T)))
      return launch_wgrad<T, false, VA>(go, x, gw, workspace, p, stream);
    return launch_wgrad<T, false, 1>(go, x, gw, workspace, p, stream);
  });
}

size_t conv2d_backward_bias_workspace_bytes(DType dtype, const ConvParams& p) {
  const BiasPlan plan = bias_plan(p);
  const size_t acc = dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  return plan.nsplit > 1 ? static_cast<size_t>(plan.nsplit * p.K) * acc : 0;
}

cudaError_t conv2d_backward_bias(DType dtype, const void* grad_out, void* grad_bias, void* workspace,
                                 const ConvParams& p, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using Acc = typename AccOf<T>::type;
    if (p.K == 0) return cudaSuccess;
    const BiasPlan plan = bias_plan(p);
    Acc* ws = plan.nsplit > 1 ? static_cast<Acc*>(workspace) : nullptr;
    const T* go = static_cast<const T*>(grad_out);
    T* gb = static_cast<T*>(grad_bias);
    const FastDiv64 d_pq(p.PQ() > 0 ? p.PQ() : 1);
    const int64_t xblocks = p.channels_last ? ceil_div(p.K, 32) : p.K;
    if (xblocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
    const dim3 grid(static_cast<unsigned>(xblocks), static_cast<unsigned>(plan.nsplit));
    const auto kernel = p.channels_last ? bias_grad_kernel<T, true> : bias_grad_kernel<T, false>;
    cudaError_t err = launch_kernel(kernel, grid, dim3(256), stream, go, gb, ws, p.K, p.PQ(), p.N * p.PQ(),
                                    plan.chunk, d_pq);
    if (err != cudaSuccess || ws == nullptr) return err;
    return launch_split_sum<T, Acc>(ws, gb, p.K, static_cast<int>(plan.nsplit), stream);
  });
}

}  // namespace cuda
}  // namespace fastconv
