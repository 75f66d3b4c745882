// parallel.h on torch's thread pool.
#include "cpu/parallel.h"

#include <ATen/Parallel.h>

namespace fastconv::cpu {

int num_threads() { return at::get_num_threads(); }

void detail::parallel_for(int64_t begin, int64_t end, int64_t grain, RangeFn fn, void* context) {
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { fn(context, b, e); });
}

}  // namespace fastconv::cpu
