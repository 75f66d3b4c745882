#!/usr/bin/env python
"""fastconv vs torch, layer by layer and end to end.

    python benchmarks/compare.py [--device cpu|cuda] [--quick] [--memory-format nchw|channels_last|both]
                                 [--dtype fp32|bf16] [--json PATH] [--plot PATH.png] [--save] [--threads N]
                                 [--malloc keep|system]

CPU: every distinct conv layer of ResNet-18/CIFAR (batch 64 and 128; the 1x1 shortcuts included), of LeNet-5
(batch 64) and of the fast CIFAR recipe's net (batch 256): forward, backward-input, backward-weight and fwd+bwd,
fastconv's raw ops against torch's own kernels (torch.conv2d, aten.convolution_backward with an output mask), the
same memory format for both; max_pool2d forward and backward in GB/s; an SGD training step of each net on fastconv
layers vs torch.nn layers (same weights, same data), with the peak memory of each, and with --memory-format both a
BEST vs BEST line: fastconv's faster format against torch's faster one. --dtype bf16 runs all of it in bfloat16
as torch.autocast("cpu", torch.bfloat16) would (training steps under autocast). Torch and fastconv calls alternate
within one process, medians are reported. ratio = torch time / fastconv time (> 1: fastconv is faster). % of peak
is relative to the measured GEMM peak (bfloat16 GEMM peak with --dtype bf16) of the ISA fastconv runs on (see
_timing.measure_cpu_peaks). --malloc keep times the kernels without
(mostly: see _timing.keep_freed_memory) the page faults of glibc's re-mapped large blocks. Progress goes to
stderr as the run goes; the report (header, tables, summary) to stdout at the end.

CUDA (--device cuda): see _cuda.py (cuDNN in fp32, TF32, fp16, bf16; CUDA-event timing; AMP training step).

--save writes benchmarks/results/{cpu-<cpu>-f<family>m<model>-<isa>[-bf16]|cuda-<gpu>}.json/.png; otherwise only
what --json/--plot name.
"""
import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
QUICK_LAYERS = {"resnet18": ("conv1", "layer1.0.conv1", "layer2.0.downsample.0"), "lenet5": ("conv2",),
                "fast_cifar": ("block1.conv1", "block2.conv1")}
# (model, conv-layer batches, training-step batch): the fast CIFAR recipe's net at batch 256, a quarter of the
# recipe's 1,024, so one step stays near a second on 2 cores
CPU_MODELS = (("resnet18", (64, 128), 64), ("lenet5", (64,), 64), ("fast_cifar", (256,), 256))
CPU_TOLERANCE = {"fp32": 1e-3, "bf16": 2e-2}  # max |fastconv - torch| / max |torch|
# max_pool2d: outputs and indices exact; bf16 gradients of overlapping windows are summed in float and rounded
# once by fastconv, in bfloat16 by torch: one bfloat16 rounding apart
POOL_TOLERANCE = {"fp32": 1e-6, "bf16": 8e-3}
# after backprop through up to 17 BatchNorms, rounding differences grow: ~2e-3 on ResNet-18's first conv is normal
TRAIN_TOLERANCE = {"fp32": {"loss": 1e-4, "conv1_grad": 5e-2}, "bf16": {"loss": 3e-2, "conv1_grad": 2e-1}}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--json", metavar="PATH", help="write all raw numbers and machine info as JSON")
    ap.add_argument("--plot", metavar="PATH.png", help="write a bar chart of the ratios")
    ap.add_argument("--save", action="store_true", help="write JSON and PNG under benchmarks/results/")
    ap.add_argument("--quick", action="store_true", help="few layers, batch 64 (CPU) / 128 (CUDA), 3 runs")
    ap.add_argument("--memory-format", choices=("nchw", "channels_last", "both"), default="nchw")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                    help="CPU: bf16 times what torch.autocast('cpu', torch.bfloat16) runs: convs and pools on\n"
                         "bfloat16 tensors on both sides, training steps under autocast; %%peak against the\n"
                         "measured bfloat16 GEMM peak")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--malloc", choices=("system", "keep"), default="system",
                    help="CPU: 'system' (default) leaves glibc's malloc as users get it: tensors of 32 MiB+ are\n"
                         "mapped and unmapped per call and faulted in again, by both sides, not equally; 'keep'\n"
                         "keeps freed memory in the process, as jemalloc/tcmalloc do, so the timings are (mostly)\n"
                         "the kernels' alone (--save then names the files ...-malloc-keep). Peak memory is always\n"
                         "measured with 'system'")
    ap.add_argument("--amp-dtype", choices=("fp16", "bf16"), default="fp16", help="CUDA training step precision")
    ap.add_argument("--no-cudnn-benchmark", action="store_true", help="CUDA: leave torch.backends.cudnn.benchmark off")
    ap.add_argument("--keep-going", action="store_true",
                    help="on a wrong fastconv result, report it and skip timing that case instead of aborting")
    ap.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _loadavg():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return None


