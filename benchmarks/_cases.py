"""Benchmark cases shared by the CPU and CUDA paths of benchmarks/compare.py: per-layer conv passes, max-pool
passes and training steps, each as a (torch callable, fastconv callable) pair plus a correctness check."""
import copy
import json
import math
import os
import subprocess
import sys
import time
import zlib

import torch
import torch.nn.functional as F

import fastconv  # noqa: F401  (registers torch.ops.fastconv)

import _models
from _timing import peak_rss_kb, rel_error, reset_peak_rss, rss_kb

ops = torch.ops.fastconv
aten = torch.ops.aten

PASSES = ("fwd", "bwd_input", "bwd_weight", "fwd+bwd")
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


class CorrectnessError(RuntimeError):
    pass


def _seed(*parts):
    torch.manual_seed(zlib.crc32(repr(parts).encode()))


def conv_case(layer, batch, fmt, device="cpu", dtype=torch.float32):
    """{pass: (torch_fn, fastconv_fn)} and a check() -> {quantity: rel_error}.

    torch's backward passes call aten.convolution_backward with an output_mask, so only the wanted gradient of
    torch's own kernel is timed, without autograd; fastconv's call the raw grad ops."""
    _seed(layer.key(), batch, fmt)
    mf = FORMATS[fmt]
    kw = {"device": device, "dtype": dtype}
    cg = layer.C // layer.groups
    x = torch.randn(batch, layer.C, layer.H, layer.W, **kw).contiguous(memory_format=mf)
    w = torch.randn(layer.K, cg, layer.R, layer.S, **kw) / math.sqrt(cg * layer.R * layer.S)
    w = w.contiguous(memory_format=mf)
    b = torch.randn(layer.K, **kw) if layer.bias else None
    p, q = layer.out_hw()
    gy = torch.randn(batch, layer.K, p, q, **kw).contiguous(memory_format=mf)
    stride, pad, dil, groups = list(layer.stride), list(layer.padding), list(layer.dilation), layer.groups
    pad4 = [pad[0], pad[1], pad[0], pad[1]]
    bias_sizes = [layer.K] if layer.bias else None
    args = (stride, pad4, dil, groups)

    def t_bwd(mask):
        return aten.convolution_backward(gy, x, w, bias_sizes, stride, pad, dil, False, [0, 0], groups, mask)

    def t_all():
        return torch.conv2d(x, w, b, stride, pad, dil, groups), t_bwd([True, True, layer.bias])

    def f_all():
        y = ops.conv2d(x, w, b, *args)
        gx = ops.conv2d_grad_input(gy, x, w, *args)
        gw = ops.conv2d_grad_weight(gy, x, w, *args)
        return y, gx, gw, (ops.conv2d_grad_bias(gy) if layer.bias else None)

    fns = {
        "fwd": (lambda: torch.conv2d(x, w, b, stride, pad, dil, groups), lambda: ops.conv2d(x, w, b, *args)),
        "bwd_input": (lambda: t_bwd([True, False, False]), lambda: ops.conv2d_grad_input(gy, x, w, *args)),
        "bwd_weight": (lambda: t_bwd([False, True, False]), lambda: ops.conv2d_grad_weight(gy, x, w, *args)),
        "fwd+bwd": (t_all, f_all),
    }

    def check():
        y_ref, (gx_ref, gw_ref, gb_ref) = t_all()
        y, gx, gw, gb = f_all()
        errs = {"out": rel_error(y, y_ref), "grad_input": rel_error(gx, gx_ref), "grad_weight": rel_error(gw, gw_ref)}
        if layer.bias:
            errs["grad_bias"] = rel_error(gb, gb_ref)
        errs["layout_ok"] = bool(y.is_contiguous(memory_format=mf) and gx.is_contiguous(memory_format=mf))
        return errs

    return fns, check


