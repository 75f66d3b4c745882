// The AMX bfloat16 tile kernel (micro_amx.inc) on the tile instructions. Compiled alone for AMX; bf16_bits.h comes
// before the target pragma so its inline functions stay baseline code (see micro_avx512.cpp for why).
//
// Runs only under FASTCONV_ISA=amx_bf16 on a CPU with AMX (isa.h: not chosen unasked until it has run on one);
// the process asks Linux for the tile state before (isa.cpp).
#include "cpu/bf16_bits.h"

#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512dq,avx512vl,avx512bw,avx512bf16,avx2,fma")
#include <immintrin.h>

#include "cpu/gemm/micro.h"

namespace fastconv::cpu::amx {
namespace {

#define TILE_ZERO(t) _tile_zero(t)
#define TILE_LOAD(t, ptr, stride) _tile_loadd(t, ptr, stride)
#define TILE_STORE(t, ptr, stride) _tile_stored(t, ptr, stride)
#define TILE_DP(c, a, b) _tile_dpbf16ps(c, a, b)
#include "cpu/gemm/micro_amx.inc"
#undef TILE_ZERO
#undef TILE_LOAD
#undef TILE_STORE
#undef TILE_DP

// Palette 1, tiles 0-4 all 16 rows of 64 bytes (the kernel's C, A and B tiles).
struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16};
};

// Per GEMM block on the thread that runs it: tile state is per thread, and other code (oneDNN's AMX kernels) may
// configure it differently between our calls. Released after, so an idle thread's context switches stay small.
void configure_tiles() {
  static const TileConfig config;
  _tile_loadconfig(&config);
}
void release_tiles() { _tile_release(); }

const Bf16Pairs kTiles16x32 = tile_pairs(&configure_tiles, &release_tiles);
const Bf16Pairs kElementTiles16x32 = element_tile_pairs(&configure_tiles, &release_tiles);

}  // namespace

const Bf16Pairs* tiles_16x32() { return &kTiles16x32; }
const Bf16Pairs* element_tiles_16x32() { return &kElementTiles16x32; }

}  // namespace fastconv::cpu::amx
