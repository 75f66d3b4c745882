#include <cstdio>
#include <random>
#include "cuda/common.cuh"
using namespace fastconv::cuda;
int main() {
  std::mt19937_64 r(1);
  long bad = 0, n = 0;
  for (int t = 0; t < 2000; ++t) {
    int64_t d = (t < 1000) ? (t + 1) : (int64_t)(r() % ((1ull << 31) - 1)) + 1;
    if (t % 7 == 0) d = (int64_t)1 << (r() % 31);
    FastDiv32 f(d); FastDiv64 g(d);
    for (int i = 0; i < 20000; ++i) {
      int x = (int)(r() % (1ull << 31)); if (i < 50) x = (int)((1ull << 31) - 1 - i); if (i >= 50 && i < 100) x = i - 50;
      int rem; int q = f.divmod(x, rem);
      if (q != x / d || rem != x % d) ++bad;
      int64_t y = (int64_t)(r() >> 1); if (i < 50) y = INT64_MAX - i;
      int64_t r64; int64_t q64 = g.divmod(y, r64);
      if (q64 != y / d || r64 != y % d) ++bad;
      n += 2;
    }
  }
  // 64-bit divisors
  for (int t = 0; t < 2000; ++t) {
    int64_t d = (int64_t)(r() >> (1 + r() % 62)) + 1;
    FastDiv64 g(d);
    for (int i = 0; i < 2000; ++i) { int64_t y = (int64_t)(r() >> 1); int64_t rr; int64_t q = g.divmod(y, rr); if (q != y / d || rr != y % d) ++bad; ++n; }
  }
  printf("%ld checks, %ld bad\n", n, bad);
  return bad != 0;
}
