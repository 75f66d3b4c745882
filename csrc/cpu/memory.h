// The CPU kernels' memory: scratch aligned to cache lines (AlignedBuffer), and large fresh arrays written at once
// (outputs, prepacked operands, partial sums), advised for transparent huge pages.
//
// By default glibc serves every allocation of 32 MiB or more (its mmap threshold never rises above that) with a
// fresh mmap, and the first touch of it faults in one 4 KiB page at a time: on the 2-core VMs we measure on, ~1.6 us
// a page, 13-16 ms for 32 MiB on one thread, longer than the pooling backward that fills such a buffer. Transparent
// huge pages make it ~1.5 ms. The kernel's THP mode is "madvise" on these machines, so nothing happens unless asked;
// torch asks for every allocation under THP_MEM_ALLOC_ENABLE=1. We ask only for buffers of 32 MiB or more that we
// are about to fill, and only for whole 2 MiB pages inside them, so no memory is added. (Where such a buffer is
// reused heap memory instead - glibc with M_MMAP_MAX=0, as compare.py --malloc keep sets, or jemalloc / tcmalloc -
// the range stays marked after the buffer is freed, and memory the allocator gives back and touches again there
// comes back in 2 MiB pages.)
//
// Not below 32 MiB: glibc mostly recycles such blocks from its heap, already faulted in, and a VM's host may take
// back memory the guest leaves free (virtio-balloon free page reporting), so a huge page can come from memory
// the host must fault in again, ~3 ms for 2 MiB. Advised, 16 MiB outputs make the first layer's forward at
// batch 64 slower, not faster (8-26 ms against 4.5-6 ms in the first hundreds of calls of a process).
// FASTCONV_HUGE_PAGES=0 turns the advice off.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fastconv::cpu {

constexpr size_t kHugePageAdviceMin = size_t{32} << 20;

inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const bool enabled = [] {
    const char* setting = std::getenv("FASTCONV_HUGE_PAGES");
    return setting == nullptr || std::strcmp(setting, "0") != 0;
  }();
  if (!enabled || bytes < kHugePageAdviceMin) return;
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t last = (begin + bytes) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // advice: may fail
#else
  (void)data, (void)bytes;
#endif
}

// An uninitialised array of n T, advised as above.
template <typename T>
std::unique_ptr<T[]> fresh_array(int64_t n) {
  std::unique_ptr<T[]> a(new T[n]);
  advise_huge_pages(a.get(), static_cast<size_t>(n) * sizeof(T));
  return a;
}

// Scratch of n T from a 64-byte boundary, grown on demand (contents not kept): a vector of a packed panel then
// never straddles two cache lines, as glibc's malloc (16-byte aligned) made every other AVX-512 load of one do.
template <typename T>
class AlignedBuffer {
 public:
  T* data() const { return data_; }
  void reserve(size_t n) {
    if (n <= size_) return;
    storage_.reset(new T[n + 64 / sizeof(T)]);
    data_ = reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(storage_.get()) + 63) & ~uintptr_t{63});
    size_ = n;
  }

 private:
  std::unique_ptr<T[]> storage_;
  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace fastconv::cpu
