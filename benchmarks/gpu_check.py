#!/usr/bin/env python3
"""Proves or disproves fastconv's CUDA half in one short GPU visit (issue 25). benchmarks/gpu_check.sh runs every
subcommand with a time limit; each also runs alone, from the repository root, after a FASTCONV_CUDA=1 build:

    python3 benchmarks/gpu_check.py correctness  [--out PATH.json] [--time-limit S] [--tensor-cores both|0|1]
    python3 benchmarks/gpu_check.py sanitizer         # tiny cases, to run under compute-sanitizer
    python3 benchmarks/gpu_check.py tensor-cores [--out PATH.json]
    python3 benchmarks/gpu_check.py tc-probe          # one fp16 call of each tensor-core kernel, for ncu

--out defaults to $OUT/correctness.json and $OUT/tensor_cores.json ($OUT unset: the current directory).
Exit status: 0 every check passed; 1 a check failed; 2 cannot run here (no CUDA device, fastconv not importable
or built without its CUDA kernels); 3 the CUDA context was lost (a kernel crashed; later results would mean
nothing); 4 incomplete: the time limit stopped the run before every case ran, and none failed.

correctness
  conv2d: ResNet-18/CIFAR layer shapes at batch 8 (incl. the 1x1 stride-2 shortcuts) and edge cases (groups,
  depthwise, dilation, stride 3, odd and non-square sizes and kernels, 'same' and zero padding, no bias, N=1, C=1,
  K=1, channel counts that leave ragged tensor-core tiles), in float32, float16 and bfloat16, NCHW and
  channels_last (input and weight). fastconv's output and autograd gradients (input, weight, bias) and cuDNN's
  (TF32 off) are both compared with a float64 reference: torch's conv2d on the GPU in float64 on the same rounded
  inputs and the same grad_output. For each tensor, with ref its float64 reference:
      err(X) = max |X - ref|                                     (over all elements)
      floor  = max |ref| * (eps(dtype) + 2 * eps(float32) * sqrt(L))
      PASS  iff  fastconv's tensor is finite, has cuDNN's shape, dtype and memory format, and
                 err(fastconv) <= 4 * err(cuDNN) + floor
  where L is the length of the sums behind the tensor (output: C/groups*R*S; grad_input: K/groups*R*S;
  grad_weight, grad_bias: N*P*Q). fastconv may be up to 4x less accurate than cuDNN on the same problem, plus one
  rounding of the result to the dtype and a random-walk allowance for fp32 accumulation. Being close to a wrong
  cuDNN cannot make a case pass, and an exact cuDNN does not shrink the bound to zero.
  max_pool2d: kernels 2 and 3 (and 3x2), strides, padding, dilation, ceil_mode, both layouts, three dtypes:
  values, indices and memory format equal torch's exactly; the input gradient within one rounding of torch's
  (|d| <= t * (1 + |torch|), t = 1e-6 fp32, 2e-3 fp16, 1.6e-2 bf16).
  ResNet-18 (fastconv.models.resnet18(num_classes=10, stem="cifar"), train mode, batch 32, cross-entropy):
  forward + backward of the model against the same model on torch's layers (fastconv.revert of a deep copy), both
  against a float64 copy: per parameter rel(X) = ||grad_X - grad_64|| / ||grad_64||, PASS iff for every parameter
  (and the loss) rel(fastconv) <= 4 * rel(torch) + floor, floor 1e-4 in float32, 5e-3 under
  torch.autocast("cuda", float16) (loss scaled by 1024 so fp16 gradients do not underflow).
  Everything runs twice, FASTCONV_TENSOR_CORES=0 and =1, each in a subprocess of its own: ops_cuda.cpp reads the
  variable with getenv at every call (not cached), so one process would do, but a crashing kernel in one setting
  must not void the other. With =1, float16 / bfloat16 channels_last convs whose channels per group are multiples
  of 8 run on the tensor-core kernels (float32 stays on CUDA cores: TF32 is off), and the ResNet check runs under
  autocast float16 in channels_last.

sanitizer
  A handful of tiny problems through fastconv only (no cuDNN or cuBLAS kernels, so the sanitizer report is about
  fastconv): conv forward, grad_input, grad_weight, grad_bias in float32, float16, bfloat16 (and float32 as TF32
  with tensor cores on), NCHW and channels_last, with FASTCONV_TENSOR_CORES=0 and =1, incl. a view one element
  past an aligned address, two tensor-core column tiles, split-K weight gradients and depthwise kernels; and
  max_pool2d forward / backward. A sanity comparison with torch on the CPU in float64 only.

tensor-cores
  FASTCONV_TENSOR_CORES=1; float16, bfloat16 and float32-as-TF32 (cuDNN's TF32 on as well) channels_last convs,
  incl. problems wider than one 128-column tile and with large N*P*Q. The four ops (forward, grad_input,
  grad_weight, grad_bias), called directly, must match cuDNN elementwise, |ours - cuDNN| <= tol * (|cuDNN| +
  max |cuDNN|) + |cuDNN - float64 reference| (cuDNN's own error cannot fail fastconv), tol = 2e-3 fp16,
  1.6e-2 bf16, 4e-3 TF32 (about two units in the last place at 1.0), and have relative norm errors vs float64
  within 2e-3 / 1.6e-2 / 1e-3 (test_cuda.py's TC_REL). Proof that tensor cores ran: the calls run under
  torch.profiler (CUDA activity); their kernels must include tc_conv_kernel instantiated for TcFwd, TcBwdIn and
  TcWgrad (csrc/cuda/tc_engine.cuh, conv_tc.cu) and no igemm_kernel (the CUDA-core engine, csrc/cuda/igemm.cuh);
  a control call with FASTCONV_TENSOR_CORES=0 must show igemm_kernel and no tc_conv_kernel. Also, with tensor cores off and on: a CUDA graph capturing the four ops, replayed on new
  data; the ops on a non-default stream behind a delayed producer (a launch on the wrong stream reads the stale
  input); torch.autocast("cuda", float16 / bfloat16) on a fastconv.Conv2d against torch.nn.Conv2d with the same
  weights (and, with tensor cores on, tc_conv_kernel in its kernels). Same tolerances, without the float64 term.

Only torch, the standard library and fastconv are used; written for torch 2.11 and 2.13.
"""
import argparse
import copy
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from collections import namedtuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PASSED, FAILED, CANNOT_RUN, CONTEXT_LOST, INCOMPLETE = 0, 1, 2, 3, 4

