// Tensor-core implicit GEMM for channels_last conv2d: forward, backward-input and backward-weight.
//
// The engine (tile sizes, cp.async pipeline, swizzled layouts, ldmatrix + mma.sync) is tc_engine.cuh; this file
// holds the three problems' operand gatherers, epilogues and the host launchers. Operand layouts:
//   forward       A = input (K-major: c contiguous)        B = weight (K-major: (r, s, c) contiguous)
//   backward-in   A = grad_out (K-major: k contiguous)     B = weight (row-major: c contiguous)
//   backward-w    A = grad_out (row-major: k contiguous)   B = input (row-major: c contiguous)
// Deterministic: each output is one block's fixed-order sum; the weight gradient splits the reduction into a
// shape-determined number of chunks summed in order by split_sum_kernel.
#include "conv_ops.cuh"
#include "dispatch.cuh"
#include "depthwise.cuh"
#include "tc_engine.cuh"

namespace fastconv {
namespace cuda {
namespace {

using namespace tcgemm;

// ---- operands -----------------------------------------------------------------------------------------------

// Forward A (K-major): output pixel m = (n, p, q), reduction (r, s, c) with c contiguous.
template <typename T> struct TcFwdInput {
  const T* base;
  ConvDev d;
  int red_end;
  int64_t M;
  struct Ctx { const T* img; int h0, w0; };
  FC_DEV Ctx ctx(int64_t m) const { FwdInputOp<T, float, true> o{base, d, red_end, M}; auto c = o.ctx(m); return Ctx{c.img, c.h0, c.w0}; }
  FC_DEV const void* src(const Ctx& c, int red, bool& pred) const {
    int ci, s;
    const int rs = d.d_cg.divmod(red, ci), r = d.d_s.divmod(rs, s);
    const int h = c.h0 + r * d.dil_h, w = c.w0 + s * d.dil_w;
    pred = red < red_end && in_range(h, d.H) && in_range(w, d.W);
    return pred ? c.img + (static_cast<int64_t>(h) * d.W + w) * d.C + ci : base;
  }
};

// A row of contiguous reduction elements (forward weight), K-major.
template <typename T> struct TcContigRow {
  const T* base;
  int64_t stride, rows;
  int red_end;
  struct Ctx { const T* row; };
  FC_DEV Ctx ctx(int64_t k) const { return Ctx{k < rows ? base + k * stride : nullptr}; }
  FC_DEV const void* src(const Ctx& c, int red, bool& pred) const {
    pred = c.row != nullptr && red < red_end;
    return pred ? c.row + red : base;
  }
};

// Backward-input A (K-major): input pixel m = (n, h, w), reduction (r, s, k) with k contiguous.
template <typename T> struct TcBwdGradOut {
  const T* base;
  ConvDev d;
  int red_end;
  int64_t M;
  struct Ctx { const T* img; int hb, wb; };
  FC_DEV Ctx ctx(int64_t m) const { BwdGradOutOp<T, float, true> o{base, d, red_end, M}; auto c = o.ctx(m); return Ctx{c.img, c.hb, c.wb}; }
  FC_DEV const void* src(const Ctx& c, int red, bool& pred) const {
    int k, s, rh, rw;
    const int rs = d.d_kg.divmod(red, k), r = d.d_s.divmod(rs, s);
    const int hn = c.hb - r * d.dil_h, wn = c.wb - s * d.dil_w;
    const int p = d.d_sh.divmod(hn, rh), q = d.d_sw.divmod(wn, rw);
    pred = red < red_end && hn >= 0 && wn >= 0 && rh == 0 && rw == 0 && p < d.P && q < d.Q;
    return pred ? c.img + (static_cast<int64_t>(p) * d.Q + q) * d.K + k : base;
  }
};

// Backward-input B (row-major): rows c (a chunk of V channels), reduction (r, s, k): weight[k][r][s][c].
template <typename T> struct TcBwdWeight {
  const T* base;  // weight of the group's first output channel
  ConvDev d;
  int red_end;
  struct Ctx { const T* col; };
  FC_DEV Ctx ctx(int64_t c0) const { return Ctx{c0 < d.Cg ? base + c0 : nullptr}; }
  FC_DEV const void* src(const Ctx& c, int red, bool& pred) const {
    int k;
    const int rs = d.d_kg.divmod(red, k);
    pred = c.col != nullptr && red < red_end;
    return pred ? c.col + static_cast<int64_t>(k) * d.CgRS + static_cast<int64_t>(rs) * d.Cg : base;
  }
};

// Backward-weight A (row-major): rows k (a chunk of V channels), reduction npq: grad_out[npq][k].
template <typename T> struct TcWgradGradOut {
  const T* base;
  ConvDev d;
  int64_t red_end;
  struct Ctx { const T* col; };
  FC_DEV Ctx ctx(int64_t k0) const { return Ctx{k0 < d.Kg ? base + k0 : nullptr}; }
  FC_DEV const void* src(const Ctx& c, int64_t npq, bool& pred) const {
    pred = c.col != nullptr && npq < red_end;
    return pred ? c.col + npq * d.K : base;
  }
};

// Backward-weight B (row-major): rows col = (r, s, c) (a chunk of V channels), reduction npq: input taps.
template <typename T> struct TcWgradInput {
  const T* base;
  ConvDev d;
  int64_t red_end;
  struct Ctx { const T* chan; int hoff, woff; };
  FC_DEV Ctx ctx(int64_t col0) const { WgradInputOp<T, float, true> o{base, d, red_end}; auto c = o.ctx(col0); return Ctx{c.chan, c.hoff, c.woff}; }
  FC_DEV const void* src(const Ctx& c, int64_t npq, bool& pred) const {
    int64_t pq;
    const int64_t n = d.d_pq.divmod(npq, pq);
    int q;
    const int p = d.d_q.divmod(static_cast<int>(pq), q);
    const int h = p * d.sh + c.hoff, w = q * d.sw + c.woff;
    pred = npq < red_end && in_range(h, d.H) && in_range(w, d.W);
    return pred ? c.chan + (n * d.HW + static_cast<int64_t>(h) * d.W + w) * d.C : base;
  }
};

// ---- problems -------------------------------------------------------------------------------------------------

template <typename T_> struct TcProbBase {
  using T = T_;
  ConvDev d;
  int64_t M;
  int NN, ntn;
  int64_t group0;
};

template <typename T_> struct TcFwd : TcProbBase<T_> {
  using T = T_;
  using Red = int;
  using AOp = TcFwdInput<T>;
  using BOp = TcContigRow<T>;
  static constexpr bool A_KMAJOR = true, B_KMAJOR = true;
  const T *in, *w, *bias;
  T* out;
  FC_DEV AOp a_op(int64_t g, int red_end) const { return AOp{in + g * this->d.Cg, this->d, red_end, this->M}; }
  FC_DEV BOp b_op(int64_t g, int red_end) const {
    return BOp{w + g * this->d.Kg * static_cast<int64_t>(this->d.CgRS), this->d.CgRS, this->d.Kg, red_end};
  }
  FC_DEV void red_range(int, int& b, int& e) const { b = 0; e = this->d.CgRS; }
  FC_DEV void store(int64_t g, int64_t m, int n, float v, int) const {
    const int64_t k = g * this->d.Kg + n;
    if (bias != nullptr) v += to_acc<float>(bias[k]);
    out[m * this->d.K + k] = from_acc<T>(v);
  }
};

template <typename T_> struct TcBwdIn : TcProbBase<T_> {
  using T = T_;
  using Red = int;
  using AOp = TcBwdGradOut<T>;
  using BOp = TcBwdWeight<T>;
  static constexpr bool A_KMAJOR = true, B_KMAJOR = false;
  const T *gout, *w;
  T* gin;
  FC_DEV AOp a_op(int64_t g, int red_end) const { return AOp{gout + g * this->d.Kg, this->d, red_end, this->M}; }
  FC_DEV BOp b_op(int64_t g, int red_end) const {
    return BOp{w + g * this->d.Kg * static_cast<int64_t>(this->d.CgRS), this->d, red_end};
  }
  FC_DEV void red_range(int, int& b, int& e) const { b = 0; e = this->d.KgRS; }
  FC_DEV void store(int64_t g, int64_t m, int n, float v, int) const {
    gin[m * this->d.C + g * this->d.Cg + n] = from_acc<T>(v);
  }
};

template <typename T_> struct TcWgrad : TcProbBase<T_> {
  using T = T_;
  using Red = int64_t;
  using AOp = TcWgradGradOut<T>;
  using BOp = TcWgradInput<T>;
  static constexpr bool A_KMAJOR = false, B_KMAJOR = false;
  const T *gout, *in;
  T* gw;
  float* ws;
  int64_t chunk;
  FC_DEV AOp a_op(int64_t g, int64_t red_end) const { return AOp{gout + g * this->d.Kg, this->d, red_end}; }
  FC_DEV BOp b_op(int64_t g, int64_t red_end) const { return BOp{in + g * this->d.Cg, this->d, red_end}; }
  FC_DEV void red_range(int split, int64_t& b, int64_t& e) const {
    b = split * chunk;
    e = b + chunk < this->d.NPQ ? b + chunk : this->d.NPQ;
  }
  FC_DEV void store(int64_t g, int64_t m, int n, float v, int split) const {
    const int64_t idx = (g * this->d.Kg + m) * this->d.CgRS + n;
    if (ws != nullptr) ws[split * (this->d.K * static_cast<int64_t>(this->d.CgRS)) + idx] = v;
    else gw[idx] = from_acc<T>(v);
  }
};

template <typename T> WgradPlan tc_wgrad_plan(const ConvParams& p) {
  return wgrad_plan(p, kTile, kTile, TcT<T>::BK, sizeof(float));
}

bool all_aligned(std::initializer_list<const void*> ptrs) {
  for (const void* q : ptrs)
    if (q != nullptr && !aligned_to(q, 16)) return false;
  return true;
}

// fp16 / bf16 as themselves, fp32 as tf32 operands; fp64 never reaches here.
template <class F> cudaError_t dispatch_tc(DType dt, F&& f) {
  switch (dt) {
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
    case DType::Float32: return f(float{});
    default: return cudaErrorInvalidValue;
  }
}

#if !defined(FASTCONV_EMULATE)
// Compiled like the tensor-core kernels, so its attributes say which code the driver loads for this GPU.
__global__ void tc_arch_probe() {}
#endif

}  // namespace

const char* tc_code_for_device() {
#if !defined(FASTCONV_EMULATE)
  cudaFuncAttributes attr{};
  if (cudaFuncGetAttributes(&attr, tc_arch_probe) != cudaSuccess)
    return "fastconv: no CUDA code of this build can run on this GPU";
  // ptxVersion is the virtual arch the loaded code was compiled from (PTX JIT-compiled for a newer GPU keeps
  // its older one): mma.sync / ldmatrix / cp.async need 80 or more.
  if (attr.ptxVersion < 80 || attr.binaryVersion < 80)
    return "fastconv: this build has no sm_80+ code for this GPU, so its tensor-core kernels cannot run; rebuild "
           "with TORCH_CUDA_ARCH_LIST naming this GPU's compute capability (8.0 or later), or set "
           "FASTCONV_TENSOR_CORES=0";
#endif
  return nullptr;
}

bool conv2d_tc_supported(DType dtype, const ConvParams& p, bool allow_tf32) {
  if (!p.channels_last || dtype == DType::Float64 || (dtype == DType::Float32 && !allow_tf32)) return false;
  const int64_t v = dtype == DType::Float32 ? 4 : 8;
  if (p.Cg() % v != 0 || p.Kg() % v != 0 || conv_unsupported_reason(p) != nullptr) return false;
#if !defined(FASTCONV_EMULATE)
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return false;
  if (major < 8) return false;
#endif
  return true;
}

cudaError_t conv2d_forward_tc(DType dtype, const void* in, const void* w, const void* bias, void* out,
                              const ConvParams& p, bool allow_tf32, cudaStream_t stream) {
  if (!conv2d_tc_supported(dtype, p, allow_tf32) || !all_aligned({in, w}))
    return conv2d_forward(dtype, in, w, bias, out, p, stream);
  return dispatch_tc(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    TcFwd<T> prob{};
    prob.d = ConvDev::make(p);
    prob.M = p.N * p.PQ();
    prob.NN = static_cast<int>(p.Kg());
    prob.in = static_cast<const T*>(in); prob.w = static_cast<const T*>(w);
    prob.bias = static_cast<const T*>(bias); prob.out = static_cast<T*>(out);
    return launch_tc(prob, p.groups, 1, stream);
  });
}

cudaError_t conv2d_backward_input_tc(DType dtype, const void* grad_out, const void* w, void* grad_in,
                                     const ConvParams& p, bool allow_tf32, cudaStream_t stream) {
  if (!conv2d_tc_supported(dtype, p, allow_tf32) || !all_aligned({grad_out, w}))
    return conv2d_backward_input(dtype, grad_out, w, grad_in, p, stream);
  return dispatch_tc(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    TcBwdIn<T> prob{};
    prob.d = ConvDev::make(p);
    prob.M = p.N * p.HW();
    prob.NN = static_cast<int>(p.Cg());
    prob.gout = static_cast<const T*>(grad_out); prob.w = static_cast<const T*>(w);
    prob.gin = static_cast<T*>(grad_in);
    return launch_tc(prob, p.groups, 1, stream);
  });
}

