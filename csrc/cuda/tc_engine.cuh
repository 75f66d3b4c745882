// Tensor-core implicit-GEMM engine shared by the conv_tc problems (see conv_tc.cu for the operands).
//
// Block tile 128 x 128, 8 warps of 64 x 32, stage = 64 bytes of reduction per GEMM row (32 fp16/bf16 or 16 fp32
// elements), 3-stage cp.async pipeline (48 KiB of shared memory), fp32 accumulators. Operands reach shared memory
// in 16-byte chunks gathered straight from global memory (zero-filled in the padding and past the edges) in one
// of two XOR-swizzled layouts (tc_common.cuh): K-major when the reduction dimension is contiguous in global
// memory, read with ldmatrix; row-major when the GEMM rows are, read with ldmatrix.trans (fp16/bf16) or 32-bit
// shared loads (tf32). mma.sync m16n8k16 for fp16/bf16, m16n8k8 on tf32-rounded operands for fp32.
//
// Problem interface: using T, Red, AOp, BOp; static constexpr bool A_KMAJOR, B_KMAJOR; ConvDev d; int64_t M;
// int NN, ntn; int64_t group0; a_op / b_op (g, red_end); red_range(split, begin, end); store(g, m, n, v, split).
// Op: Ctx ctx(int64_t row) (row = first of the chunk's V rows when row-major);
//     const void* src(const Ctx&, Red red, bool& pred) (address of the 16-byte chunk; pred false: zero fill).
#pragma once
#include "conv_ops.cuh"
#include "tc_common.cuh"

namespace fastconv {
namespace cuda {
namespace tcgemm {

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

}  // namespace tcgemm
}  // namespace cuda
}  // namespace fastconv