def log(*a):
    """Progress, as the run goes: stderr. The report (header, tables, summary) goes to stdout at the end."""
    print(*a, file=sys.stderr, flush=True)


def say(*a):
    print(*a, flush=True)


def cpu_peak_lines(info, peaks, dt="fp32"):
    lines = []
    for isa, p in peaks["isas"].items():
        lines.append(f"peak {isa:<6}: {p['gflops']:7.1f} GFLOP/s measured = max(torch.mm 2048^2 fp32 sgemm "
                     f"{p['sgemm_gflops']:.1f}, oneDNN 1x1-conv GEMM {p['onednn_1x1_gflops']:.1f}, oneDNN 3x3 conv "
                     f"{p['onednn_3x3_gflops']:.1f}), ATen/MKL/oneDNN capped at {isa}")
        if p.get("bf16_gflops"):
            lines.append(f"peak {isa:<6} bfloat16: {p['bf16_gflops']:7.1f} GFLOP/s measured = max(torch.mm 2048^2 "
                         f"bf16 {p['bf16_mm_gflops']:.1f}, oneDNN bf16 1x1 {p['bf16_onednn_1x1_gflops']:.1f}, 3x3 "
                         f"{p['bf16_onednn_3x3_gflops']:.1f})")
    if peaks.get("theoretical_note"):
        lines.append(peaks["theoretical_note"])
    key, what = ("gflops", "GEMM") if dt == "fp32" else ("bf16_gflops", "bfloat16 GEMM")
    peak = peaks["isas"].get(info["isa_in_use"], {}).get(key)
    lines.append(f"'%peak' = fastconv GFLOP/s / measured {info['isa_in_use']} {what} peak ({peak:.1f} GFLOP/s)"
                 if peak else f"'%peak' unavailable (no measured {what} peak for the ISA in use)")
    return lines


