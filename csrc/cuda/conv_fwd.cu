// conv2d forward on CUDA cores: the implicit GEMM of igemm.cuh with M = N*P*Q output pixels, NN = K/groups
// output channels and red = Cg*R*S, one grid slice per group. Depthwise-style problems take depthwise.cuh's direct kernel.
#include "conv_ops.cuh"
#include "dispatch.cuh"
#include "depthwise.cuh"
#include "igemm.cuh"

namespace fastconv {
namespace cuda {

const char* conv_unsupported_reason(const ConvParams& p) {
  const int64_t lim = kMaxDim32;
  if (p.C >= lim || p.K >= lim || p.H >= lim || p.W >= lim || p.P >= lim || p.Q >= lim)
    return "fastconv CUDA kernels support channel counts and spatial sizes below 2^29";
  if (p.R * p.dil_h >= lim || p.S * p.dil_w >= lim || p.P * p.stride_h >= lim || p.Q * p.stride_w >= lim ||
      p.pad_h >= lim || p.pad_w >= lim)
    return "fastconv CUDA kernels support kernel extents, strides and padding only below 2^29";
  if (p.HW() >= (int64_t{1} << 31) || p.PQ() >= (int64_t{1} << 31))
    return "fastconv CUDA kernels support spatial planes of fewer than 2^31 elements";
  if (p.Cg() * p.RS() >= (int64_t{1} << 30) || p.Kg() * p.RS() >= (int64_t{1} << 30))
    return "fastconv CUDA kernels support (channels per group) x R x S below 2^30";
  return nullptr;
}

namespace {

template <typename T_, bool CL, int VA, int VB>
struct FwdProblem {
  using T = T_;
  using Acc = typename AccOf<T>::type;
  using Red = int;
  using AOp = FwdInputOp<T, Acc, CL>;
  using BOp = ContigRowOp<T, Acc>;
  static constexpr bool A_RED_FAST = CL && VA > 1, B_RED_FAST = true;  // scalar NHWC: pixel-fast
  static constexpr int A_V = VA, B_V = VB;

  const T* in;
  const T* w;
  const T* bias;
  T* out;
  ConvDev d;
  int64_t M;
  int NN, ntn;
  int64_t group0;

  FC_DEV AOp a_op(int64_t g, int red_end) const { return AOp{in + g * d.Cg * (CL ? 1 : d.HW), d, red_end, M}; }
  FC_DEV BOp b_op(int64_t g, int red_end) const {
    return BOp{w + g * d.Kg * static_cast<int64_t>(d.CgRS), d.CgRS, d.Kg, red_end};
  }
  FC_DEV void red_range(int, int& begin, int& end) const { begin = 0; end = d.CgRS; }
  FC_DEV void store(int64_t g, int64_t m, int n, Acc v, int) const {
    const int64_t k = g * d.Kg + n;
    if (bias != nullptr) v += to_acc<Acc>(bias[k]);
    int64_t pq;
    const int64_t img = d.d_pq.divmod(m, pq);
    out[CL ? m * d.K + k : (img * d.K + k) * d.PQ + pq] = from_acc<T>(v);
  }
};

template <typename T, bool CL, int VA, int VB>
cudaError_t launch_fwd(const T* in, const T* w, const T* bias, T* out, const ConvParams& p, cudaStream_t st) {
  FwdProblem<T, CL, VA, VB> prob{};
  prob.in = in; prob.w = w; prob.bias = bias; prob.out = out;
  prob.d = ConvDev::make(p);
  prob.M = p.N * p.PQ();
  prob.NN = static_cast<int>(p.Kg());
  return launch_igemm(prob, p.groups, 1, st);
}

}  // namespace

cudaError_t conv2d_forward(DType dtype, const void* in, const void* w, const void* bias, void* out,
                           const ConvParams& p, cudaStream_t stream) {
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using Cfg = GemmCfg<T>;
    const T* x = static_cast<const T*>(in);
    const T* wt = static_cast<const T*>(w);
    const T* b = static_cast<const T*>(bias);
    T* y = static_cast<T*>(out);
    if (use_dw_path(p)) return launch_dw_fwd<T>(x, wt, b, y, p, stream);
    constexpr int VA = max_vec<T, Cfg::BM, Cfg::BK, Cfg::THREADS>();
    constexpr int VB = max_vec<T, Cfg::BN, Cfg::BK, Cfg::THREADS>();
    const bool vb = p.Cg() * p.RS() % VB == 0 && aligned_to(w, VB * sizeof(T));
    if (p.channels_last) {
      const bool va = p.Cg() % VA == 0 && aligned_to(in, VA * sizeof(T));
      if (va && vb) return launch_fwd<T, true, VA, VB>(x, wt, b, y, p, stream);
      if (va) return launch_fwd<T, true, VA, 1>(x, wt, b, y, p, stream);
      if (vb) return launch_fwd<T, true, 1, VB>(x, wt, b, y, p, stream);
      return launch_fwd<T, true, 1, 1>(x, wt, b, y, p, stream);
    }
    if (vb) return launch_fwd<T, false, 1, VB>(x, wt, b, y, p, stream);
    return launch_fwd<T, false, 1, 1>(x, wt, b, y, p, stream);
  });
}

}  // namespace cuda
}  // namespace fastconv
