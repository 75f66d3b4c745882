// Tensor-core building blocks (sm_80+): cp.async 16-byte copies with zero fill, ldmatrix (plain and .trans),
// mma.sync m16n8k16 (f16, bf16 -> f32) and m16n8k8 (tf32 -> f32), and the XOR-swizzled shared-memory tile
// layouts the conv_tc kernels use. Under FASTCONV_EMULATE each warp-collective instruction is emulated on host
// threads with the PTX ISA's fragment layouts (groupID = lane / 4, tig = lane % 4):
//   A 16x16 (b16):  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B 16x8  (b16):  b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)          C/D: c0,c1 (g, 2t..)  c2,c3 (g+8, 2t..)
//   A 16x8 (tf32):  a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4);  B 8x8 (tf32): b0 (k t, n g)  b1 (k t+4, n g)
//   ldmatrix.x4: lanes 8j..8j+7 give the row addresses of matrix j; register j of lane l holds row l/4,
//   b16 columns 2(l%4), 2(l%4)+1 of matrix j (.trans: rows 2(l%4), 2(l%4)+1 of column l/4).
#pragma once
#include <cstring>
#include <type_traits>

#include "common.cuh"

namespace fastconv {
namespace cuda {
namespace tc {

// K-major tile: one 64-byte row per GEMM row (4 chunks of 16 bytes along the reduction). Chunk c of row r is
// stored at chunk c ^ ((r / 2) % 4): the 8 rows an ldmatrix phase reads hit 8 different 16-byte bank groups.
FC_HD int kmajor_off(int row, int chunk) { return row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4); }
// Row-major tile: one ROW_BYTES row per reduction step, GEMM rows contiguous. Chunk c of k-row k is stored at
// chunk c ^ (k % 8): 8 consecutive k-rows at one chunk (an ldmatrix.trans phase) hit 8 bank groups.
template <int ROW_BYTES> FC_HD int rowmajor_off(int krow, int chunk) {
  return krow * ROW_BYTES + ((chunk ^ (krow & 7)) << 4);
}

#if !defined(FASTCONV_EMULATE)

// Device code compiled for an arch below sm_80 has none of these instructions: it traps (the launch fails with
// an error) rather than let a kernel return zeros. The host refuses such builds first (tc_code_for_device).
#define FC_NO_TENSOR_CORES() __trap()

FC_DEV uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared, bypassing L1; zero-filled when !pred (the source is then not read).
FC_DEV void cp_async16(void* smem, const void* gmem, bool pred) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(pred ? 16 : 0));
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
#endif
}
FC_DEV void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
#endif
}
template <int N> FC_DEV void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
#endif
}

FC_DEV void ldsm_x4(uint32_t (&r)[4], const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
#endif
}
FC_DEV void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
#endif
}

// D += A * B on one warp; Elem selects the operand type (__half, __nv_bfloat16, or float = tf32).
template <typename Elem> FC_DEV void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <> FC_DEV void mma<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
#endif
}
template <> FC_DEV void mma<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
#endif
}
template <> FC_DEV void mma<float>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
               "{%0, %1, %2, %3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
#endif
}

// fp32 bits -> tf32 (round to nearest, ties away from zero), as cuBLAS/cuDNN TF32 paths do.
FC_DEV uint32_t to_tf32(uint32_t x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(x)));
  return r;
#elif defined(__CUDA_ARCH__)
  FC_NO_TENSOR_CORES();
  return x;
#else
  return x;
#endif
}

#else  // FASTCONV_EMULATE: the same operations on host threads, one std::barrier per warp

FC_DEV int emu_lane() { return static_cast<int>(threadIdx.x) % 32; }
FC_DEV ::emu::WarpScratch& emu_warp() { return ::emu::warp_scratch[threadIdx.x / 32]; }
FC_DEV void emu_warp_sync() { ::emu::warp_bar[threadIdx.x / 32]->arrive_and_wait(); }