def run_cpu(args, results):
    import torch

    import _models
    from _cases import (PASSES, TrainStep, Verifier, check_train, conv_case, conv_record, formats_of,
                        measure_train_memory_cpu, pool_case, pool_record, train_inputs, train_models)
    from _report import conv_row, pool_row, train_row
    from _timing import interleaved_cpu, machine_info, measure_cpu_peaks, merge_cpu_peaks

    quick = args.quick
    tk = (dict(warmup=1, warmup_time=0.05, min_runs=3, min_time=0.05, max_time=3.0) if quick
          else dict(warmup=2, warmup_time=0.3, min_runs=7, min_time=0.25, max_time=12.0))
    info = machine_info("cpu")
    info["malloc"] = args.malloc_effect or "system default (glibc maps and unmaps large blocks per call)"
    threads = info["threads"]
    header = [
        f"fastconv benchmark, CPU  ({info['date']})",
        f"CPU: {info['cpu_model']} ({info.get('cpu_family_model')}), {info['logical_cpus']} logical CPUs; ISAs "
        f"available: {', '.join(info['isas_available']) or 'none'}; fastconv ISA in use: {info['isa_in_use']}"
        + (f" (FASTCONV_ISA={info['fastconv_isa_env']})" if info["fastconv_isa_env"] else ""),
        f"torch {info['torch']} (ATen CPU capability {info['aten_cpu_capability']}), fastconv {info['fastconv']}, "
        f"threads {threads}",
        f"load average at start: {info['loadavg']} (a shared machine: torch and fastconv calls alternate, so the "
        f"ratios stay fair while absolute rates suffer)",
        f"malloc: {info['malloc']}",
        f"mode: {'quick' if quick else 'full'}; timing: interleaved torch/fastconv, warm-up >= {tk['warmup']} calls "
        f"each and >= {tk['warmup_time']} s, then >= {tk['min_runs']} runs and >= {tk['min_time']} s per side, "
        f"medians (time.perf_counter)",
    ]
    for line in header:
        log(line)
    results["header"] = header
    results["info"] = info
    dt = args.dtype
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dt]
    peak_key = "gflops" if dt == "fp32" else "bf16_gflops"
    peaks = measure_cpu_peaks(threads, quick, log)
    peak = peaks["isas"].get(info["isa_in_use"], {}).get(peak_key) or None
    results["peaks"] = {"cpu_peaks": peaks, "peak_gflops_in_use": peak}
    for line in cpu_peak_lines(info, peaks, dt):
        log(line)
    verify = Verifier(args.keep_going, results, log)

    plan = []
    for model, batches, _ in CPU_MODELS:
        batches = batches[:1] if quick else batches
        layers = _models.conv_layers(model, 32)
        if quick:
            layers = [layer for layer in layers if layer.name in QUICK_LAYERS[model]]
        plan += [(layer, b) for b in batches for layer in layers]
    results["sections"] = {
        "conv": "conv2d: ratio = torch ms / fastconv ms (>1: fastconv faster); rates in GFLOP/s (2*N*K*P*Q*C*R*S "
                "per pass, fwd+bwd = 3 passes); (xN) = occurrences in the model",
        "pool": "max_pool2d (with argmax indices, as autograd uses); GB/s = compulsory bytes (fwd: x + out + int64 "
                "idx; bwd: grad_out + idx + grad_in) / time",
        "train": f"training step (SGD momentum, cross-entropy, {'fp32' if dt == 'fp32' else 'bf16 autocast'}; "
                 f"ResNet-18 and LeNet-5 at batch 64, the fast CIFAR net at 256): fastconv-converted model vs torch.nn "
                 f"model, same weights and data; peak MiB = peak RSS increase during {1 if quick else 2} step(s) in a "
                 f"fresh process over the state with model, data and optimizer built (VmHWM reset through "
                 f"/proc/self/clear_refs)"}
    done, total = 0, len(plan) * len(formats_of(args))
    for fmt in formats_of(args):
        for layer, batch in plan:
            done += 1
            fns, check = conv_case(layer, batch, fmt, dtype=dtype)
            if not verify(f"{layer.label} N{batch} {fmt} {dt}", check(), CPU_TOLERANCE[dt]):
                continue
            for ps in PASSES:
                ta, tb = interleaved_cpu(*fns[ps], **tk)
                rec = conv_record(layer, batch, fmt, dt, ps, ta, tb, 1e9, peak)
                rec["layer"] += f" (x{layer.count})" if layer.count > 1 else ""
                results["conv"].append(rec)
                log(f"[conv {done}/{total}] " + conv_row(rec))
            del fns, check

    for fmt in formats_of(args):
        for pool, batches in _models.CPU_POOLS:
            for batch in (batches[:1] if quick else batches):
                if quick and pool.name != "resnet-stem maxpool":
                    continue
                fns, check = pool_case(pool, batch, fmt, dtype=dtype)
                if not verify(f"{pool.label} N{batch} {fmt} {dt}", check(), POOL_TOLERANCE[dt]):
                    continue
                for ps in ("fwd", "bwd", "fwd+bwd"):
                    ta, tb = interleaved_cpu(*fns[ps], **tk)
                    rec = pool_record(pool, batch, fmt, dt, ps, ta, tb, dtype_size=dtype.itemsize)
                    results["pool"].append(rec)
                    log("[pool] " + pool_row(rec))

    # >= 11 steps a side: with 7, one run's median of the ResNet-18 step moved by 10% (a step allocates dozens of
    # large tensors, and which of them glibc maps afresh varies)
    train_tk = dict(tk, warmup=1, min_runs=3 if quick else 11, min_time=tk["min_time"] * 2,
                    max_time=tk["max_time"] * 2)
    amp = None if dt == "fp32" else dtype
    for model, _, batch in CPU_MODELS:
        for fmt in formats_of(args):
            ref, ours = train_models(model, fmt, "cpu")
            x, y = train_inputs(model, batch, fmt, "cpu")
            ok = verify(f"train {model} N{batch} {fmt} {dt}", check_train(ref, ours, x, y, amp), TRAIN_TOLERANCE[dt])
            ta, tb = interleaved_cpu(TrainStep(ref, x, y, amp), TrainStep(ours, x, y, amp), **train_tk)
            del ref, ours
            memory = {}
            for impl in ("torch", "fastconv"):
                m = measure_train_memory_cpu(model, impl, batch, fmt, threads, 1 if quick else 2, dt)
                memory[impl] = {"peak_mib": m.get("peak_delta_mib"), **m}
            rec = {"model": model + ("/CIFAR" if model == "resnet18" else ""), "batch": batch, "format": fmt,
                   "precision": dt if dt == "fp32" else "bf16-amp", "torch": ta, "fastconv": tb, "torch_ms": ta["median"] * 1e3,
                   "fastconv_ms": tb["median"] * 1e3, "ratio": ta["median"] / tb["median"],
                   "torch_images_per_s": batch / ta["median"], "fastconv_images_per_s": batch / tb["median"],
                   "memory": memory, "wrong": not ok}
            results["train"].append(rec)
            log("[train] " + train_row(rec))

    if not quick:  # a second chance for the peak: the machine may have been busy at the start
        log("re-measuring the GEMM peaks")
        peaks = merge_cpu_peaks(peaks, measure_cpu_peaks(threads, quick, log, rounds=2))
        peak = peaks["isas"].get(info["isa_in_use"], {}).get(peak_key) or None
        results["peaks"] = {"cpu_peaks": peaks, "peak_gflops_in_use": peak}
        for rec in results["conv"]:
            rec["pct_peak"] = 100 * rec["fastconv_rate"] / peak if peak else None
            rec["torch_pct_peak"] = 100 * rec["torch_rate"] / peak if peak else None
    results["header"] += cpu_peak_lines(info, peaks, dt)
    best_torch = max((r["torch_rate"] for r in results["conv"]), default=0.0)
    if peak and best_torch > 1.05 * peak:
        results["peaks"]["warning"] = (
            f"torch's own conv reached {best_torch:.1f} GFLOP/s, {best_torch / peak:.2f}x the measured peak: the "
            f"peak runs were disturbed by other load, so '%peak' is overstated by up to that factor")


