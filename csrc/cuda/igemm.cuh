// The CUDA-core implicit-GEMM engine that conv2d forward, backward-input and backward-weight share.
//
// One block computes a BM x BN tile of C = A * B for one group, where A (M x red) and B (red x NN) are never
// materialised: a Problem supplies two operand gatherers (AOp reads row m of A, BOp reads column n of B, i.e.
// row n of B^T) and an epilogue. Tiles of A and B^T go global -> registers -> shared memory ([BK][rows], k-major,
// double-buffered, one barrier per step); each thread then accumulates a TM x TN register block from 16-byte
// shared-memory reads. Out-of-range rows, taps in the padding and the ragged end of the reduction are handled
// by predicated loads that yield zero; the inner loop has no data-dependent branch.
//
// Problem interface (see conv_fwd.cu / conv_bwd.cu):
//   using T, Acc, Red (int or int64_t: the reduction index type), AOp, BOp;
//   static constexpr bool A_RED_FAST, B_RED_FAST; static constexpr int A_V, B_V;  (load mapping, vector width)
//   int64_t M; int NN; int ntn;  (rows, columns, column tiles per group)  int64_t group0;
// Grid: x = row tile * ntn + column tile, y = group - group0, z = split-K chunk (see launch_igemm).
//   AOp a_op(int64_t g, Red red_end) const;  BOp b_op(int64_t g, Red red_end) const;
//   void red_range(int split, Red& begin, Red& end) const;
//   void store(int64_t g, int64_t m, int n, Acc v, int split) const;   (m < M and n < NN guaranteed)
//   Op::Ctx Op::ctx(int64_t row) const;  template <int V> void Op::load(const Ctx&, Red red, Acc (&)[V]) const;
#pragma once
#include "common.cuh"

namespace fastconv {
namespace cuda {

template <typename T> struct GemmCfg {  // fp32, fp16, bf16 elements; fp32 accumulators
  static constexpr int BM = 128, BN = 64, BK = 16, TM = 8, TN = 4, THREADS = 256, PAD = 4;
};
template <> struct GemmCfg<double> {
  static constexpr int BM = 64, BN = 64, BK = 8, TM = 4, TN = 4, THREADS = 256, PAD = 2;
};

// Widest vector (elements) a loader may use for an operand tile of ROWS x BK: 16 bytes, but no more than the
// elements one thread loads per step, so every thread gets whole vectors.
template <typename T, int ROWS, int BK, int THREADS> constexpr int max_vec() {
  return (16 / static_cast<int>(sizeof(T))) < (ROWS * BK / THREADS) ? (16 / static_cast<int>(sizeof(T)))
                                                                     : (ROWS * BK / THREADS);
}

// Moves one operand tile (ROWS rows x BK reduction steps) from global memory into shared memory laid out
// [BK][ROWS + PAD]. RED_FAST: neighbouring threads take neighbouring reduction positions (V-wide vectors) of
// one row; a thread owns NROW rows. Otherwise neighbouring threads take neighbouring rows; a thread owns one
// row and NRED reduction positions. Row contexts (the per-row part of the address math) are built once.
template <class Op, typename Acc, typename Red, int ROWS, int BK, int THREADS, int PAD, int V, bool RED_FAST>
struct TileLoader {
  static constexpr int KV = BK / V;
  static constexpr int RPP = THREADS / KV;
  static constexpr int KPP = THREADS / ROWS;
  static constexpr int NROW = RED_FAST ? ROWS / RPP : 1;
  static constexpr int NRED = RED_FAST ? 1 : BK / KPP;
  static constexpr int LD = ROWS + PAD;
  static_assert(RED_FAST ? (BK % V == 0 && THREADS % KV == 0 && RPP <= ROWS && ROWS % RPP == 0)
                         : (V == 1 && THREADS % ROWS == 0 && BK % KPP == 0),
                "tile loader mapping does not divide the tile");

  typename Op::Ctx ctx[NROW];
  Acc reg[NROW][NRED][V];