inline void cp_async16(void* smem, const void* gmem, bool pred) {
  if (pred) std::memcpy(smem, gmem, 16);
  else std::memset(smem, 0, 16);
}
inline void cp_async_commit() {}
template <int N> inline void cp_async_wait() {}

inline uint16_t emu_b16(const void* row, int col) {
  uint16_t v;
  std::memcpy(&v, static_cast<const char*>(row) + 2 * col, 2);
  return v;
}
inline void emu_ldsm(uint32_t (&r)[4], const void* p, bool trans) {
  auto& ws = emu_warp();
  const int l = emu_lane();
  ws.ptr[l] = p;
  emu_warp_sync();
  for (int j = 0; j < 4; ++j) {
    uint16_t lo, hi;
    if (!trans) {
      lo = emu_b16(ws.ptr[8 * j + l / 4], 2 * (l % 4));
      hi = emu_b16(ws.ptr[8 * j + l / 4], 2 * (l % 4) + 1);
    } else {
      lo = emu_b16(ws.ptr[8 * j + 2 * (l % 4)], l / 4);
      hi = emu_b16(ws.ptr[8 * j + 2 * (l % 4) + 1], l / 4);
    }
    r[j] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  emu_warp_sync();
}
inline void ldsm_x4(uint32_t (&r)[4], const void* p) { emu_ldsm(r, p, false); }
inline void ldsm_x4_trans(uint32_t (&r)[4], const void* p) { emu_ldsm(r, p, true); }

inline float emu_b16_to_float(uint16_t v, bool bf16) {
  if (bf16) {
    const uint32_t x = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  }
  __half h;
  std::memcpy(&h, &v, 2);
  return __half2float(h);
}
template <typename Elem>
inline void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  constexpr bool kTf32 = std::is_same<Elem, float>::value, kBf16 = std::is_same<Elem, __nv_bfloat16>::value;
  auto& ws = emu_warp();
  const int l = emu_lane();
  for (int i = 0; i < 4; ++i) { ws.a[l][i] = a[i]; ws.c[l][i] = d[i]; }
  ws.b[l][0] = b[0]; ws.b[l][1] = b[1];
  emu_warp_sync();
  auto A = [&](int row, int k) -> float {  // element (row, k) of the warp's A operand
    if (kTf32) {
      const uint32_t x = ws.a[(row % 8) * 4 + k % 4][(row >= 8) + 2 * (k >= 4)];
      float f;
      std::memcpy(&f, &x, 4);
      return f;
    }
    const uint32_t x = ws.a[(row % 8) * 4 + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)];
    return emu_b16_to_float(static_cast<uint16_t>(k % 2 ? x >> 16 : x & 0xffff), kBf16);
  };
  auto B = [&](int k, int n) -> float {
    if (kTf32) {
      const uint32_t x = ws.b[n * 4 + k % 4][k >= 4];
      float f;
      std::memcpy(&f, &x, 4);
      return f;
    }
    const uint32_t x = ws.b[n * 4 + (k % 8) / 2][k >= 8];
    return emu_b16_to_float(static_cast<uint16_t>(k % 2 ? x >> 16 : x & 0xffff), kBf16);
  };
  const int kdim = kTf32 ? 8 : 16, g = l / 4, t = l % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    double acc = ws.c[l][i];
    for (int k = 0; k < kdim; ++k) acc += static_cast<double>(A(row, k)) * B(k, col);
    d[i] = static_cast<float>(acc);
  }
  emu_warp_sync();
}
inline uint32_t to_tf32(uint32_t x) {  // round to nearest, ties away: add half of the dropped 13 bits
  if ((x & 0x7f800000u) == 0x7f800000u) return x;
  return (x + 0x1000u) & 0xffffe000u;
}

#endif  // FASTCONV_EMULATE

}  // namespace tc
}  // namespace cuda
}  // namespace fastconv