def correctness_lines(records):
    lines = []
    for key in ("out", "grad_input", "grad_weight", "grad_bias", "loss", "conv1_grad"):
        vals = [r[key] for r in records if isinstance(r.get(key), float)]
        if vals:
            lines.append(f"{key} {max(vals):.1e}")
    bad_layout = [r["what"] for r in records if r.get("layout_ok") is False]
    text = f"correctness: {len(records)} checks; max relative errors vs torch: " + ", ".join(lines)
    if bad_layout:
        text += f"\nWARNING: output memory format differs from torch's for: {'; '.join(bad_layout)}"
    return text


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        from _cases import memory_child_main
        memory_child_main(args.memory_child)
        return 0
    import torch
    import fastconv  # noqa: F401
    args.malloc_effect = None
    if args.device == "cpu" and args.malloc == "keep":
        from _timing import keep_freed_memory
        args.malloc_effect = keep_freed_memory()
        if args.malloc_effect is None:
            say("--malloc keep: glibc's mallopt is not available here (another C library?); run without it")
            return 2
    needed = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_bias", "max_pool2d", "max_pool2d_grad")
    missing = [op for op in needed if not hasattr(torch.ops.fastconv, op)]
    if missing:
        say(f"fastconv's extension did not register {missing} (is it being rebuilt?): try again in a minute")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    from _cases import CorrectnessError
    results = {"conv": [], "pool": [], "train": [], "correctness": [], "wrong": [], "errors": []}
    aborted = None
    try:
        if args.device == "cuda":
            if not torch.cuda.is_available():
                say("--device cuda: torch.cuda.is_available() is False on this machine")
                return 2
            from _cuda import run_cuda
            run_cuda(args, log, results)
        else:
            run_cpu(args, results)
    except CorrectnessError as exc:
        aborted = str(exc)
        log(f"\nABORTED: {exc}")
        if "info" not in results:
            say(f"ABORTED: {exc}")
            return 1
    info, peaks = results.pop("info"), results.pop("peaks")
    header, sections = results.pop("header", []), results.pop("sections", {})
    from _report import plot, save_json, summarize, tables
    summary, lines = summarize(results)
    elapsed = time.perf_counter() - start
    info["loadavg_end"] = _loadavg()

    for line in header:
        say(line)
    if peaks.get("warning"):
        say("WARNING: " + peaks["warning"])
    busy = [v for v in (info.get("loadavg"), info.get("loadavg_end")) if v]
    if args.device == "cpu" and any(float(v.split()[0]) > 0.5 * (info.get("logical_cpus") or 1) for v in busy):
        info["busy_warning"] = (f"WARNING: other processes were running (1-min load average {' / '.join(busy)} on "
                                f"{info.get('logical_cpus')} CPUs): a descheduled worker thread stalls a parallel "
                                f"region for a whole time slice, so small ops (< ~5 ms) can read several ms too slow "
                                f"on both sides; medians and interleaving limit the damage, the min times are in "
                                f"the JSON")
        say(info["busy_warning"])
    for line in tables(results, sections):
        say(line)
    if aborted:
        say(f"\nABORTED: {aborted}\nthe numbers above are PARTIAL, up to the abort")
    say("\nsummary (ratio = torch time / fastconv time; > 1 means fastconv is faster)")
    for line in lines:
        say("  " + line)
    say(correctness_lines(results["correctness"]))
    for w in results.get("wrong", []):
        say(f"WRONG fastconv result (not timed, or marked WRONG): {w}")
    say(f"total benchmark time {elapsed:.0f} s; load average at end: {info['loadavg_end']}")

    from _timing import slug
    if args.device == "cuda":
        stem = f"cuda-{slug(info.get('gpu', 'gpu'))}"
    else:
        # the model name alone ("AMD EPYC" in these VMs) does not tell Zen 3, 4 and 5 apart; family/model do
        fm = re.sub(r"family (\d+) model (\d+)", r"f\1m\2", info.get("cpu_family_model") or "")
        stem = f"cpu-{slug(info['cpu_model'])}{'-' + slug(fm) if fm else ''}-{info['isa_in_use']}"
        stem += "-bf16" if args.dtype == "bf16" else ""
        stem += "-malloc-keep" if args.malloc_effect else ""
    json_path = args.json or (os.path.join(RESULTS_DIR, stem + ".json") if args.save else None)
    plot_path = args.plot or (os.path.join(RESULTS_DIR, stem + ".png") if args.save else None)
    data = {"info": info, "peaks": peaks, "aborted": aborted,
            "args": {k: v for k, v in vars(args).items() if k != "memory_child"},
            "elapsed_s": elapsed, "header": header, "summary": summary, "summary_lines": lines, "results": results,
            "notes": {"ratio": "torch median time / fastconv median time; > 1 means fastconv is faster",
                      "flops": "2*N*K*P*Q*(C/groups)*R*S per pass; fwd+bwd counts 3 passes",
                      "peak": peaks.get("cpu_peaks", {}).get("method") if args.device == "cpu" else peaks.get("method"),
                      "memory": "CPU: peak RSS increase (VmHWM after reset via /proc/self/clear_refs) during the "
                                "training step(s) in a fresh process; CUDA: torch.cuda.max_memory_allocated"}}
    if json_path:
        save_json(json_path, data)
        say(f"JSON written to {json_path}")
    if plot_path:
        if args.device == "cuda":
            title = (f"fastconv vs cuDNN - {info.get('gpu')} - CUDA {info.get('cuda')} - cuDNN {info.get('cudnn')} - "
                     f"torch {info['torch']} - {info['date'][:10]}")
        else:
            title = (f"fastconv vs torch - {info['cpu_model']} - ISA {info['isa_in_use']} - {info['threads']} "
                     f"threads - torch {info['torch']} - {info['date'][:10]}")
        say(plot(plot_path, results, title))
    return 1 if results.get("wrong") or aborted else 0


if __name__ == "__main__":
    sys.exit(main())