def pool_case(pool, batch, fmt, device="cpu", dtype=torch.float32):
    """{'fwd'|'bwd'|'fwd+bwd': (torch_fn, fastconv_fn)} and check(). Both compute argmax indices (torch's
    max_pool2d_with_indices, what autograd uses)."""
    _seed(pool.label, batch, fmt)
    mf = FORMATS[fmt]
    x = torch.randn(batch, pool.C, pool.H, pool.W, device=device, dtype=dtype).contiguous(memory_format=mf)
    k, s, p, d = [pool.k] * 2, [pool.s] * 2, [pool.p] * 2, [1, 1]
    y_ref, idx_ref = aten.max_pool2d_with_indices(x, k, s, p, d, False)
    y, idx = ops.max_pool2d(x, k, s, p, d, False)
    gy = torch.randn_like(y_ref)
    fns = {"fwd": (lambda: aten.max_pool2d_with_indices(x, k, s, p, d, False),
                   lambda: ops.max_pool2d(x, k, s, p, d, False)),
           "bwd": (lambda: aten.max_pool2d_with_indices_backward(gy, x, k, s, p, d, False, idx_ref),
                   lambda: ops.max_pool2d_grad(gy, x, idx))}

    def both(fwd, bwd):  # a training step's pooling: forward, then backward with the indices it produced
        def run():
            out, ix = fwd(x, k, s, p, d, False)
            return bwd(gy, x, ix)
        return run
    fns["fwd+bwd"] = (both(aten.max_pool2d_with_indices,
                           lambda g, x_, i: aten.max_pool2d_with_indices_backward(g, x_, k, s, p, d, False, i)),
                      both(ops.max_pool2d, ops.max_pool2d_grad))

    def check():
        gx_ref = aten.max_pool2d_with_indices_backward(gy, x, k, s, p, d, False, idx_ref)
        gx = ops.max_pool2d_grad(gy, x, idx)
        return {"out": rel_error(y, y_ref), "indices_equal": bool(torch.equal(idx, idx_ref)),
                "grad_input": rel_error(gx, gx_ref),
                "layout_ok": bool(y.is_contiguous(memory_format=mf) and gx.is_contiguous(memory_format=mf))}

    return fns, check


def raise_if_wrong(what, errs, tol):
    """tol: one tolerance for every relative error in errs, or {name: tolerance}."""
    tols = tol if isinstance(tol, dict) else {k: tol for k in errs}
    bad = {k: v for k, v in errs.items() if isinstance(v, float) and k in tols and not (v <= tols[k])}
    if "indices_equal" in errs and not errs["indices_equal"] and errs.get("grad_input", 1.0) > tol:
        bad["indices"] = "differ"
    if bad:
        raise CorrectnessError(f"fastconv result is WRONG for {what}: relative errors {bad} (tolerance {tol}); "
                               f"all checks: {errs}")


class Verifier:
    """Records every check; a wrong result aborts the run (CorrectnessError), or with keep_going is logged,
    listed under results['wrong'] and reported to the caller (False), which then skips timing that case."""

    def __init__(self, keep_going, results, log):
        self.keep_going, self.results, self.log = keep_going, results, log

    def __call__(self, what, errs, tol):
        self.results["correctness"].append({"what": what, **errs})
        try:
            raise_if_wrong(what, errs, tol)
            return True
        except CorrectnessError as exc:
            if not self.keep_going:
                raise CorrectnessError(f"{exc}. Aborting: timings of a wrong kernel mean nothing "
                                       f"(--keep-going skips wrong cases instead)") from None
            self.log(f"WRONG: {exc}")
            self.results.setdefault("wrong", []).append({"what": what, **errs})
            return False


# ---------------------------------------------------------------------------------------------------- training


class TrainStep:
    """One SGD step (zero_grad, forward, cross-entropy, backward, step) of a model on fixed data."""

    def __init__(self, model, x, y, amp_dtype=None, scaler=None):
        self.model, self.x, self.y, self.amp_dtype, self.scaler = model, x, y, amp_dtype, scaler
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def loss(self):
        if self.amp_dtype is None:
            return F.cross_entropy(self.model(self.x), self.y)
        with torch.autocast(device_type=self.x.device.type, dtype=self.amp_dtype):
            return F.cross_entropy(self.model(self.x), self.y)

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        return loss


def train_inputs(model_name, batch, fmt, device):
    _seed(model_name, batch)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=FORMATS[fmt])
    return x, torch.randint(0, 10, (batch,), device=device)


def train_models(model_name, fmt, device):
    """(torch.nn model, fastconv model) with identical weights, in train mode, on device, in fmt."""
    torch.manual_seed(0)
    ref, ours = _models.torch_and_fastconv(_models.build(model_name))
    return [m.to(device=device, memory_format=FORMATS[fmt]).train() for m in (ref, ours)]


def _first_conv(model):
    """The first conv that trains (the fast CIFAR net's whitening layer is fixed)."""
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad)


