"""CUDA path of benchmarks/compare.py (--device cuda).

Per distinct conv layer of ResNet-18/CIFAR (batch 128 and 256) and ResNet-50 at 224x224 (batch 64): forward,
backward-input, backward-weight and fwd+bwd, fastconv against cuDNN (torch.backends.cudnn.benchmark on unless
--no-cudnn-benchmark) in fp32 with TF32 off, fp32 with TF32 on, fp16 and bf16; CUDA-event timing after warm-up,
medians; TFLOP/s and % of the device's dense peak for that precision (spec sheet where the GPU is known, else the
measured torch.mm peak, which is reported in any case). max_pool2d in GB/s. An end-to-end ResNet-18/CIFAR training
step under AMP (torch.autocast + GradScaler for fp16) on fastconv layers vs torch.nn layers, in images/s, with
torch.cuda.max_memory_allocated of each.
"""
import warnings

import torch

import _models
from _cases import (PASSES, CorrectnessError, TrainStep, check_train, conv_case, conv_record, formats_of, pool_case,
                    pool_record, Verifier, train_inputs, train_models)
from _report import conv_row, pool_row, train_row
from _timing import interleaved_cuda, machine_info

MODES = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "fp16": (torch.float16, False),
         "bf16": (torch.bfloat16, False)}
TOLERANCE = {"fp32": 1e-3, "tf32": 2e-2, "fp16": 1e-2, "bf16": 5e-2}  # vs cuDNN in the same precision
# overlapping windows sum several gradients into one input element: the order (and fp16 accumulation) differs
POOL_TOLERANCE = {"fp32": 1e-6, "fp16": 2e-3, "bf16": 1e-2}

# Dense (no sparsity) spec-sheet peaks in TFLOP/s, boost clock. First match wins.
_SPEC_PEAKS = [
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5}),
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0}),
    ("H100", {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}),   # SXM5
    ("H200", {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}),
    ("A100", {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0}),
]


def set_precision(mode):
    """fp32 vs TF32 through the legacy toggles (still honoured by torch 2.11, which warns about them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = MODES[mode][1]
        torch.backends.cudnn.allow_tf32 = MODES[mode][1]


def measured_peaks(quick, n=None):
    """Best TFLOP/s of torch.mm n x n per precision (cuBLAS), CUDA events."""
    n = n or (4096 if quick else 8192)
    out = {}
    for mode, (dtype, _) in MODES.items():
        set_precision(mode)
        a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
        c = torch.empty(n, n, device="cuda", dtype=dtype)
        for _ in range(3):
            torch.mm(a, b, out=c)
        best = 0.0
        for _ in range(5 if quick else 20):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.mm(a, b, out=c)
            e.record()
            e.synchronize()
            best = max(best, 2 * n**3 / (s.elapsed_time(e) / 1e3) / 1e12)
        out[mode] = best
        del a, b, c
    set_precision("fp32")
    return out


def spec_peaks(name):
    for key, peaks in _SPEC_PEAKS:
        if key in name:
            return key, peaks
    return None, None


def ensure_autocast(dtype, log):
    """fastconv's ops need an AutocastCUDA kernel for torch.autocast (else a conv gets an fp16 input and an fp32
    weight). If the library has none, register torch's generic cast-all-inputs one for this run, and say so."""
    try:
        if torch._C._dispatch_has_kernel_for_dispatch_key("fastconv::conv2d", "AutocastCUDA"):
            return "fastconv's own"
    except (AttributeError, RuntimeError):
        pass
    try:
        torch.library.register_autocast("fastconv::conv2d", "cuda", dtype)
        log(f"note: fastconv::conv2d has no AutocastCUDA kernel; the benchmark registered torch.library."
            f"register_autocast(cast_inputs={dtype}) for the AMP step")
        return "benchmark-registered"
    except Exception as exc:  # noqa: BLE001
        log(f"note: could not register autocast for fastconv::conv2d ({exc})")
        return f"none ({exc})"


