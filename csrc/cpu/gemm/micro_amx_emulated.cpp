// The AMX bfloat16 tile kernel (micro_amx.inc) with its tile instructions emulated in C++: on CPUs without AMX,
// FASTCONV_AMX_EMULATION=1 (isa.h) runs the AMX path through this, so tests check its layouts, padding, blocking
// and tile configuration anywhere. Slow, and not the hardware: the products follow tdpbf16ps' specification
// (float accumulation, denormal inputs read as zero, denormal results flushed), not its timing.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "cpu/bf16_bits.h"
#include "cpu/gemm/micro.h"

namespace fastconv::cpu::amx_emulation {
namespace {

// Eight 1 KiB tile registers per thread, and whether the thread has loaded a configuration (the hardware faults
// on a tile instruction without one).
struct TileFile {
  alignas(64) unsigned char tile[8][1024];
  bool configured = false;
};
thread_local TileFile tiles;
std::atomic<int64_t> products{0};

constexpr int kTileRows = 16, kRowBytes = 64;

unsigned char* tile_at(int t) {
  if (!tiles.configured) throw std::logic_error("fastconv: AMX tile instruction without a tile configuration");
  return tiles.tile[t];
}
void tile_zero(int t) { std::memset(tile_at(t), 0, sizeof tiles.tile[0]); }
void tile_load(int t, const void* ptr, int64_t stride) {
  for (int r = 0; r < kTileRows; ++r)
    std::memcpy(tile_at(t) + r * kRowBytes, static_cast<const unsigned char*>(ptr) + r * stride, kRowBytes);
}
void tile_store(int t, void* ptr, int64_t stride) {
  for (int r = 0; r < kTileRows; ++r)
    std::memcpy(static_cast<unsigned char*>(ptr) + r * stride, tile_at(t) + r * kRowBytes, kRowBytes);
}

float input(uint16_t bits) { return (bits & 0x7F80) == 0 ? 0.0f : widen_bf16(bits); }  // denormals as zero
float flushed(float v) { return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v; }

void tile_dp(int c_tile, int a_tile, int b_tile) {
  float c[kTileRows][16];
  uint16_t a[kTileRows][32], b[kTileRows][32];
  std::memcpy(c, tile_at(c_tile), sizeof c);
  std::memcpy(a, tile_at(a_tile), sizeof a);
  std::memcpy(b, tile_at(b_tile), sizeof b);
  for (int m = 0; m < kTileRows; ++m)
    for (int k = 0; k < 16; ++k)
      for (int n = 0; n < 16; ++n) {
        c[m][n] = flushed(std::fma(input(a[m][2 * k]), input(b[k][2 * n]), c[m][n]));
        c[m][n] = flushed(std::fma(input(a[m][2 * k + 1]), input(b[k][2 * n + 1]), c[m][n]));
      }
  std::memcpy(tile_at(c_tile), c, sizeof c);
  products.fetch_add(1, std::memory_order_relaxed);
}

#define TILE_ZERO(t) tile_zero(t)
#define TILE_LOAD(t, ptr, stride) tile_load(t, ptr, stride)
#define TILE_STORE(t, ptr, stride) tile_store(t, ptr, stride)
#define TILE_DP(c, a, b) tile_dp(c, a, b)
#include "cpu/gemm/micro_amx.inc"
#undef TILE_ZERO
#undef TILE_LOAD
#undef TILE_STORE
#undef TILE_DP

void configure_tiles() { tiles.configured = true; }
void release_tiles() { tiles.configured = false; }

const Bf16Pairs kTiles16x32 = tile_pairs(&configure_tiles, &release_tiles);
const Bf16Pairs kElementTiles16x32 = element_tile_pairs(&configure_tiles, &release_tiles);

}  // namespace

const Bf16Pairs* tiles_16x32() { return &kTiles16x32; }
const Bf16Pairs* element_tiles_16x32() { return &kElementTiles16x32; }
int64_t tile_products() { return products.load(); }

}  // namespace fastconv::cpu::amx_emulation