ACCURACY_FACTOR = 4.0        # fastconv's error may be this many times cuDNN's (plus the floor)
EPS32 = 2.0 ** -23
POOL_GRAD_TOL = {"f32": 1e-6, "f16": 2e-3, "bf16": 1.6e-2}
RESNET_FLOOR = {"f32": 1e-4, "amp-f16": 5e-3}
ELEM_TOL = {"f32": 3e-5, "tf32": 4e-3, "f16": 2e-3, "bf16": 1.6e-2}   # elementwise vs cuDNN, same precision
TC_REL = {"tf32": 1e-3, "f16": 2e-3, "bf16": 1.6e-2}                  # relative norm error vs float64
SANITY_TOL = {"f32": 1e-4, "tf32": 2e-2, "f16": 2e-2, "bf16": 6e-2}
TC_KERNEL, CUDA_CORE_KERNEL = "tc_conv_kernel", "igemm_kernel"
TC_PROBLEMS = (("out", "TcFwd"), ("grad_input", "TcBwdIn"), ("grad_weight", "TcWgrad"))
TENSOR_NAMES = ("out", "grad_input", "grad_weight", "grad_bias")

torch = F = fastconv = FC = ops = None  # filled in by load()


# --- environment ----------------------------------------------------------------------------------------------

def say(*args):
    print(*args, flush=True)


def cannot_run(reason):
    say(f"CANNOT RUN: {reason}")
    sys.exit(CANNOT_RUN)


def load():
    """Imports torch and fastconv into the module's globals; exits with status 2 where nothing can be checked."""
    global torch, F, fastconv, FC, ops
    try:
        import torch as torch_module
    except ImportError as exc:
        cannot_run(f"torch is not importable ({exc})")
    torch = torch_module
    if not torch.cuda.is_available():
        cannot_run(f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA "
                   f"{torch.version.cuda}). Run this on the GPU machine: bash benchmarks/gpu_check.sh")
    sys.path.insert(0, ROOT)
    try:
        import fastconv as fastconv_module
        import fastconv.functional as functional
    except Exception as exc:  # noqa: BLE001 - any import failure means: not built
        cannot_run(f"fastconv is not importable ({type(exc).__name__}: {exc}); build it first: "
                   f"FASTCONV_CUDA=1 python3 -m pip install --no-build-isolation --no-deps -e .")
    import torch.nn.functional as nn_functional
    fastconv, FC, F, ops = fastconv_module, functional, nn_functional, torch.ops.fastconv
    try:
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("fastconv::conv2d", "CUDA")
    except Exception:  # noqa: BLE001
        has_cuda = False
    if not has_cuda:
        cannot_run("fastconv was built without its CUDA kernels: rebuild with FASTCONV_CUDA=1 (see gpu_check.sh)")


def set_tf32(enabled):
    """cuDNN / cuBLAS TF32 through the legacy switches. Only these: they set cuDNN's conv and RNN precisions
    together, which is what ops_cuda.cpp's at::globalContext().allowTF32CuDNN() (no operator given) expects."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled


def set_tensor_cores(on):
    os.environ["FASTCONV_TENSOR_CORES"] = "1" if on else "0"


def context_alive():
    """False once the CUDA context is lost (after an illegal address, a trap, ...): nothing later can be trusted."""
    try:
        torch.cuda.synchronize()
        return torch.ones(1, device="cuda").add(1).item() == 2.0
    except Exception:  # noqa: BLE001
        return False


def short_error(exc):
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def dtype_of(name):
    return {"f32": torch.float32, "tf32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[name]


def memory_format_flags(t):
    """(contiguous?, channels_last-contiguous?): compares layouts without guessing for ambiguous shapes."""
    if t.dim() != 4:
        return (t.is_contiguous(),)
    return (t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last))


def doc_section(name):
    """The text of one subcommand's section of the module docstring (the criteria, for the JSON files)."""
    lines, out, inside = __doc__.splitlines(), [], False
    for line in lines:
        if line and not line.startswith(" "):
            inside = line.strip() == name
            continue
        if inside:
            out.append(line.strip())
    return " ".join(x for x in out if x)


def write_json(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)
    say(f"JSON written to {path}")


def machine():
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": sys.version.split()[0], "FASTCONV_TENSOR_CORES": os.environ.get("FASTCONV_TENSOR_CORES"),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# --- problems and tensors ---------------------------------------------------------------------------------------

ConvCase = namedtuple("ConvCase", "name N C K H W kernel stride padding dilation groups bias")
PoolCase = namedtuple("PoolCase", "name N C H W kernel stride padding dilation ceil_mode")


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def conv(name, N, C, K, H, W, k=3, s=1, p=0, d=1, g=1, bias=True):
    return ConvCase(name, N, C, K, H, W, _pair(k), _pair(s), p if isinstance(p, str) else _pair(p), _pair(d), g, bias)


def pool(name, N, C, H, W, k, s=None, p=0, d=1, ceil=False):
    return PoolCase(name, N, C, H, W, k, s, p, d, ceil)


