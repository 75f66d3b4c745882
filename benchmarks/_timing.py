"""Timing, peak-rate, memory and machine-info helpers for benchmarks/compare.py."""
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch

import fastconv
from fastconv.train.memory import keep_freed_memory  # noqa: F401  (compare.py uses it from here)

# ---------------------------------------------------------------------------------------------------- timing


def _summary(samples):
    s = sorted(samples)
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "runs": len(s),
            "q1": s[len(s) // 4], "q3": s[(3 * len(s)) // 4]}


def _once(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved_cpu(fa, fb, *, warmup=2, warmup_time=0.0, min_runs=5, min_time=0.2, max_runs=1000, max_time=12.0):
    """Time fa (torch) and fb (fastconv) alternately, A B B A A B ..., after warming both up (>= `warmup` calls
    of each and >= warmup_time seconds in all); enough runs that each side spends >= min_time (and >= min_runs
    runs; stops early after max_time seconds in all). Returns (summary_a, summary_b) in seconds.

    Why warm up by time: on our VMs the host takes back memory the guest leaves free (virtio-balloon free page
    reporting), so the first large buffers a process touches fault in slowly, 2 MiB huge pages most of all
    (~3 ms each), until the process recycles its own; a few calls were not enough for that to settle."""
    calls, start = 0, time.perf_counter()
    while calls < warmup or time.perf_counter() - start < warmup_time:
        fa()
        fb()
        calls += 1
    ta, tb = _once(fa), _once(fb)
    runs = max(min_runs, math.ceil(min_time / max(min(ta, tb), 1e-7)))
    runs = min(runs, max(max_runs, min_runs))
    sa, sb = [ta], [tb]
    start = time.perf_counter()
    for i in range(runs):
        if i % 2:
            sb.append(_once(fb))
            sa.append(_once(fa))
        else:
            sa.append(_once(fa))
            sb.append(_once(fb))
        if i + 1 >= min_runs and time.perf_counter() - start > max_time:
            break
    return _summary(sa[1:]), _summary(sb[1:])


def interleaved_cuda(fa, fb, *, warmup=5, min_runs=10, min_time=0.05, max_runs=200, sample_time=1e-3):
    """CUDA-event timing: each sample times `inner` back-to-back calls (>= sample_time of GPU work), A and B
    alternate, medians of per-call times. Returns (summary_a, summary_b) in seconds."""
    def sample(fn, inner):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / inner

    for _ in range(warmup):
        fa()
        fb()
    torch.cuda.synchronize()
    ta, tb = sample(fa, 1), sample(fb, 1)
    fastest = max(min(ta, tb), 1e-7)
    inner = max(1, min(1000, math.ceil(sample_time / fastest)))
    runs = min(max(min_runs, math.ceil(min_time / (inner * fastest))), max(max_runs, min_runs))
    sa, sb = [], []
    for i in range(runs):
        if i % 2:
            sb.append(sample(fb, inner))
            sa.append(sample(fa, inner))
        else:
            sa.append(sample(fa, inner))
            sb.append(sample(fb, inner))
    a, b = _summary(sa), _summary(sb)
    a["inner"] = b["inner"] = inner
    return a, b


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def rel_error(ours, ref):
    """max |ours - ref| / max |ref| (0 when both are zero)."""
    ours, ref = ours.double(), ref.double()
    scale = ref.abs().max().item()
    err = (ours - ref).abs().max().item()
    return err / scale if scale > 0 else err

# ---------------------------------------------------------------------------------------------------- peaks


_PEAK_CHILD = r"""
import json, sys, time, torch
threads, n, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)

def rates(fn, flops):
    for _ in range(3):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter(); fn(); out.append(flops / (time.perf_counter() - t) / 1e9)
    return {"best": max(out), "median": sorted(out)[len(out) // 2]}

a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
mm = rates(lambda: torch.mm(a, b, out=c), 2 * n ** 3)
# GEMMs through oneDNN (torch's conv library), channels_last: a 1x1 conv is a GEMM of M=N*H*W, N=K, K=C
cl = torch.channels_last
x1 = torch.randn(32, 1024, 8, 8).contiguous(memory_format=cl)
w1 = torch.randn(1024, 1024, 1, 1).contiguous(memory_format=cl)
x3 = torch.randn(64, 256, 8, 8).contiguous(memory_format=cl)
w3 = torch.randn(256, 256, 3, 3).contiguous(memory_format=cl)
with torch.no_grad():
    dnn1 = rates(lambda: torch.conv2d(x1, w1), 2 * 32 * 64 * 1024 * 1024)
    dnn3 = rates(lambda: torch.conv2d(x3, w3, None, 1, 1), 2 * 64 * 64 * 256 * 256 * 9)
out = {"aten_capability": torch.backends.cpu.get_cpu_capability(), "mm": mm, "onednn_1x1": dnn1, "onednn_3x3": dnn3}
if len(sys.argv) > 4:  # the same in bfloat16 (what autocast runs)
    a, b, c = a.bfloat16(), b.bfloat16(), c.bfloat16()
    x1, w1, x3, w3 = x1.bfloat16(), w1.bfloat16(), x3.bfloat16(), w3.bfloat16()
    out["bf16_mm"] = rates(lambda: torch.mm(a, b, out=c), 2 * n ** 3)
    with torch.no_grad():
        out["bf16_onednn_1x1"] = rates(lambda: torch.conv2d(x1, w1), 2 * 32 * 64 * 1024 * 1024)
        out["bf16_onednn_3x3"] = rates(lambda: torch.conv2d(x3, w3, None, 1, 1), 2 * 64 * 64 * 256 * 256 * 9)
print(json.dumps(out))
"""

# ATEN_CPU_CAPABILITY only steers ATen's own vectorised kernels; torch.mm goes to MKL (or oneDNN), which have
# their own ISA caps. All three are set so the child's sgemm really runs at that ISA.
_ISA_ENV = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "DNNL_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "DNNL_MAX_CPU_ISA": "AVX512_CORE"},
    "avx512_bf16": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
                    "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "DNNL_MAX_CPU_ISA": "AVX512_CORE_BF16"},
    # (listed by fastconv only on CPUs with AMX; fastconv runs it only under FASTCONV_ISA=amx_bf16)
    "amx_bf16": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512",
                 "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "DNNL_MAX_CPU_ISA": "AVX512_CORE_AMX"},
}
# ISAs whose bfloat16 GEMM peak is measured too (the float32 one is avx512's)
_BF16_ISAS = ("avx512_bf16", "amx_bf16")


def cpu_isas():
    """ISAs this CPU supports, from fastconv.cpu_info()'s description ("model [avx512,avx2]")."""
    m = re.search(r"\[([^\]]*)\]\s*$", fastconv.cpu_info()[1])
    return [s for s in (m.group(1).split(",") if m else []) if s in _ISA_ENV]


def measure_cpu_peaks(threads, quick=False, log=print, rounds=None):
    """Measured GEMM peak per ISA, in a fresh process whose ATen, MKL and oneDNN are capped at that ISA (their
    env is read at process start): the best GFLOP/s of torch.mm 2048x2048 fp32 (MKL sgemm) and of two GEMM-like
    oneDNN convolutions (channels_last 1x1 2048x1024x1024 and 3x3 256->256 @8x8, N=64); the peak is the
    largest (MKL's sgemm takes its AVX2 path on AMD CPUs, at half of what oneDNN reaches with AVX-512, so alone it
    is no peak there). Rounds alternate between ISAs, the best of all runs is kept (on a shared machine the best
    run is the least disturbed one)."""
    isas = cpu_isas()
    n, runs = 2048, (6 if quick else 10)
    rounds = rounds or (1 if quick else 3)
    kinds = ("sgemm", "onednn_1x1", "onednn_3x3")
    bf16_kinds = ("bf16_mm", "bf16_onednn_1x1", "bf16_onednn_3x3")
    out = {isa: {"gflops": 0.0, "median_gflops": 0.0, **{f"{k}_gflops": 0.0 for k in kinds}, "env": _ISA_ENV[isa]}
           for isa in isas}
    for _ in range(rounds):
        for isa in isas:
            env = dict(os.environ, **_ISA_ENV[isa])
            try:
                bf16 = ["bf16"] if isa in _BF16_ISAS else []
                res = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(threads), str(n), str(runs), *bf16],
                                     env=env, capture_output=True, text=True, timeout=300, check=True)
                data = json.loads(res.stdout.strip().splitlines()[-1])
            except (subprocess.SubprocessError, ValueError, IndexError) as exc:
                log(f"  peak measurement at {isa} failed: {exc}")
                continue
            o = out[isa]
            o["aten_capability"] = data["aten_capability"]
            for kind, key in zip(kinds, ("mm", "onednn_1x1", "onednn_3x3")):
                o[f"{kind}_gflops"] = max(o[f"{kind}_gflops"], data[key]["best"])
                o["median_gflops"] = max(o["median_gflops"], data[key]["median"])
            o["gflops"] = max(o[f"{k}_gflops"] for k in kinds)
            if "bf16_mm" in data:
                for kind in bf16_kinds:
                    o[f"{kind}_gflops"] = max(o.get(f"{kind}_gflops", 0.0), data[kind]["best"])
                o["bf16_gflops"] = max(o[f"{k}_gflops"] for k in bf16_kinds)
    theoretical = theoretical_cpu_peaks(threads)
    for isa in out:
        out[isa]["theoretical_gflops"] = theoretical.get(isa)
    return {"method": f"measured: best of torch.mm {n}x{n} fp32 (MKL sgemm) and oneDNN GEMM-like convs (channels_last "
                      f"1x1 2048x1024x1024, 3x3 256->256 @8 N64), in a subprocess capped at the ISA (env "
                      f"{', '.join(sorted(_ISA_ENV['avx2']))}), {threads} threads, best of {rounds}x{runs} runs",
            "theoretical_note": theoretical.get("note"), "isas": out}


