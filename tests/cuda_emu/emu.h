// CPU emulation of the CUDA built-ins the fastconv kernels use: each block runs on a pool of host threads
// (one per CUDA thread), __syncthreads is a std::barrier, __shared__ becomes a function-static array.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __align__
#define __align__(n) __attribute__((aligned(n)))

namespace emu {
inline thread_local dim3 tid, bid;
inline dim3 bdim, gdim;
inline std::barrier<>* sync_bar = nullptr;
inline std::barrier<>* warp_bar[32] = {};
// per-warp exchange buffers for the emulated warp-collective instructions
struct WarpScratch { const void* ptr[32]; uint32_t a[32][4]; uint32_t b[32][2]; float c[32][4]; };
inline WarpScratch warp_scratch[32];

struct Pool {
  int n = 0;
  std::vector<std::thread> threads;
  std::barrier<>* start = nullptr;
  std::barrier<>* done = nullptr;
  std::function<void()> body;
  bool quit = false;
  void ensure(int nthreads) {
    if (n == nthreads) return;
    stop();
    n = nthreads;
    start = new std::barrier<>(n + 1);
    done = new std::barrier<>(n + 1);
    sync_bar = new std::barrier<>(n);
    for (int w = 0; w < n / 32; ++w) warp_bar[w] = new std::barrier<>(32);
    for (int t = 0; t < n; ++t)
      threads.emplace_back([this, t] {
        for (;;) {
          start->arrive_and_wait();
          if (quit) return;
          tid = dim3(t % bdim.x, (t / bdim.x) % bdim.y, t / (bdim.x * bdim.y));
          body();
          done->arrive_and_wait();
        }
      });
  }
  void stop() {
    if (n == 0) return;
    quit = true;
    start->arrive_and_wait();
    for (auto& th : threads) th.join();
    threads.clear();
    quit = false;
    n = 0;
  }
  ~Pool() { stop(); }
};
inline Pool pool;
inline thread_local int shared_block_marker = 0;
}  // namespace emu

#define threadIdx (::emu::tid)
#define blockIdx (::emu::bid)
#define blockDim (::emu::bdim)
#define gridDim (::emu::gdim)

inline void __syncthreads() { emu::sync_bar->arrive_and_wait(); }
template <class T> inline T __ldg(const T* p) { return *p; }
inline int atomicMin(int* a, int v) {
  std::atomic_ref<int> r(*a);
  int old = r.load();
  while (v < old && !r.compare_exchange_weak(old, v)) {}
  return old;
}
inline int atomicMax(int* a, int v) {
  std::atomic_ref<int> r(*a);
  int old = r.load();
  while (v > old && !r.compare_exchange_weak(old, v)) {}
  return old;
}
using std::isnan;

namespace fastconv {
namespace cuda {
inline long long emu_blocks_run = 0;
template <typename... KArgs, typename... Args>
inline cudaError_t launch_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t st, const Args&... args);
template <typename... KArgs, typename... Args>
inline cudaError_t launch_kernel_smem(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                      const Args&... args) {
  if (smem > 65536) { std::fprintf(stderr, "emu: smem %zu too big\n", smem); std::abort(); }
  return launch_kernel(kernel, grid, block, st, args...);
}
template <typename... KArgs, typename... Args>
inline cudaError_t launch_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t, const Args&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    std::fprintf(stderr, "emu: bad grid %u %u %u\n", grid.x, grid.y, grid.z);
    std::abort();
  }
  const int nt = static_cast<int>(block.x * block.y * block.z);
  emu::bdim = block;
  emu::gdim = grid;
  emu::pool.ensure(nt);
  std::tuple<KArgs...> targs(static_cast<KArgs>(args)...);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        const dim3 b(x, y, z);
        emu::pool.body = [&] {
          emu::bid = b;
          std::apply(kernel, targs);
        };
        emu::pool.start->arrive_and_wait();
        emu::pool.done->arrive_and_wait();
        ++emu_blocks_run;
      }
  return cudaSuccess;
}
}  // namespace cuda
}  // namespace fastconv