RESNET_CONVS = [  # ResNet-18 with the CIFAR stem at 32x32, batch 8 (bias on some, for grad_bias)
    conv("r18 conv1 3->64 @32", 8, 3, 64, 32, 32, 3, 1, 1, bias=False),
    conv("r18 64->64 @32", 8, 64, 64, 32, 32, 3, 1, 1),
    conv("r18 64->128 s2 @32", 8, 64, 128, 32, 32, 3, 2, 1),
    conv("r18 128->128 @16", 8, 128, 128, 16, 16, 3, 1, 1, bias=False),
    conv("r18 128->256 s2 @16", 8, 128, 256, 16, 16, 3, 2, 1),
    conv("r18 256->256 @8", 8, 256, 256, 8, 8, 3, 1, 1, bias=False),
    conv("r18 256->512 s2 @8", 8, 256, 512, 8, 8, 3, 2, 1),
    conv("r18 512->512 @4", 8, 512, 512, 4, 4, 3, 1, 1),
    conv("r18 1x1 64->128 s2 @32", 8, 64, 128, 32, 32, 1, 2, 0, bias=False),
    conv("r18 1x1 128->256 s2 @16", 8, 128, 256, 16, 16, 1, 2, 0, bias=False),
    conv("r18 1x1 256->512 s2 @8", 8, 256, 512, 8, 8, 1, 2, 0, bias=False),
]
EDGE_CONVS = [
    conv("groups 2", 4, 16, 32, 12, 12, 3, 1, 1, g=2),
    conv("groups 4, 3 channels per group", 4, 12, 8, 11, 9, 3, 1, 1, g=4),
    conv("depthwise 32", 4, 32, 32, 16, 16, 3, 1, 1, g=32),
    conv("depthwise x2 s2", 4, 16, 32, 15, 13, 3, 2, 1, g=16, bias=False),
    conv("dilation 2", 4, 8, 16, 15, 13, 3, 1, 2, d=2),
    conv("dilation (2,3) s2 pad (2,3)", 2, 16, 24, 20, 21, 3, 2, (2, 3), d=(2, 3)),
    conv("stride 3, 5x5", 4, 6, 10, 19, 23, 5, 3, 2),
    conv("odd sizes 7->9 @17x11", 4, 7, 9, 17, 11, 3, 1, 1),
    conv("kernel 1x5", 4, 8, 12, 10, 14, (1, 5), 1, (0, 2)),
    conv("kernel 3x1 s(2,1)", 4, 8, 16, 13, 9, (3, 1), (2, 1), (1, 0), bias=False),
    conv("kernel 4x4 'same'", 2, 8, 8, 11, 10, 4, 1, "same"),
    conv("padding 0", 4, 5, 7, 9, 9, 3, 1, 0),
    conv("no bias 16->16", 4, 16, 16, 8, 8, 3, 1, 1, bias=False),
    conv("N=1", 1, 16, 32, 7, 7, 3, 1, 1),
    conv("C=1", 4, 1, 8, 10, 10, 3, 1, 1),
    conv("C=1 K=1", 4, 1, 1, 10, 10, 3, 1, 1),
    conv("K=1", 4, 16, 1, 9, 9, 3, 1, 1),
    conv("kernel 5x5 > input 3x3, pad 2", 2, 3, 4, 3, 3, 5, 1, 2),
    conv("7x7 s2 p3 stem @64", 2, 3, 64, 64, 64, 7, 2, 3, bias=False),
    conv("40->136 @15x17 (ragged tiles)", 2, 40, 136, 15, 17, 3, 1, 1),
    conv("N=64 16->16 @32 (many split-K chunks)", 64, 16, 16, 32, 32, 3, 1, 1),
]
CONV_CASES = RESNET_CONVS + EDGE_CONVS
POOL_CASES = [
    pool("2x2 s2", 4, 16, 32, 32, 2, 2),
    pool("3x3 s2 p1 (r18 stem)", 4, 16, 32, 32, 3, 2, 1),
    pool("3x3 s2 p1 @33x31", 4, 8, 33, 31, 3, 2, 1),
    pool("3x3 s1 p1 (overlapping)", 4, 8, 17, 15, 3, 1, 1),
    pool("3x3 s2 p1 ceil", 4, 8, 17, 15, 3, 2, 1, ceil=True),
    pool("2x2 s1 dilation 2", 4, 8, 12, 11, 2, 1, 0, d=2),
    pool("(3,2) s(2,1) p(1,0) ceil", 2, 5, 9, 8, (3, 2), (2, 1), (1, 0), ceil=True),
    pool("3x3 s3 ceil @10x10", 2, 3, 10, 10, 3, 3, 0, ceil=True),
    pool("2x2 stride None, C=3", 2, 3, 9, 9, 2),
]


def conv_kwargs(c):
    return dict(stride=c.stride, padding=c.padding, dilation=c.dilation, groups=c.groups)


