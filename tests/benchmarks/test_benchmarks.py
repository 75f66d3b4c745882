"""benchmarks/ helpers that change how timings are taken (the benchmark itself is run by hand, not by CI)."""
import os
import platform
import subprocess
import sys
import time

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")

# Minor page faults of allocating (malloc), filling and freeing a 64 MiB block, after two warm-up rounds: glibc
# maps such a block per call and unmaps it on free, so every round faults its 16384 pages in again unless
# memory is kept. (Through malloc itself: torch allocates with posix_memalign, which can leave a freed block just
# too small for the next aligned request, so in a process doing nothing else a bare loop of torch.empty may go
# on growing the heap; see _timing.keep_freed_memory.)
FAULTS_SCRIPT = r"""
import ctypes, resource, sys
sys.path.insert(0, sys.argv[1])
from _timing import keep_freed_memory
effect = keep_freed_memory() if sys.argv[2] == "keep" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def round_():
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    libc.free(block)
round_()
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    round_()
print(effect, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, BENCH, mode], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.split()
    return out[0], int(out[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_keep_freed_memory_stops_refaulting_large_blocks():
    effect, kept = _faults("keep")
    _, system = _faults("system")
    assert effect.startswith("glibc"), effect
    if system < 1000:  # huge pages (THP "always") or a preloaded allocator that keeps memory: nothing to stop
        pytest.skip(f"the system malloc re-faulted only {system} pages in 3 rounds here")
    assert kept * 10 < system, (kept, system)


def test_interleaved_cpu_warms_up_for_warmup_time():
    sys.path.insert(0, BENCH)
    try:
        from _timing import interleaved_cpu
    finally:
        sys.path.remove(BENCH)
    calls = {"a": 0, "b": 0}

    def call(side):
        def run():
            calls[side] += 1
            time.sleep(0.002)
        return run

    interleaved_cpu(call("a"), call("b"), warmup=1, warmup_time=0.1, min_runs=2, min_time=0.0)
    # warm-up: pairs of >= 4 ms for >= 0.1 s, so more than the 1 call `warmup` asks for (without warmup_time
    # there would be 1 + 1 + 2 calls a side) and at most 26; then 1 + 2 timed
    assert 1 + 1 + 2 < calls["a"] == calls["b"] <= 26 + 3, calls


def test_summary_has_best_vs_best_training_step():
    """compare.py's summary pits fastconv's faster memory format against torch's faster one, per model and
    precision: here torch is fastest in channels_last (100 ms), fastconv in NCHW (80 ms)."""
    sys.path.insert(0, BENCH)
    try:
        from _report import summarize
    finally:
        sys.path.remove(BENCH)

    def step(fmt, torch_ms, fastconv_ms):
        return {"model": "net", "batch": 8, "format": fmt, "precision": "fp32", "torch_ms": torch_ms,
                "fastconv_ms": fastconv_ms, "ratio": torch_ms / fastconv_ms, "torch_images_per_s": 8e3 / torch_ms,
                "fastconv_images_per_s": 8e3 / fastconv_ms}

    summary, lines = summarize({"conv": [], "pool": [], "train": [step("nchw", 120.0, 80.0),
                                                                   step("channels_last", 100.0, 90.0)]})
    best = summary["best_vs_best"]["net N8/fp32"]
    assert best == {"ratio": 100.0 / 80.0, "torch_format": "channels_last", "fastconv_format": "nchw"}
    assert any("BEST vs BEST net N8 fp32" in line and "ratio 1.25" in line for line in lines)
