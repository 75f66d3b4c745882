// Tensor-core implicit GEMM for channels_last conv2d: forward, backward-input and backward-weight.
//
// Block tile 128 x 128, 8 warps of 64 x 32, stage = 64 bytes of reduction per GEMM row (32 fp16/bf16 or 16 fp32
// elements), 3-stage cp.async pipeline (48 KiB of shared memory), fp32 accumulators. Operands reach shared memory
// in 16-byte chunks gathered straight from global memory (zero-filled in the padding and past the edges) in one
// of two XOR-swizzled layouts (tc_common.cuh): K-major when the reduction dimension is contiguous in global
// memory (forward input and weight, backward-input grad_out), read with ldmatrix; row-major when the GEMM rows
// are (backward-input weight, both backward-weight operands), read with ldmatrix.trans (fp16/bf16) or 32-bit
// shared loads (tf32). mma.sync m16n8k16 for fp16/bf16, m16n8k8 on tf32-rounded operands for fp32.
// Deterministic: each output is one block's fixed-order sum; the weight gradient splits the reduction into a
// shape-determined number of chunks summed in order by split_sum_kernel.
#include "conv_ops.cuh"
#include "dispatch.cuh"
#include "dw.cuh"
#include "tc_common.cuh"

namespace fastconv {
namespace cuda {
namespace {

constexpr int kTile = 128, kThreads = 256, kStages = 3, kTileBytes = 8192;
constexpr int kSmemBytes = kStages * 2 * kTileBytes;  // 48 KiB: within the default dynamic limit

template <typename T> struct TcT {
  static constexpr int V = 16 / static_cast<int>(sizeof(T));          // elements per 16-byte chunk
  static constexpr int BK = 4 * V;                                    // reduction elements per stage
  static constexpr int RM_BYTES = kTile * static_cast<int>(sizeof(T));  // row-major tile: bytes per k-row
  static constexpr bool TF32 = sizeof(T) == 4;
};

// Copies this thread's two 16-byte chunks of one operand tile per stage; the rows it serves never change.
template <class Op, typename T, typename Red, bool KMAJOR>
struct TcLoader {
  typename Op::Ctx ctx[2];
  int soff[2], red_off[2];
  FC_DEV void init(const Op& op, int64_t row0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int id = static_cast<int>(threadIdx.x) + i * kThreads;
      if (KMAJOR) {
        const int row = id >> 2, c = id & 3;
        soff[i] = tc::kmajor_off(row, c);
        red_off[i] = c * TcT<T>::V;
        ctx[i] = op.ctx(row0 + row);
      } else {
        constexpr int CPR = TcT<T>::RM_BYTES / 16;  // chunks per k-row
        const int krow = id / CPR, c = id % CPR;
        soff[i] = tc::rowmajor_off<TcT<T>::RM_BYTES>(krow, c);
        red_off[i] = krow;
        ctx[i] = op.ctx(row0 + c * TcT<T>::V);
      }
    }
  }
  FC_DEV void issue(const Op& op, unsigned char* tile, Red red0) const {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      bool pred;
      const void* src = op.src(ctx[i], red0 + red_off[i], pred);
      tc::cp_async16(tile + soff[i], src, pred);
    }
  }
};

template <typename T> FC_DEV uint32_t lds_rm32(const unsigned char* tile, int krow, int row) {
  return *reinterpret_cast<const uint32_t*>(tile + tc::rowmajor_off<TcT<T>::RM_BYTES>(krow, row >> 2) + (row & 3) * 4);
}

// A fragments of the warp's four m16 tiles for k-step ks.
template <typename T, bool KMAJOR>
FC_DEV void load_a(const unsigned char* As, int m_base, int ks, int lane, uint32_t (&a)[4][4]) {
#pragma unroll
  for (int mt = 0; mt < 4; ++mt) {
    const int m = m_base + mt * 16, j = lane >> 3;
    if (KMAJOR) {
      tc::ldsm_x4(a[mt], As + tc::kmajor_off(m + (lane & 7) + (j & 1) * 8, ks * 2 + (j >> 1)));
    } else if (!TcT<T>::TF32) {
      const int krow = ks * 16 + (j >> 1) * 8 + (lane & 7);
      tc::ldsm_x4_trans(a[mt], As + tc::rowmajor_off<TcT<T>::RM_BYTES>(krow, (m + (j & 1) * 8) >> 3));
    } else {
      const int g = lane >> 2, t = lane & 3, krow = ks * 8 + t;
      a[mt][0] = lds_rm32<T>(As, krow, m + g);
      a[mt][1] = lds_rm32<T>(As, krow, m + g + 8);
      a[mt][2] = lds_rm32<T>(As, krow + 4, m + g);
      a[mt][3] = lds_rm32<T>(As, krow + 4, m + g + 8);
    }
  }
}

// B fragments of the warp's four n8 tiles for k-step ks.
template <typename T, bool KMAJOR>
FC_DEV void load_b(const unsigned char* Bs, int n_base, int ks, int lane, uint32_t (&b)[4][2]) {
#pragma unroll
  for (int np = 0; np < 2; ++np) {
    const int n = n_base + np * 16, j = lane >> 3;
    uint32_t r[4];
    if (KMAJOR) {
      tc::ldsm_x4(r, Bs + tc::kmajor_off(n + (j >> 1) * 8 + (lane & 7), ks * 2 + (j & 1)));
    } else if (!TcT<T>::TF32) {
      const int krow = ks * 16 + (j & 1) * 8 + (lane & 7);
      tc::ldsm_x4_trans(r, Bs + tc::rowmajor_off<TcT<T>::RM_BYTES>(krow, (n + (j >> 1) * 8) >> 3));
    } else {
      const int g = lane >> 2, t = lane & 3, krow = ks * 8 + t;
      r[0] = lds_rm32<T>(Bs, krow, n + g);
      r[1] = lds_rm32<T>(Bs, krow + 4, n + g);
      r[2] = lds_rm32<T>(Bs, krow, n + 8 + g);
      r[3] = lds_rm32<T>(Bs, krow + 4, n + 8 + g);
    }
    b[2 * np][0] = r[0]; b[2 * np][1] = r[1]; b[2 * np + 1][0] = r[2]; b[2 * np + 1][1] = r[3];
  }
}

template <class Prob>
__global__ void __launch_bounds__(kThreads, 1) tc_conv_kernel(const Prob prob) {
  using T = typename Prob::T;
  using Red = typename Prob::Red;
  FC_DYNAMIC_SMEM(smem);
  const int64_t m0 = static_cast<int64_t>(blockIdx.x / prob.ntn) * kTile;
  const int n0 = static_cast<int>(blockIdx.x % prob.ntn) * kTile;
  const int64_t g = prob.group0 + blockIdx.y;
  const int split = static_cast<int>(blockIdx.z);
  Red red_begin, red_end;
  prob.red_range(split, red_begin, red_end);
  const typename Prob::AOp aop = prob.a_op(g, red_end);
  const typename Prob::BOp bop = prob.b_op(g, red_end);
  TcLoader<typename Prob::AOp, T, Red, Prob::A_KMAJOR> al;
  TcLoader<typename Prob::BOp, T, Red, Prob::B_KMAJOR> bl;
  al.init(aop, m0);
  bl.init(bop, n0);

  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int wm = (warp & 1) * 64, wn = (warp >> 1) * 32;
  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  constexpr int BK = TcT<T>::BK;
  const Red nk = red_end > red_begin ? (red_end - red_begin + BK - 1) / BK : 0;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) {
      al.issue(aop, smem + s * 2 * kTileBytes, red_begin + s * BK);
      bl.issue(bop, smem + s * 2 * kTileBytes + kTileBytes, red_begin + s * BK);
    }
    tc::cp_async_commit();
  }
  for (Red kt = 0; kt < nk; ++kt) {
    tc::cp_async_wait<kStages - 2>();  // this thread's chunks of stage kt have landed
    __syncthreads();                   // everyone's have; and stage kt-1 is no longer being read
    const Red next = kt + kStages - 1;
    if (next < nk) {
      unsigned char* st = smem + static_cast<int>(next % kStages) * 2 * kTileBytes;
      al.issue(aop, st, red_begin + next * BK);
      bl.issue(bop, st + kTileBytes, red_begin + next * BK);
    }
    tc::cp_async_commit();
    const unsigned char* As = smem + static_cast<int>(kt % kStages) * 2 * kTileBytes;
    const unsigned char* Bs = As + kTileBytes;
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
      uint32_t a[4][4], b[4][2];
      load_a<T, Prob::A_KMAJOR>(As, wm, ks, lane, a);
      load_b<T, Prob::B_KMAJOR>(Bs, wn, ks, lane, b);
      if (TcT<T>::TF32) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[i][e] = tc::to_tf32(a[i][e]);
          b[i][0] = tc::to_tf32(b[i][0]);
          b[i][1] = tc::to_tf32(b[i][1]);
        }
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) tc::mma<T>(acc[mt][nt], a[mt], b[nt]);
    }
  }
  tc::cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2) {
      const int64_t m = m0 + wm + mt * 16 + (lane >> 2) + e2 * 8;
      if (m >= prob.M) continue;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int n = n0 + wn + nt * 8 + (lane & 3) * 2 + e;
          if (n < prob.NN) prob.store(g, m, n, acc[mt][nt][e2 * 2 + e], split);
        }
    }
}

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
    const int h = c.h0 + r * d.dh, w = c.w0 + s * d.dw;
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
    const int hn = c.hb - r * d.dh, wn = c.wb - s * d.dw;
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

template <class Prob>
cudaError_t launch_tc(Prob prob, int64_t groups, int splits, cudaStream_t stream) {
  const int64_t mt = ceil_div(prob.M, kTile);
  prob.ntn = static_cast<int>(ceil_div(prob.NN, kTile));
  if (mt == 0 || prob.ntn == 0 || groups == 0) return cudaSuccess;
  if (mt * prob.ntn > 0x7fffffffLL || splits > 65535) return cudaErrorInvalidConfiguration;
  for (int64_t g0 = 0; g0 < groups; g0 += 65535) {
    prob.group0 = g0;
    const dim3 grid(static_cast<unsigned>(mt * prob.ntn), static_cast<unsigned>(groups - g0 < 65535 ? groups - g0 : 65535),
                    static_cast<unsigned>(splits));
    const cudaError_t err = launch_kernel_smem(tc_conv_kernel<Prob>, grid, dim3(kThreads), kSmemBytes, stream, prob);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

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

}  // namespace

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