def conv_tensors(c, dtype, channels_last, seed):
    """x, w, b on the GPU: float32 normals drawn on the CPU, rounded to dtype; w scaled by 1/sqrt(fan_in)."""
    g = torch.Generator().manual_seed(seed)
    kh, kw = c.kernel
    x = torch.randn(c.N, c.C, c.H, c.W, generator=g)
    w = torch.randn(c.K, c.C // c.groups, kh, kw, generator=g) / math.sqrt(c.C // c.groups * kh * kw)
    b = torch.randn(c.K, generator=g) if c.bias else None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.to("cuda", dtype).contiguous(memory_format=fmt)
    w = w.to("cuda", dtype).contiguous(memory_format=fmt)
    return x, w, (None if b is None else b.to("cuda", dtype))


def random_like(t, seed):
    """Normals of t's shape, dtype, device and memory format (channels_last stays channels_last)."""
    r = torch.randn(t.shape, generator=torch.Generator().manual_seed(seed)).to(t.device, t.dtype)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        r = r.contiguous(memory_format=torch.channels_last)
    return r


def forward_backward(fn, x, w, b, kwargs, grad_output):
    """[output, grad_input, grad_weight(, grad_bias)] of fn through autograd."""
    leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    out = fn(leaves[0], leaves[1], leaves[2] if b is not None else None, **kwargs)
    grads = torch.autograd.grad(out, leaves, grad_output)
    return [out.detach()] + [g.detach() for g in grads]


def float64_reference(x, w, b, kwargs, grad_output, device="cuda"):
    as64 = [None if t is None else t.detach().to(device, torch.float64).contiguous() for t in (x, w, b)]
    return forward_backward(F.conv2d, *as64, kwargs, grad_output.to(device, torch.float64).contiguous())


def raw_passes(c, x, w, b, grad_output):
    """fastconv's four conv ops on one problem, called directly (no autograd): out, gi, gw, gb."""
    args = (list(c.stride), [c.padding[0], c.padding[1]] * 2, list(c.dilation), c.groups)  # top, left, bottom, right
    return [ops.conv2d(x, w, b, *args), ops.conv2d_grad_input(grad_output, x, w, *args),
            ops.conv2d_grad_weight(grad_output, x, w, *args), ops.conv2d_grad_bias(grad_output)]


# --- correctness: conv2d ----------------------------------------------------------------------------------------

def sum_lengths(c, out_shape):
    n, _, p, q = out_shape
    rs = c.kernel[0] * c.kernel[1]
    return {"out": c.C // c.groups * rs, "grad_input": c.K // c.groups * rs, "grad_weight": n * p * q,
            "grad_bias": n * p * q}


def judge(ours, cudnn, ref, dtype, length):
    """The conv criterion of the module docstring for one tensor: numbers relative to max |ref|, and 'ok'."""
    r = {"shape_ok": ours.shape == cudnn.shape and ours.dtype == cudnn.dtype,
         "layout_ok": memory_format_flags(ours) == memory_format_flags(cudnn)}
    if not r["shape_ok"]:
        return dict(r, ok=False, err=float("nan"), bound=float("nan"))
    ours64, cudnn64 = ours.double(), cudnn.double()
    r["finite"] = bool(torch.isfinite(ours64).all())
    if ref.numel() == 0:
        return dict(r, ok=r["layout_ok"], err=0.0, cudnn_err=0.0, bound=0.0, vs_cudnn=0.0, scale=0.0)
    scale = ref.abs().max().item()
    e_ours, e_cudnn = (ours64 - ref).abs().max().item(), (cudnn64 - ref).abs().max().item()
    bound = ACCURACY_FACTOR * e_cudnn + scale * (torch.finfo(dtype).eps + 2 * EPS32 * math.sqrt(max(length, 1)))
    rel = 1.0 / scale if scale > 0 else 1.0
    r.update(err=e_ours * rel, cudnn_err=e_cudnn * rel, bound=bound * rel,
             vs_cudnn=(ours64 - cudnn64).abs().max().item() * rel, scale=scale, sum_length=length)
    r["ok"] = r["layout_ok"] and r["finite"] and e_ours <= bound  # NaN fails
    return r


def tc_expected(c, dtype, channels_last, tc_on):
    """Whether ops_cuda.cpp should pick the tensor-core kernels for this problem (conv2d_tc_supported)."""
    return (tc_on and channels_last and dtype in (torch.float16, torch.bfloat16)
            and (c.C // c.groups) % 8 == 0 and (c.K // c.groups) % 8 == 0)


def run_conv_case(c, dtype, channels_last, tc_on, seed):
    kwargs = conv_kwargs(c)
    x, w, b = conv_tensors(c, dtype, channels_last, seed)
    grad_output = random_like(F.conv2d(x, w, b, **kwargs), seed + 1)
    ours = forward_backward(FC.conv2d, x, w, b, kwargs, grad_output)
    cudnn = forward_backward(F.conv2d, x, w, b, kwargs, grad_output)
    ref = float64_reference(x, w, b, kwargs, grad_output)
    lengths = sum_lengths(c, cudnn[0].shape)
    tensors = {name: judge(o, cu, r, dtype, lengths[name])
               for name, o, cu, r in zip(TENSOR_NAMES, ours, cudnn, ref)}
    ok = all(t["ok"] for t in tensors.values())
    return {"status": "PASS" if ok else "FAIL", "tensors": tensors,
            "tc_expected": tc_expected(c, dtype, channels_last, tc_on)}


# --- correctness: max_pool2d -----------------------------------------------------------------------------------

def first_difference(a, b):
    where = (a != b).nonzero()
    return where[0].tolist() if len(where) else None


def run_pool_case(c, dtype_name, channels_last, seed):
    dtype = dtype_of(dtype_name)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(c.N, c.C, c.H, c.W, generator=g).to("cuda", dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    kwargs = dict(kernel_size=c.kernel, stride=c.stride, padding=c.padding, dilation=c.dilation,
                  ceil_mode=c.ceil_mode)
    results, grad_output = [], None
    for fn in (F.max_pool2d, FC.max_pool2d):
        leaf = x.detach().requires_grad_()
        out, idx = fn(leaf, return_indices=True, **kwargs)
        grad_output = random_like(out, seed + 1) if grad_output is None else grad_output
        (grad,) = torch.autograd.grad(out, leaf, grad_output)
        results.append((out.detach(), idx, grad))
    (t_out, t_idx, t_grad), (f_out, f_idx, f_grad) = results
    shapes_ok = f_out.shape == t_out.shape and f_idx.shape == t_idx.shape and f_idx.dtype == torch.int64
    r = {"shape_ok": shapes_ok,
         "layout_ok": all(memory_format_flags(u) == memory_format_flags(v)
                          for u, v in ((f_out, t_out), (f_idx, t_idx), (f_grad, t_grad)))}
    if shapes_ok:
        tol = POOL_GRAD_TOL[dtype_name]
        diff = (f_grad.double() - t_grad.double()).abs()
        r.update(values_equal=torch.equal(f_out, t_out), indices_equal=torch.equal(f_idx, t_idx),
                 first_index_difference=first_difference(f_idx, t_idx),
                 grad_max_abs_diff=diff.max().item() if diff.numel() else 0.0,
                 grad_ok=bool((diff <= tol * (1 + t_grad.double().abs())).all()) and bool(torch.isfinite(f_grad).all()))
    ok = shapes_ok and r["layout_ok"] and r.get("values_equal") and r.get("indices_equal") and r.get("grad_ok")
    return dict(r, status="PASS" if ok else "FAIL")


# --- correctness: ResNet-18 ------------------------------------------------------------------------------------

def loss_and_grads(model, x, y, amp_dtype):
    """Loss and float64 copies of every parameter's gradient (loss scaled by 1024 under autocast, then unscaled)."""
    model.zero_grad(set_to_none=True)
    scale = 1024.0 if amp_dtype is not None else 1.0
    with torch.autocast("cuda", dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
        loss = F.cross_entropy(model(x), y)
    (loss * scale).backward()
    return loss.item(), {n: p.grad.detach().double() / scale for n, p in model.named_parameters()}


def run_resnet(channels_last, precision, batch=32):
    from fastconv.models import resnet18
    torch.manual_seed(0)
    model = resnet18(num_classes=10, stem="cifar").cuda().train()
    reference = fastconv.revert(copy.deepcopy(model))
    float64 = copy.deepcopy(reference).double()
    n_ours = sum(isinstance(m, fastconv.Conv2d) for m in model.modules())
    n_left = sum(isinstance(m, fastconv.Conv2d) for m in reference.modules())
    g = torch.Generator().manual_seed(5)
    x = torch.randn(batch, 3, 32, 32, generator=g).cuda()
    y = torch.randint(0, 10, (batch,), generator=g).cuda()
    if channels_last:
        for m in (model, reference, float64):
            m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    amp = torch.float16 if precision == "amp-f16" else None
    loss_f, grads_f = loss_and_grads(model, x, y, amp)
    loss_t, grads_t = loss_and_grads(reference, x, y, amp)
    loss_64, grads_64 = loss_and_grads(float64, x.double(), y, None)
    floor = RESNET_FLOOR[precision]
    rows = {"loss": (abs(loss_f - loss_64) / abs(loss_64), abs(loss_t - loss_64) / abs(loss_64))}
    vs_torch = 0.0
    for name, g64 in grads_64.items():
        norm = g64.norm().item() or 1.0
        rows[name] = ((grads_f[name] - g64).norm().item() / norm, (grads_t[name] - g64).norm().item() / norm)
        vs_torch = max(vs_torch, (grads_f[name] - grads_t[name]).norm().item() / (grads_t[name].norm().item() or 1.0))
    ratio = {k: e_f / (ACCURACY_FACTOR * e_t + floor) for k, (e_f, e_t) in rows.items()}
    worst = max(ratio, key=ratio.get)
    ok = n_ours == 20 and n_left == 0 and all(math.isfinite(v) and v <= 1 for v in ratio.values())
    return {"status": "PASS" if ok else "FAIL", "fastconv_convs": n_ours, "convs_left_after_revert": n_left,
            "floor": floor, "worst": worst, "worst_rel_err": rows[worst][0], "worst_torch_rel_err": rows[worst][1],
            "worst_over_bound": ratio[worst], "max_grad_rel_diff_vs_torch": vs_torch,
            "loss": {"fastconv": loss_f, "torch": loss_t, "float64": loss_64},
            "rel_err_fastconv_torch": {k: list(v) for k, v in rows.items()}}


# --- correctness: driver -----------------------------------------------------------------------------------------

def correctness_jobs(tc_on):
    """(description, thunk) pairs, in the order they run."""
    jobs, seed = [], 1000
    for dtype_name in ("f32", "f16", "bf16"):
        for cl in (False, True):
            for c in CONV_CASES:
                desc = {"kind": "conv", "name": c.name, "dtype": dtype_name,
                        "layout": "channels_last" if cl else "nchw"}
                jobs.append((desc, lambda c=c, d=dtype_name, cl=cl, s=seed:
                             run_conv_case(c, dtype_of(d), cl, tc_on, s)))
                seed += 7
    for dtype_name in ("f32", "f16", "bf16"):
        for cl in (False, True):
            for c in POOL_CASES:
                desc = {"kind": "max_pool2d", "name": c.name, "dtype": dtype_name,
                        "layout": "channels_last" if cl else "nchw"}
                jobs.append((desc, lambda c=c, d=dtype_name, cl=cl, s=seed: run_pool_case(c, d, cl, s)))
                seed += 7
    resnets = [("f32", False), ("f32", True), ("amp-f16", True)] if not tc_on else [("amp-f16", True)]
    for precision, cl in resnets:
        desc = {"kind": "resnet18", "name": "resnet18 cifar b32 fwd+bwd", "dtype": precision,
                "layout": "channels_last" if cl else "nchw"}
        jobs.append((desc, lambda p=precision, cl=cl: run_resnet(cl, p)))
    return jobs


def describe_conv(rec):
    parts = []
    for name, t in rec["tensors"].items():
        flags = ("" if t["layout_ok"] else " LAYOUT") + ("" if t.get("finite", True) else " NONFINITE")
        parts.append(f"{'' if t['ok'] else '!'}{name} {t['err']:.1e}/{t['bound']:.1e} "
                     f"(cuDNN {t.get('cudnn_err', math.nan):.1e}){flags}")
    return f"{' [TC]' if rec['tc_expected'] else ''} | err/bound vs fp64: " + ", ".join(parts)


def describe_pool(rec):
    indices = "=" if rec.get("indices_equal") else f"DIFFER at {rec.get('first_index_difference')}"
    return (f" | values {'=' if rec.get('values_equal') else 'DIFFER'}, indices {indices}, grad max|d| "
            f"{rec.get('grad_max_abs_diff', math.nan):.1e}, layout {'ok' if rec['layout_ok'] else 'DIFFERS'}")


def describe_resnet(rec):
    return (f" | worst {rec['worst']}: rel err {rec['worst_rel_err']:.1e} (torch {rec['worst_torch_rel_err']:.1e}, "
            f"{rec['worst_over_bound']:.2f} of the bound); grads vs torch {rec['max_grad_rel_diff_vs_torch']:.1e}")


def describe(rec):
    """One line per case: status, setting, and the numbers behind the verdict."""
    head = f"{rec['status']:<5} tc={rec['tc']} {rec['dtype']:<7} {rec['layout']:<13} {rec['kind']:<10} {rec['name']}"
    if rec.get("error"):
        return f"{head} | {rec['error']}"
    return head + {"conv": describe_conv, "max_pool2d": describe_pool, "resnet18": describe_resnet}[rec["kind"]](rec)


def run_jobs(jobs, tc_label, deadline):
    """Runs jobs until the deadline; returns (records, number not run, context lost?)."""
    records = []
    for i, (desc, thunk) in enumerate(jobs):
        if time.time() > deadline:
            say(f"time limit reached: {len(jobs) - i} case(s) not run")
            return records, len(jobs) - i, False
        rec = dict(desc, tc=tc_label)
        t0 = time.time()
        try:
            rec.update(thunk())
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - a failing case is a result, not the end of the run
            rec.update(status="FAIL", error=short_error(exc))
        rec["seconds"] = round(time.time() - t0, 3)
        records.append(rec)
        say(describe(rec))
        if rec.get("error") and not context_alive():
            say("CUDA context lost after this case: stopping this run (the remaining cases would fail for no reason)")
            return records, len(jobs) - i - 1, True
    return records, 0, False


def correctness_one_setting(args):
    tc_on = args.tensor_cores == "1"
    set_tensor_cores(tc_on)
    load()
    set_tf32(False)
    deadline = args.deadline if args.deadline else time.time() + args.time_limit
    say(f"correctness, FASTCONV_TENSOR_CORES={args.tensor_cores}: {machine()}")
    records, not_run, lost = run_jobs(correctness_jobs(tc_on), args.tensor_cores, deadline)
    failed = sum(r["status"] != "PASS" for r in records)
    data = {"machine": machine(), "tensor_cores": args.tensor_cores, "records": records, "not_run": not_run,
            "context_lost": lost, "passed": len(records) - failed, "failed": failed}
    write_json(args.out, data)
    say(f"tc={args.tensor_cores}: {len(records) - failed}/{len(records)} passed, {failed} failed, {not_run} not run"
        + ("; CUDA CONTEXT LOST" if lost else ""))
    if lost:
        return CONTEXT_LOST
    return FAILED if failed else (INCOMPLETE if not_run else PASSED)


def correctness_both(args):
    """Runs FASTCONV_TENSOR_CORES=0 and =1 in subprocesses of their own, each with half of the time left."""
    load()  # exits with 2 here already where there is no GPU
    end = time.time() + args.time_limit
    parts = {}
    for i, tc in enumerate(("0", "1")):
        deadline = time.time() + (end - time.time()) / (2 - i)
        part = re.sub(r"\.json$", "", args.out) + f".tc{tc}.json"
        if os.path.exists(part):
            os.remove(part)
        cmd = [sys.executable, os.path.abspath(__file__), "correctness", "--tensor-cores", tc, "--out", part,
               "--deadline", repr(deadline)]
        try:
            rc = subprocess.run(cmd, env=dict(os.environ, FASTCONV_TENSOR_CORES=tc),
                                timeout=max(deadline - time.time(), 1) + 45).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        try:
            with open(part) as f:
                parts[tc] = json.load(f)
        except (OSError, ValueError):
            parts[tc] = {"records": [], "passed": 0, "failed": 0, "not_run": None, "error": "no results written"}
        parts[tc]["exit_code"] = rc
    return finish_correctness(args.out, parts)


def finish_correctness(out, parts):
    summary, status = [], PASSED
    for tc, p in parts.items():
        rc = p["exit_code"]
        summary.append(f"tc={tc}: {p['passed']} passed, {p['failed']} failed, {p['not_run']} not run"
                       + (f", child exit {rc}" if rc not in (0, 1, 4) else ""))
        if p["failed"] or rc not in (0, 4):
            status = FAILED
        elif rc == 4 and status == PASSED:
            status = INCOMPLETE
    tc_cases = sum(1 for r in parts.get("1", {}).get("records", []) if r.get("tc_expected"))
    line = "SUMMARY correctness: " + "; ".join(summary) + f"; {tc_cases} conv cases expected on tensor cores (tc=1)"
    failures = [describe(r) for p in parts.values() for r in p.get("records", []) if r["status"] != "PASS"]
    write_json(out, {"criteria": doc_section("correctness"), "runs": parts,
                     "summary": line, "failures": failures})
    for f in failures[:40]:
        say("  " + f)
    say(line)
    return status


def cmd_correctness(args):
    if args.tensor_cores == "both":
        return correctness_both(args)
    return correctness_one_setting(args)


# --- sanitizer -------------------------------------------------------------------------------------------------

SANITIZER_CONVS = [
    conv("16->16 @8x8 (tensor-core shape)", 2, 16, 16, 8, 8, 3, 1, 1),
    conv("16->136 s2 (two 128-column tiles)", 2, 16, 136, 5, 6, 3, 2, 1),
    conv("groups 2 dilation 2", 2, 32, 32, 7, 9, 3, 1, 2, d=2, g=2, bias=False),
    conv("8->8 @24x24 (split-K grad_weight)", 2, 8, 8, 24, 24, 3, 1, 1),
    conv("depthwise 8", 2, 8, 8, 9, 7, 3, 1, 1, g=8),
    conv("3->5 kernel 2x3 s(2,1)", 1, 3, 5, 7, 6, (2, 3), (2, 1), (1, 0)),
]
SANITIZER_POOLS = [pool("3x3 s2 p1", 2, 8, 9, 7, 3, 2, 1), pool("2x2 s1 d2 ceil", 2, 5, 8, 9, 2, 1, 0, d=2, ceil=True)]


def misaligned(t):
    """t's values in a tensor of the same sizes and strides whose data starts one element past t's alignment."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = buf[1:].as_strided(t.shape, t.stride())
    view.copy_(t)
    return view


def sanity(got, want, tol):
    scale = want.abs().max().item() or 1.0
    return bool(torch.isfinite(got).all()) and (got.cpu().double() - want).abs().max().item() <= tol * scale


def sanitizer_conv(c, mode, channels_last, shifted, tc_on, seed):
    set_tensor_cores(tc_on)
    set_tf32(mode == "tf32")
    kwargs = conv_kwargs(c)
    x, w, b = conv_tensors(c, dtype_of(mode), channels_last, seed)
    if shifted:
        x = misaligned(x)
    out = FC.conv2d(x, w, b, **kwargs)
    grad_output = random_like(out, seed + 1)
    got = forward_backward(FC.conv2d, x, w, b, kwargs, grad_output)
    want = float64_reference(x, w, b, kwargs, grad_output, device="cpu")
    return all(sanity(g, r, SANITY_TOL[mode]) for g, r in zip(got, want))


def sanitizer_pool(c, mode, channels_last, seed):
    x = torch.randn(c.N, c.C, c.H, c.W, generator=torch.Generator().manual_seed(seed)).to("cuda", dtype_of(mode))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    kwargs = dict(kernel_size=c.kernel, stride=c.stride, padding=c.padding, dilation=c.dilation, ceil_mode=c.ceil_mode)
    leaf = x.detach().requires_grad_()
    out, idx = FC.max_pool2d(leaf, return_indices=True, **kwargs)
    grad_output = random_like(out, seed + 1)
    (grad,) = torch.autograd.grad(out, leaf, grad_output)
    cpu_leaf = x.detach().cpu().double().requires_grad_()
    e_out, e_idx = F.max_pool2d(cpu_leaf, return_indices=True, **kwargs)
    (e_grad,) = torch.autograd.grad(e_out, cpu_leaf, grad_output.cpu().double())
    return (torch.equal(out.detach().cpu().double(), e_out.detach()) and torch.equal(idx.cpu(), e_idx)
            and sanity(grad, e_grad, SANITY_TOL[mode]))


def sanitizer_jobs():
    """(label, thunk) pairs; each thunk returns whether the results are sane."""
    jobs = []
    for tc_on in (False, True):
        for mode in ("f32", "f16", "bf16") + (("tf32",) if tc_on else ()):
            for cl in (False, True):
                for i, c in enumerate(SANITIZER_CONVS):
                    for shifted in ((False, True) if i == 0 else (False,)):
                        label = (f"conv tc={int(tc_on)} {mode} {'cl' if cl else 'nchw'} {c.name}"
                                 + (" misaligned" if shifted else ""))
                        jobs.append((label, lambda c=c, m=mode, cl=cl, sh=shifted, t=tc_on, s=len(jobs):
                                     sanitizer_conv(c, m, cl, sh, t, s)))
    for mode in ("f32", "f16", "bf16"):
        for cl in (False, True):
            for c in SANITIZER_POOLS:
                jobs.append((f"max_pool2d {mode} {'cl' if cl else 'nchw'} {c.name}",
                             lambda c=c, m=mode, cl=cl, s=len(jobs): sanitizer_pool(c, m, cl, s)))
    return jobs


def cmd_sanitizer(args):
    load()
    jobs, bad = sanitizer_jobs(), []
    for i, (label, thunk) in enumerate(jobs):
        say(f"[{i + 1}/{len(jobs)}] {label}")  # names the case behind a sanitizer report that follows
        if not thunk():
            bad.append(label)
            say("  SANITY FAIL: results differ from torch on the CPU")
    torch.cuda.synchronize()
    set_tf32(False)
    say(f"sanitizer cases: {len(jobs) - len(bad)}/{len(jobs)} sane" + "".join(f"\n  not sane: {b}" for b in bad))
    return FAILED if bad else PASSED


# --- tensor cores ----------------------------------------------------------------------------------------------

TC_CONVS = [
    conv("64->64 3x3 @32 N8 (one column tile)", 8, 64, 64, 32, 32, 3, 1, 1),
    conv("128->256 3x3 @16 N32 (two column tiles)", 32, 128, 256, 16, 16, 3, 1, 1),
    conv("64->256 1x1 @28 N16", 16, 64, 256, 28, 28, 1, 1, 0, bias=False),
    conv("128->256 3x3 s2 @16 N16", 16, 128, 256, 16, 16, 3, 2, 1),
    conv("40->136 3x3 @15x17 N4 (ragged tiles)", 4, 40, 136, 15, 17, 3, 1, 1),
    conv("64->128 groups 2 dilation 2 @20 N8", 8, 64, 128, 20, 20, 3, 1, 2, d=2, g=2),
    conv("256->512 3x3 s2 @8 N64 (split-K grad_weight)", 64, 256, 512, 8, 8, 3, 2, 1),
]


def cuda_kernel_names(prof):
    """Names of the GPU kernels (and memcpy / memset) a torch.profiler run recorded."""
    events = list(prof.events())
    names = [e.name for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
    return names or [e.name for e in events]  # (a profiler that labels devices differently: keep everything)


def profiled(fn):
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        result = fn()
        torch.cuda.synchronize()
    return result, cuda_kernel_names(prof)


def short_kernel_name(name):
    name = re.sub(r"fastconv::cuda::|\(anonymous namespace\)::|tcgemm::|^void ", "", name)
    return name.split("(")[0][:160]


def kernel_evidence(names):
    """Which conv engines the recorded kernels belong to."""
    fastconv_names = sorted({short_kernel_name(n) for n in names if "fastconv" in n or "_conv_kernel" in n
                             or CUDA_CORE_KERNEL in n})
    return {"kernels": fastconv_names, "n_kernels_recorded": len(names),
            "tc_problems_seen": [p for _, p in TC_PROBLEMS if any(TC_KERNEL in n and p in n for n in names)],
            "igemm_launches": sum(CUDA_CORE_KERNEL in n for n in names),
            "tc_launches": sum(TC_KERNEL in n for n in names)}


def elementwise(got, want, mode, ref=None):
    """|got - want| <= tol * (|want| + max |want|) (+ |want - ref| where a float64 reference is given, so cuDNN's
    own error cannot fail fastconv); numbers relative to max |want|."""
    g, w = got.double(), want.double()
    scale = w.abs().max().item() if w.numel() else 0.0
    d = (g - w).abs()
    bound = ELEM_TOL[mode] * (w.abs() + scale) + (0 if ref is None else (w - ref).abs())
    ok = got.shape == want.shape and bool(torch.isfinite(g).all()) and bool((d <= bound).all())
    return {"ok": ok, "max_abs_diff_rel": d.max().item() / scale if scale else d.max().item(),
            "n_outside": int((d > bound).sum()), "layout_ok": memory_format_flags(got) == memory_format_flags(want)}


def rel_norm(got, ref):
    return (got.double() - ref).norm().item() / max(ref.norm().item(), 1e-30)


def run_tc_case(c, mode, seed):
    set_tensor_cores(True)
    set_tf32(mode == "tf32")
    kwargs = conv_kwargs(c)
    x, w, b = conv_tensors(c, dtype_of(mode), True, seed)
    grad_output = random_like(F.conv2d(x, w, b, **kwargs), seed + 1)
    cudnn = forward_backward(F.conv2d, x, w, b, kwargs, grad_output)
    ref = float64_reference(x, w, b, kwargs, grad_output)
    ours, names = profiled(lambda: raw_passes(c, x, w, b, grad_output))
    ours = ours if b is not None else ours[:3]
    via_autograd = forward_backward(FC.conv2d, x, w, b, kwargs, grad_output)
    tensors = {}
    for name, o, cu, r in zip(TENSOR_NAMES, ours, cudnn, ref):
        tensors[name] = dict(elementwise(o, cu, mode, r), rel_err_vs_fp64=rel_norm(o, r),
                             cudnn_rel_err_vs_fp64=rel_norm(cu, r))
        tensors[name]["ok"] = tensors[name]["ok"] and tensors[name]["rel_err_vs_fp64"] <= TC_REL[mode]
    evidence = kernel_evidence(names)
    proof = len(evidence["tc_problems_seen"]) == 3 and evidence["igemm_launches"] == 0
    ok = proof and all(t["ok"] and t["layout_ok"] for t in tensors.values())
    return {"status": "PASS" if ok else "FAIL", "tensor_core_kernels_proven": proof, "kernel_evidence": evidence,
            "tensors": tensors, "autograd_equals_raw_ops": all(torch.equal(u, v) for u, v in zip(ours, via_autograd))}


def run_tc_control():
    """The same kind of call with FASTCONV_TENSOR_CORES=0 must show the CUDA-core engine and no tensor-core kernel."""
    c = TC_CONVS[0]
    set_tf32(False)
    set_tensor_cores(False)
    try:
        x, w, b = conv_tensors(c, torch.float16, True, 7)
        grad_output = random_like(F.conv2d(x, w, b, **conv_kwargs(c)), 8)
        _, names = profiled(lambda: raw_passes(c, x, w, b, grad_output))
    finally:
        set_tensor_cores(True)
    evidence = kernel_evidence(names)
    ok = evidence["igemm_launches"] >= 3 and evidence["tc_launches"] == 0
    return {"status": "PASS" if ok else "FAIL", "kernel_evidence": evidence}


STREAM_GRAPH_CASE = conv("32->64 3x3 @16 N4", 4, 32, 64, 16, 16, 3, 1, 1)


def compare_all(got, want, mode):
    checks = {name: elementwise(g, w, mode) for name, g, w in zip(TENSOR_NAMES, got, want)}
    return all(v["ok"] and v["layout_ok"] for v in checks.values()), checks


def run_graph_check(mode, channels_last, tc_on):
    """Captures the four ops in a CUDA graph, then replays it on new inputs copied into the captured tensors."""
    set_tensor_cores(tc_on)
    set_tf32(mode == "tf32")
    c, kwargs = STREAM_GRAPH_CASE, conv_kwargs(STREAM_GRAPH_CASE)
    x, w, b = conv_tensors(c, dtype_of(mode), channels_last, 31)
    grad_output = random_like(F.conv2d(x, w, b, **kwargs), 32)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture, as torch's docs ask
        for _ in range(2):
            raw_passes(c, x, w, b, grad_output)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = raw_passes(c, x, w, b, grad_output)
    results = []
    for trial in range(2):
        x.copy_(conv_tensors(c, dtype_of(mode), channels_last, 40 + trial)[0])
        grad_output.copy_(random_like(grad_output, 50 + trial))
        graph.replay()
        torch.cuda.synchronize()
        results.append(compare_all(static, forward_backward(F.conv2d, x, w, b, kwargs, grad_output), mode))
    return {"status": "PASS" if all(ok for ok, _ in results) else "FAIL", "replays": [r for _, r in results]}


def run_stream_check(mode, channels_last, tc_on):
    """The ops on a non-default stream, right behind a delayed copy of their input on that stream: a kernel
    launched on another stream would read the input before the copy lands."""
    set_tensor_cores(tc_on)
    set_tf32(mode == "tf32")
    c, kwargs = STREAM_GRAPH_CASE, conv_kwargs(STREAM_GRAPH_CASE)
    source, w, b = conv_tensors(c, dtype_of(mode), channels_last, 61)
    grad_output = random_like(F.conv2d(source, w, b, **kwargs), 62)
    want = forward_backward(F.conv2d, source, w, b, kwargs, grad_output)
    x = torch.zeros_like(source)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        if hasattr(torch.cuda, "_sleep"):
            torch.cuda._sleep(50_000_000)  # ~30 ms of spinning on this stream before the input is written
        x.copy_(source)
        got = raw_passes(c, x, w, b, grad_output)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    ok, checks = compare_all(got, want, mode)
    return {"status": "PASS" if ok else "FAIL", "tensors": checks, "delayed_producer": hasattr(torch.cuda, "_sleep")}


def run_autocast_check(amp_name, channels_last, tc_on):
    """torch.autocast on a fastconv.Conv2d vs a torch.nn.Conv2d holding the same parameters."""
    set_tensor_cores(tc_on)
    set_tf32(False)
    amp = dtype_of(amp_name)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(3)
    ours = fastconv.Conv2d(32, 64, 3, padding=1).cuda().to(memory_format=fmt)
    theirs = torch.nn.Conv2d(32, 64, 3, padding=1).cuda().to(memory_format=fmt)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(8, 32, 16, 16, device="cuda").contiguous(memory_format=fmt)
    grad_output = torch.randn(8, 64, 16, 16, device="cuda").to(amp).contiguous(memory_format=fmt)

    def step(layer):
        leaf = x.detach().requires_grad_()
        with torch.autocast("cuda", dtype=amp):
            y = layer(leaf)
        return [y.detach(), *torch.autograd.grad(y, [leaf, layer.weight, layer.bias], grad_output)]

    want = step(theirs)
    got, names = profiled(lambda: step(ours))
    dtypes_ok = got[0].dtype == want[0].dtype == amp and all(g.dtype == v.dtype for g, v in zip(got, want))
    ok, checks = compare_all(got, want, amp_name)
    evidence = kernel_evidence(names)
    tc_ok = evidence["tc_launches"] >= 3 if (tc_on and channels_last) else evidence["tc_launches"] == 0
    return {"status": "PASS" if ok and dtypes_ok and tc_ok else "FAIL", "dtypes_ok": dtypes_ok,
            "tensor_core_kernels_as_expected": tc_ok, "kernel_evidence": evidence, "tensors": checks}


def tc_jobs():
    jobs, seed = [], 500
    for c in TC_CONVS:
        for mode in ("f16", "bf16", "tf32"):
            jobs.append(({"kind": "tc-conv", "name": c.name, "mode": mode},
                         lambda c=c, m=mode, s=seed: run_tc_case(c, m, s)))
            seed += 7
    jobs.append(({"kind": "tc-control", "name": "FASTCONV_TENSOR_CORES=0 shows igemm only", "mode": "f16"},
                 run_tc_control))
    settings = [("f32", False, False), ("f16", True, True), ("bf16", True, True)]
    for kind, fn in (("cuda-graph", run_graph_check), ("stream", run_stream_check)):
        for mode, cl, tc_on in settings:
            jobs.append(({"kind": kind, "name": f"{'cl' if cl else 'nchw'} tc={int(tc_on)}", "mode": mode},
                         lambda fn=fn, m=mode, cl=cl, t=tc_on: fn(m, cl, t)))
    for amp_name, cl, tc_on in (("f16", False, False), ("f16", True, True), ("bf16", True, True)):
        jobs.append(({"kind": "autocast", "name": f"{'cl' if cl else 'nchw'} tc={int(tc_on)}", "mode": amp_name},
                     lambda a=amp_name, cl=cl, t=tc_on: run_autocast_check(a, cl, t)))
    return jobs


def describe_tc(rec):
    head = f"{rec['status']:<5} {rec['kind']:<10} {rec['mode']:<4} {rec['name']}"
    if rec.get("error"):
        return f"{head} | {rec['error']}"
    parts = []
    if "kernel_evidence" in rec:
        ev = rec["kernel_evidence"]
        parts.append(f"tc launches {ev['tc_launches']} ({'/'.join(ev['tc_problems_seen']) or '-'}), igemm launches "
                     f"{ev['igemm_launches']}")
    checks = list(rec.get("tensors", {}).values()) + [t for r in rec.get("replays", []) for t in r.values()]
    if checks:
        worst = max(t["max_abs_diff_rel"] for t in checks)
        parts.append(f"max |d| vs cuDNN {worst:.1e} of max|cuDNN|")
    if rec["kind"] == "tc-conv" and "tensors" in rec:
        errors = ", ".join(f"{k} {t['rel_err_vs_fp64']:.1e}" for k, t in rec["tensors"].items())
        parts.append(f"rel err vs fp64 {errors}")
    return head + (" | " + "; ".join(parts) if parts else "")


def cmd_tensor_cores(args):
    set_tensor_cores(True)
    load()
    say(f"tensor cores: {machine()}")
    records = []
    for desc, thunk in tc_jobs():
        rec = dict(desc)
        t0 = time.time()
        try:
            rec.update(thunk())
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001
            rec.update(status="FAIL", error=short_error(exc))
        rec["seconds"] = round(time.time() - t0, 3)
        records.append(rec)
        say(describe_tc(rec))
        if rec.get("error") and not context_alive():
            say("CUDA context lost: stopping")
            break
    set_tensor_cores(True)
    failed = [r for r in records if r["status"] != "PASS"]
    proven = sum(bool(r.get("tensor_core_kernels_proven")) for r in records)
    n_conv = sum(r["kind"] == "tc-conv" for r in records)
    line = (f"SUMMARY tensor-cores: {len(records) - len(failed)}/{len(records)} passed; tensor-core kernels proven in "
            f"{proven}/{n_conv} conv cases (each: TcFwd, TcBwdIn, TcWgrad launched, no igemm_kernel)")
    write_json(args.out, {"machine": machine(), "records": records, "summary": line,
                          "criteria": doc_section("tensor-cores")})
    say(line)
    if len(records) < len(tc_jobs()):
        return CONTEXT_LOST
    return FAILED if failed else PASSED


def cmd_tc_probe(args):
    """One fp16 channels_last call of each tensor-core kernel and nothing else of note (for ncu's metrics)."""
    set_tensor_cores(True)
    load()
    set_tf32(False)
    c = conv("probe 64->128 @16 N8", 8, 64, 128, 16, 16, 3, 1, 1)
    x, w, b = conv_tensors(c, torch.float16, True, 1)
    args_ = (list(c.stride), [1, 1, 1, 1], list(c.dilation), c.groups)
    out = ops.conv2d(x, w, b, *args_)
    grad_output = random_like(out, 2)
    ops.conv2d_grad_input(grad_output, x, w, *args_)
    ops.conv2d_grad_weight(grad_output, x, w, *args_)
    torch.cuda.synchronize()
    say("tc-probe: ran conv2d, conv2d_grad_input, conv2d_grad_weight once each (fp16, channels_last, "
        "FASTCONV_TENSOR_CORES=1)")
    return PASSED


# --- main ------------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("correctness", "sanitizer", "tensor-cores", "tc-probe"))
    ap.add_argument("--out", help="JSON results (default: $OUT/<command>.json)")
    ap.add_argument("--time-limit", type=float, default=150.0, help="correctness: seconds for the whole run")
    ap.add_argument("--tensor-cores", choices=("both", "0", "1"), default="both",
                    help="correctness: FASTCONV_TENSOR_CORES setting(s); 'both' runs 0 and 1 in subprocesses")
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # absolute time, from the 'both' parent
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(os.environ.get("OUT") or ".", args.command.replace("-", "_") + ".json")
    return args


def main(argv=None):
    args = parse_args(argv)
    commands = {"correctness": cmd_correctness, "sanitizer": cmd_sanitizer, "tensor-cores": cmd_tensor_cores,
                "tc-probe": cmd_tc_probe}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
