// The threads the CPU kernels run on: torch's (at::parallel_for), behind a small shim so that kernel files need
// no torch headers; only parallel.cpp and the binding (ops_cpu.cpp) include them.
#pragma once
#include <cstdint>
#include <memory>
#include <type_traits>

namespace fastconv::cpu {

// The number of threads parallel_for uses (torch.get_num_threads()).
int num_threads();

namespace detail {
using RangeFn = void (*)(void* context, int64_t begin, int64_t end);
void parallel_for(int64_t begin, int64_t end, int64_t grain, RangeFn fn, void* context);
}  // namespace detail

// f(b, e) over chunks of [begin, end) of at least `grain` items, one chunk per thread, as at::parallel_for:
// nested inside another parallel_for it runs inline on the calling thread; an exception thrown by f reaches
// the caller.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  using Fn = const std::remove_reference_t<F>;  // called from several threads at once: const, as at::parallel_for
  detail::parallel_for(
      begin, end, grain, [](void* context, int64_t b, int64_t e) { (*static_cast<Fn*>(context))(b, e); },
      const_cast<void*>(static_cast<const void*>(std::addressof(f))));
}

}  // namespace fastconv::cpu