  FC_DEV static int row_of(int j) {
    return RED_FAST ? static_cast<int>(threadIdx.x) / KV + j * RPP : static_cast<int>(threadIdx.x) % ROWS;
  }
  FC_DEV static int red_of(int l) {
    return RED_FAST ? (static_cast<int>(threadIdx.x) % KV) * V : static_cast<int>(threadIdx.x) / ROWS + l * KPP;
  }
  FC_DEV void init(const Op& op, int64_t row0) {
#pragma unroll
    for (int j = 0; j < NROW; ++j) ctx[j] = op.ctx(row0 + row_of(j));
  }
  FC_DEV void load(const Op& op, Red red0) {
#pragma unroll
    for (int j = 0; j < NROW; ++j)
#pragma unroll
      for (int l = 0; l < NRED; ++l) op.template load<V>(ctx[j], red0 + red_of(l), reg[j][l]);
  }
  FC_DEV void store(Acc* s) const {
#pragma unroll
    for (int j = 0; j < NROW; ++j)
#pragma unroll
      for (int l = 0; l < NRED; ++l)
#pragma unroll
        for (int e = 0; e < V; ++e) s[(red_of(l) + e) * LD + row_of(j)] = reg[j][l][e];
  }
};

// Four consecutive accumulator-typed values from 16-byte aligned shared memory.
FC_DEV void lds_quad(const float* p, float* r) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
}
FC_DEV void lds_quad(const double* p, double* r) {
  const double2 v0 = *reinterpret_cast<const double2*>(p);
  const double2 v1 = *reinterpret_cast<const double2*>(p + 2);
  r[0] = v0.x; r[1] = v0.y; r[2] = v1.x; r[3] = v1.y;
}

template <class Prob>
__global__ void __launch_bounds__(GemmCfg<typename Prob::T>::THREADS, 2) igemm_kernel(const Prob prob) {
  using T = typename Prob::T;
  using Acc = typename Prob::Acc;
  using Red = typename Prob::Red;
  using Cfg = GemmCfg<T>;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, TM = Cfg::TM, TN = Cfg::TN, THREADS = Cfg::THREADS;
  constexpr int PAD = Cfg::PAD;
  constexpr int TX = BN / TN;        // threads along n
  constexpr int MSTEP = BM / (TM / 4);  // distance between a thread's 4-row groups
  constexpr int NSTEP = BN / (TN / 4);
  static_assert(TX * (BM / TM) == THREADS && TM % 4 == 0 && TN % 4 == 0, "thread layout");
  using ALoader = TileLoader<typename Prob::AOp, Acc, Red, BM, BK, THREADS, PAD, Prob::A_V, Prob::A_RED_FAST>;
  using BLoader = TileLoader<typename Prob::BOp, Acc, Red, BN, BK, THREADS, PAD, Prob::B_V, Prob::B_RED_FAST>;

  __shared__ __align__(16) Acc As[2][BK][BM + PAD];
  __shared__ __align__(16) Acc Bs[2][BK][BN + PAD];

  const int64_t m0 = static_cast<int64_t>(blockIdx.x / prob.ntn) * BM;
  const int n0 = static_cast<int>(blockIdx.x % prob.ntn) * BN;
  const int64_t g = prob.group0 + blockIdx.y;
  const int split = static_cast<int>(blockIdx.z);
  Red red_begin, red_end;
  prob.red_range(split, red_begin, red_end);

  const typename Prob::AOp aop = prob.a_op(g, red_end);
  const typename Prob::BOp bop = prob.b_op(g, red_end);
  ALoader al;
  BLoader bl;
  al.init(aop, m0);
  bl.init(bop, n0);

  const int tx = static_cast<int>(threadIdx.x) % TX, ty = static_cast<int>(threadIdx.x) / TX;
  Acc acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = Acc(0);

  const Red nsteps = red_end > red_begin ? (red_end - red_begin + BK - 1) / BK : 0;
  if (nsteps > 0) {
    al.load(aop, red_begin);
    bl.load(bop, red_begin);
    al.store(&As[0][0][0]);
    bl.store(&Bs[0][0][0]);
    __syncthreads();
  }
  for (Red step = 0; step < nsteps; ++step) {
    const int buf = static_cast<int>(step & 1);
    const bool more = step + 1 < nsteps;
    if (more) {  // issue the next tile's global loads before computing on this one
      al.load(aop, red_begin + (step + 1) * BK);
      bl.load(bop, red_begin + (step + 1) * BK);
    }
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      Acc a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM / 4; ++i) lds_quad(&As[buf][kk][i * MSTEP + ty * 4], a + 4 * i);
#pragma unroll
      for (int j = 0; j < TN / 4; ++j) lds_quad(&Bs[buf][kk][j * NSTEP + tx * 4], b + 4 * j);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    if (more) {  // the other buffer was last read before the previous barrier
      al.store(&As[buf ^ 1][0][0]);
      bl.store(&Bs[buf ^ 1][0][0]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int64_t m = m0 + (i / 4) * MSTEP + ty * 4 + (i % 4);
    if (m >= prob.M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + (j / 4) * NSTEP + tx * 4 + (j % 4);
      if (n < prob.NN) prob.store(g, m, n, acc[i][j], split);
    }
  }
}

// Launches prob over `groups` groups and `splits` reduction chunks, in as many launches as grid.y allows.
template <class Prob>
cudaError_t launch_igemm(Prob prob, int64_t groups, int splits, cudaStream_t stream) {
  using Cfg = GemmCfg<typename Prob::T>;
  const int64_t mt = ceil_div(prob.M, Cfg::BM);
  prob.ntn = static_cast<int>(ceil_div(prob.NN, Cfg::BN));
  if (mt == 0 || prob.ntn == 0 || groups == 0 || splits == 0) return cudaSuccess;
  if (mt * prob.ntn > 0x7fffffffLL || splits > 65535) return cudaErrorInvalidConfiguration;
  for (int64_t g0 = 0; g0 < groups; g0 += 65535) {
    prob.group0 = g0;
    const dim3 grid(static_cast<unsigned>(mt * prob.ntn), static_cast<unsigned>(groups - g0 < 65535 ? groups - g0 : 65535),
                    static_cast<unsigned>(splits));
    const cudaError_t err = launch_kernel(igemm_kernel<Prob>, grid, dim3(Cfg::THREADS), stream, prob);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace fastconv