def merge_cpu_peaks(a, b):
    """The better of two measure_cpu_peaks results, per ISA and per kind."""
    out = {**a, "isas": {}}
    for isa in set(a["isas"]) | set(b["isas"]):
        pa, pb = a["isas"].get(isa, {}), b["isas"].get(isa, {})
        merged = {**pa, **pb}
        for key, value in pa.items():
            if isinstance(value, float) and isinstance(pb.get(key), float):
                merged[key] = max(value, pb[key])
        out["isas"][isa] = merged
    out["method"] = a["method"] + "; measured at the start and again at the end of the run, best kept"
    return out


def theoretical_cpu_peaks(threads):
    """vector lanes * 2 FMA units * 2 flops * clock * cores -- only with a trustworthy clock (cpufreq's maximum);
    /proc/cpuinfo's 'cpu MHz' is the (virtualised) TSC rate, not the core clock, so it is not used."""
    path = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
    try:
        ghz = int(open(path).read()) / 1e6
    except (OSError, ValueError):
        return {"note": "no theoretical FMA peak: the core clock is not readable (no cpufreq; /proc/cpuinfo MHz is "
                        "virtualised), so % of peak is relative to the measured GEMM rate"}
    return {"avx2": 8 * 2 * 2 * ghz * threads, "avx512": 16 * 2 * 2 * ghz * threads,
            "note": f"theoretical = lanes*2 FMA units*2*{ghz:.2f} GHz (cpufreq max)*{threads} threads; assumes 2 "
                    f"full-width FMA pipes, which not every core has (Zen 4 splits 512-bit ops)"}

# ---------------------------------------------------------------------------------------------------- memory


def _proc_status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0: echo 5 > /proc/self/clear_refs). True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_kb():
    return _proc_status_kb("VmRSS")


def peak_rss_kb():
    peak = _proc_status_kb("VmHWM")
    if peak is None:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak

# ---------------------------------------------------------------------------------------------------- info


def machine_info(device):
    isa, description = fastconv.cpu_info()
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device,
        "cpu": description,
        "cpu_model": description.rsplit(" [", 1)[0],
        "isa_in_use": isa,
        "isas_available": cpu_isas(),
        "fastconv_isa_env": os.environ.get("FASTCONV_ISA"),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "fastconv": getattr(fastconv, "__version__", "?"),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
        "loadavg": " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        fam = re.search(r"cpu family\s*:\s*(\d+)", text)
        mod = re.search(r"^model\s*:\s*(\d+)", text, re.M)
        info["cpu_family_model"] = f"family {fam.group(1)} model {mod.group(1)}" if fam and mod else None
    except OSError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_sms=p.multi_processor_count, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    capability=f"{p.major}.{p.minor}")
    return info


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"