def check_train(ref, ours, x, y, amp_dtype=None):
    """Relative errors of the loss and of the first conv's weight gradient after one forward/backward (under
    autocast to amp_dtype if given), on copies (the timed models stay untouched)."""
    ref, ours = copy.deepcopy(ref), copy.deepcopy(ours)
    l_ref, l_ours = TrainStep(ref, x, y, amp_dtype).loss(), TrainStep(ours, x, y, amp_dtype).loss()
    l_ref.backward()
    l_ours.backward()
    errs = {"loss": abs(l_ours.item() - l_ref.item()) / max(abs(l_ref.item()), 1e-12),
            "conv1_grad": rel_error(_first_conv(ours).weight.grad, _first_conv(ref).weight.grad)}
    return errs


def memory_child_main(spec_json):
    """Run in a fresh process: peak resident-memory increase during training steps of one model."""
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    ref, ours = train_models(spec["model"], spec["format"], "cpu")
    model = ours if spec["impl"] == "fastconv" else ref
    del ref, ours
    x, y = train_inputs(spec["model"], spec["batch"], spec["format"], "cpu")
    step = TrainStep(model, x, y, torch.bfloat16 if spec.get("dtype") == "bf16" else None)
    import gc
    gc.collect()
    base = rss_kb()
    exact = reset_peak_rss()
    if not exact:
        import resource
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(spec["steps"]):
        step()
    peak = peak_rss_kb()
    print(json.dumps({"peak_delta_mib": (peak - base) / 1024, "baseline_mib": base / 1024, "exact": exact}))


def measure_train_memory_cpu(model_name, impl, batch, fmt, threads, steps, dtype="fp32"):
    """Peak RSS increase (MiB) over the state with model, data and optimizer built, during `steps` training steps,
    in a fresh process (VmHWM reset via /proc/self/clear_refs, then read back): it counts everything the step
    touches - activations, gradients, momentum, workspaces of torch/oneDNN/MKL and fastconv's own buffers."""
    spec = json.dumps({"model": model_name, "impl": impl, "batch": batch, "format": fmt, "threads": threads,
                       "steps": steps, "dtype": dtype})
    compare = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare.py")
    for attempt in range(3):  # the package may be being rebuilt by someone else for a moment: retry
        try:
            res = subprocess.run([sys.executable, compare, "--_memory-child", spec], capture_output=True, text=True,
                                 timeout=600, check=True)
            return json.loads(res.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, ValueError, IndexError) as exc:
            err = getattr(exc, "stderr", "") or ""
            error = {"error": f"{type(exc).__name__}: {str(exc)[:200]} {err[-300:]}"}
            time.sleep(20 * (attempt + 1))
    return error

# ---------------------------------------------------------------------------------------------------- records


def formats_of(args):
    return ["nchw", "channels_last"] if args.memory_format == "both" else [args.memory_format]


def conv_record(layer, batch, fmt, dtype, ps, ta, tb, rate_scale, peak):
    flops = layer.flops(batch) * (3 if ps == "fwd+bwd" else 1)
    rec = {"model": layer.model, "layer": layer.label, "name": layer.name, "count": layer.count, "also": layer.also,
           "C": layer.C, "H": layer.H, "W": layer.W, "K": layer.K, "R": layer.R, "S": layer.S,
           "stride": layer.stride, "padding": layer.padding, "bias": layer.bias, "batch": batch, "format": fmt,
           "dtype": dtype, "pass": ps, "flops": flops, "torch": ta, "fastconv": tb,
           "torch_ms": ta["median"] * 1e3, "fastconv_ms": tb["median"] * 1e3, "ratio": ta["median"] / tb["median"],
           "torch_rate": flops / ta["median"] / rate_scale, "fastconv_rate": flops / tb["median"] / rate_scale,
           "rate_unit": "GFLOP/s" if rate_scale == 1e9 else "TFLOP/s"}
    rec["pct_peak"] = 100 * rec["fastconv_rate"] / peak if peak else None
    rec["torch_pct_peak"] = 100 * rec["torch_rate"] / peak if peak else None
    return rec


def pool_record(pool, batch, fmt, dtype, ps, ta, tb, dtype_size=4):
    nbytes = pool.bytes(batch, dtype_size)[ps]
    return {"layer": pool.label, "batch": batch, "format": fmt, "dtype": dtype, "pass": ps, "bytes": nbytes,
            "torch": ta, "fastconv": tb, "torch_ms": ta["median"] * 1e3, "fastconv_ms": tb["median"] * 1e3,
            "ratio": ta["median"] / tb["median"], "torch_gbs": nbytes / ta["median"] / 1e9,
            "fastconv_gbs": nbytes / tb["median"] / 1e9}
