"""Process-wide memory settings for CPU training and timing."""

import platform


def keep_freed_memory():
    """Make glibc's malloc keep freed memory in the process, as jemalloc and tcmalloc do (PyTorch's CPU tuning guide
    recommends those for this reason). By default glibc mmaps every block of 32 MiB or more (and smaller ones,
    depending on allocation history) and unmaps it on free, so each call that allocates such a tensor faults its
    pages in again: ~1.6 us per 4 KiB page on these VMs, 8-15 ms per 32 MiB, for torch and fastconv alike. That
    cost belongs to neither kernel, and it moves with the process's allocation history. M_MMAP_MAX=0 serves every
    block from the heap; M_TRIM_THRESHOLD keeps the heap's top from being returned. Not a guarantee: torch
    allocates with posix_memalign, and a freed block can be just too small for the next aligned request of the
    same size, so glibc grows the heap (fresh pages) instead; a bare loop of one 64 MiB torch.empty did so in
    about 4 processes of 10. In the benchmark's mix of sizes the faults were gone (torch's first-layer forward at
    batch 64: 12.5 ms with glibc's defaults, 1.4 ms kept). Returns a description, or None where it does not
    apply (not glibc)."""
    import ctypes
    import ctypes.util
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
        if libc.mallopt(m_trim_threshold, 2**31 - 1) != 1 or libc.mallopt(m_mmap_max, 0) != 1:
            return None
    except (OSError, AttributeError):
        return None
    return "glibc mallopt(M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB): freed memory stays in the process"