size_t conv2d_backward_weight_tc_workspace_bytes(DType dtype, const ConvParams& p) {
  size_t bytes = conv2d_backward_weight_workspace_bytes(dtype, p);  // the fallback's, if it is taken
  dispatch_tc(dtype, [&](auto tag) -> cudaError_t {
    const WgradPlan plan = tc_wgrad_plan<decltype(tag)>(p);
    const size_t tc = plan.nsplit > 1 ? static_cast<size_t>(plan.nsplit * p.K * p.Cg() * p.RS()) * sizeof(float) : 0;
    bytes = tc > bytes ? tc : bytes;
    return cudaSuccess;
  });
  return bytes;
}

cudaError_t conv2d_backward_weight_tc(DType dtype, const void* grad_out, const void* in, void* grad_w,
                                      void* workspace, const ConvParams& p, bool allow_tf32, cudaStream_t stream) {
  if (!conv2d_tc_supported(dtype, p, allow_tf32) || !all_aligned({grad_out, in, workspace}))
    return conv2d_backward_weight(dtype, grad_out, in, grad_w, workspace, p, stream);
  return dispatch_tc(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const WgradPlan plan = tc_wgrad_plan<T>(p);
    TcWgrad<T> prob{};
    prob.d = ConvDev::make(p);
    prob.M = p.Kg();
    prob.NN = static_cast<int>(p.Cg() * p.RS());
    prob.gout = static_cast<const T*>(grad_out); prob.in = static_cast<const T*>(in);
    prob.gw = static_cast<T*>(grad_w);
    prob.ws = plan.nsplit > 1 ? static_cast<float*>(workspace) : nullptr;
    prob.chunk = plan.chunk;
    cudaError_t err = launch_tc(prob, p.groups, static_cast<int>(plan.nsplit), stream);
    if (err != cudaSuccess || prob.ws == nullptr) return err;
    return launch_split_sum<T, float>(prob.ws, static_cast<T*>(grad_w), p.K * p.Cg() * p.RS(),
                                      static_cast<int>(plan.nsplit), stream);
  });
}

}  // namespace cuda
}  // namespace fastconv