def _cuda_peak_mib(step):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"peak_mib": (peak - base) / 2**20, "peak_total_mib": peak / 2**20, "baseline_mib": base / 2**20}


def run_cuda(args, log, results):
    quick = args.quick
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    tk = dict(warmup=3, min_runs=3, min_time=0.01) if quick else dict(warmup=5, min_runs=10, min_time=0.05)
    info = machine_info("cuda")
    header = [
        f"fastconv benchmark, CUDA  ({info['date']})",
        f"GPU: {info['gpu']} (sm_{info['capability'].replace('.', '')}, {info['gpu_sms']} SMs, "
        f"{info['gpu_memory_gib']} GiB), CUDA {info['cuda']}, cuDNN {info['cudnn']}, torch {info['torch']}, "
        f"cudnn.benchmark={torch.backends.cudnn.benchmark}; host CPU {info['cpu_model']}, {info['threads']} threads",
        f"mode: {'quick' if quick else 'full'}; timing: CUDA events, {tk['warmup']} warm-up calls, interleaved "
        f"torch/fastconv samples of >= 1 ms each, medians",
    ]
    results["header"], results["info"] = header, info
    for line in header:
        log(line)
    measured = measured_peaks(quick)
    spec_name, spec = spec_peaks(info["gpu"])
    peaks = {"measured_mm_tflops": measured, "spec_dense_tflops": spec, "spec_match": spec_name,
             "method": ("% of peak uses the dense spec-sheet peak of " + spec_name if spec else
                        "% of peak uses the measured torch.mm (cuBLAS) peak: GPU not in the spec table")}
    for mode in MODES:
        header.append(f"peak {mode}: measured torch.mm {measured[mode]:7.1f} TFLOP/s"
                      + (f", spec sheet (dense) {spec[mode]:7.1f} TFLOP/s" if spec else ""))
    header.append(peaks["method"])
    for line in header[-len(MODES) - 1:]:
        log(line)
    results["peaks"] = peaks
    amp = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.amp_dtype]
    results["sections"] = {
        "conv": "conv2d vs cuDNN: ratio = cuDNN ms / fastconv ms (>1: fastconv faster); rates in TFLOP/s "
                "(2*N*K*P*Q*C*R*S per pass, fwd+bwd = 3 passes); dtype fp32 = TF32 off; (xN) = occurrences",
        "pool": "max_pool2d (with int64 argmax indices); GB/s = compulsory bytes (fwd: x + out + idx; bwd: grad_out "
                "+ idx + grad_in) / time",
        "train": f"training step, ResNet-18/CIFAR, AMP ({args.amp_dtype} autocast"
                 f"{' + GradScaler' if amp == torch.float16 else ''}), SGD momentum; peak MiB = "
                 f"torch.cuda.max_memory_allocated over the allocated memory before the step (fastconv workspaces "
                 f"count only if they come from torch's allocator)"}
    verify = Verifier(args.keep_going, results, log)
    plan = []
    for model, hw, batches, names in (("resnet18", 32, (128,) if quick else (128, 256),
                                       ("conv1", "layer1.0.conv1", "layer2.0.downsample.0")),
                                      ("resnet50", 224, (64,), ("conv1", "layer1.0.conv2", "layer3.0.conv2"))):
        layers = _models.conv_layers(model, hw)
        if quick:
            layers = [layer for layer in layers if layer.name in names]
        plan += [(layer, b) for b in batches for layer in layers]
    for fmt in formats_of(args):
        for mode, (dtype, _) in MODES.items():
            set_precision(mode)
            peak = (spec or measured)[mode]
            for layer, batch in plan:
                what = f"{layer.label} N{batch} {fmt} {mode}"
                try:
                    fns, check = conv_case(layer, batch, fmt, "cuda", dtype)
                    errs = check()
                except CorrectnessError:
                    raise
                except RuntimeError as exc:
                    results["errors"].append({"what": what, "error": str(exc)[:300]})
                    log(f"{what}: fastconv failed ({str(exc).splitlines()[0][:120]}), skipped")
                    continue
                if not verify(what, errs, TOLERANCE[mode]):
                    continue
                for ps in PASSES:
                    ta, tb = interleaved_cuda(*fns[ps], **tk)
                    rec = conv_record(layer, batch, fmt, mode, ps, ta, tb, 1e12, peak)
                    rec["layer"] += f" (x{layer.count})" if layer.count > 1 else ""
                    results["conv"].append(rec)
                    log("[conv] " + conv_row(rec))
                del fns, check
                torch.cuda.empty_cache()
    set_precision("fp32")

    for fmt in formats_of(args):
        for mode in ("fp32", "fp16"):
            dtype = MODES[mode][0]
            for pool, batches in _models.CUDA_POOLS:
                for batch in (batches[:1] if quick else batches):
                    what = f"{pool.label} N{batch} {fmt} {mode}"
                    try:
                        fns, check = pool_case(pool, batch, fmt, "cuda", dtype)
                        errs = check()
                    except RuntimeError as exc:
                        results["errors"].append({"what": what, "error": str(exc)[:300]})
                        log(f"{what}: fastconv failed ({str(exc).splitlines()[0][:120]}), skipped")
                        continue
                    if not verify(what, errs, POOL_TOLERANCE[mode]):
                        continue
                    for ps in ("fwd", "bwd", "fwd+bwd"):
                        ta, tb = interleaved_cuda(*fns[ps], **tk)
                        rec = pool_record(pool, batch, fmt, mode, ps, ta, tb, dtype_size=dtype.itemsize)
                        results["pool"].append(rec)
                        log("[pool] " + pool_row(rec))

    results["autocast"] = ensure_autocast(amp, log)
    if results["autocast"] == "benchmark-registered":
        header.append("note: fastconv::conv2d has no AutocastCUDA kernel; for the AMP step this run registered "
                      f"torch.library.register_autocast(cast_inputs={amp})")
    for fmt in formats_of(args):
        for batch in ((256,) if quick else (128, 256)):
            what = f"train resnet18 N{batch} {fmt} amp-{args.amp_dtype}"
            try:
                ref, ours = train_models("resnet18", fmt, "cuda")
                x, y = train_inputs("resnet18", batch, fmt, "cuda")
                ok = verify(what, check_train(ref, ours, x, y), {"loss": 1e-4, "conv1_grad": 5e-2})
                steps = []
                for model in (ref, ours):
                    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
                    steps.append(TrainStep(model, x, y, amp_dtype=amp, scaler=scaler))
                ta, tb = interleaved_cuda(*steps, warmup=3, min_runs=5 if quick else 10, min_time=0.2)
                memory = {"torch": _cuda_peak_mib(steps[0]), "fastconv": _cuda_peak_mib(steps[1])}
            except CorrectnessError:
                raise
            except RuntimeError as exc:
                results["errors"].append({"what": what, "error": str(exc)[:300]})
                log(f"{what}: failed ({str(exc).splitlines()[0][:120]}), skipped")
                continue
            rec = {"model": "resnet18/CIFAR", "batch": batch, "format": fmt, "precision": f"amp-{args.amp_dtype}",
                   "amp_dtype": args.amp_dtype, "torch": ta, "fastconv": tb, "torch_ms": ta["median"] * 1e3,
                   "fastconv_ms": tb["median"] * 1e3, "ratio": ta["median"] / tb["median"],
                   "torch_images_per_s": batch / ta["median"], "fastconv_images_per_s": batch / tb["median"],
                   "memory": memory, "wrong": not ok}
            results["train"].append(rec)
            log("[train] " + train_row(rec))
            del ref, ours, steps
            torch.cuda.empty_cache()
    if results["errors"]:
        header.append(f"{len(results['errors'])} case(s) skipped because fastconv raised: "
                      + "; ".join(f"{e['what']}: {e['error'][:100]}" for e in results["errors"][:5]))
