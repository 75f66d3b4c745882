"""Differential fuzzing of fastconv.functional against torch.nn.functional: random conv2d and max_pool2d calls
over every argument form, memory layout, dtype and invalid argument. Run by tests/kernels/test_fuzz.py as a subprocess,
so that a crash (a signal) fails the test with the case that caused it named instead of killing pytest:

    python tests/helpers/fuzz_cases.py --seed 0 --start 0 --count 2000

Each case prints `CASE <index> <description>` before it runs; a disagreement prints `FAIL <index> <what>`.
The last line is `DONE <cases> <failures>`. A case is a function of (seed, index) alone, so
`--start I --count 1` replays case I.

What is compared, per case:
- where torch raises, fastconv raises an exception of the same type (TypeError, ValueError, RuntimeError,
  NotImplementedError); where torch returns, fastconv returns;
- the output's shape, dtype and memory layout; its values, and the gradient of every input (input, weight,
  bias), against a reference: torch's own result on float64 contiguous copies of the same tensors (torch 2.13's
  float64 conv on some channels_last-strided grouped inputs returns a wrong weight gradient, see
  test_fuzz.py: its result on such inputs is not the reference);
- max_pool2d's indices exactly, and its gradient;
- the inputs are unchanged afterwards.
"""
import argparse
import os
import re
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

import fastconv
import fastconv.functional as FC

ISAS = [isa for isa in ("scalar", "avx2", "avx512") if isa == "scalar" or isa in fastconv.cpu_info()[1]]
DTYPES = (torch.float32, torch.float64)
LAYOUTS = ("contiguous", "channels_last", "sliced", "transposed", "cl_unbatched_view")


# --- tensors in every layout ------------------------------------------------------------------------------

def make_tensor(shape, dtype, layout, gen):
    """A tensor of `shape` whose values come from `gen`, stored in `layout` (a 3-D shape is an unbatched input;
    'cl_unbatched_view' makes it a slice of a channels_last batch, whose strides are channels_last once a
    batch dimension is added back)."""
    def randn(*s):
        return torch.randn(*s, dtype=dtype, generator=gen)

    if layout == "channels_last" and len(shape) == 4:
        return randn(*shape).contiguous(memory_format=torch.channels_last)
    if layout == "cl_unbatched_view" and len(shape) == 3:
        return randn(2, *shape).contiguous(memory_format=torch.channels_last)[1]
    if layout == "cl_unbatched_view" and len(shape) == 4:
        return randn(shape[0] + 1, *shape[1:]).contiguous(memory_format=torch.channels_last)[1:]
    if layout == "transposed" and len(shape) >= 2:
        return randn(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)
    if layout == "sliced" and len(shape) >= 3:
        big = list(shape)
        big[-3] *= 2
        big[-1] += 2
        return randn(*big)[..., ::2, :, 1:shape[-1] + 1]
    return randn(*shape)


# --- argument forms ---------------------------------------------------------------------------------------

def int_form(rng, value):
    """`value` as an int or one of the other forms torch accepts for one (numpy integers, integer tensors,
    torch.Size included)."""
    return rng.choice([value, value, value, (value,), [value], (value, value), [value, value], np.int64(value),
                       (np.int32(value), value), torch.tensor(value), torch.Size([value, value])])


def pair_form(rng, a, b):
    return int_form(rng, a) if a == b else rng.choice([(a, b), [a, b]])


def bad_int(rng):
    """A value torch refuses where an int (or a tuple of them) is expected, and the exception it raises."""
    return rng.choice([1.5, 0.5, 2.0, True, None, "1", (1.5, 1), (True, 1), (1, 2, 3), [], 2**63, -(2**63) - 1,
                       torch.tensor(2.0), torch.tensor([1, 1])])


# --- conv2d -----------------------------------------------------------------------------------------------

def random_conv(rng, gen):
    dtype = rng.choice(DTYPES)
    kind = rng.choice(["one", "one", "groups", "depthwise"])
    if kind == "one":
        groups, C, K = 1, rng.randint(1, 6), rng.randint(1, 7)
    elif kind == "groups":
        groups = rng.randint(2, 4)
        C, K = groups * rng.randint(1, 4), groups * rng.randint(1, 3)
    else:
        groups = rng.randint(1, 6)
        C, K = groups, groups * rng.randint(1, 3)
    if rng.random() < 0.02:
        C = 0  # zero input channels: torch answers (N, 0, P, Q)
    R, S = rng.randint(1, 4), rng.randint(1, 4)
    dh, dw = rng.choice([(1, 1), (1, 1), (1, 1), (2, 2), (1, 2), (3, 1)])
    pad_kind = rng.choice(["int", "pair", "same", "valid"])
    sh, sw = (1, 1) if pad_kind == "same" else (rng.randint(1, 3), rng.randint(1, 3))
    ph, pw = (rng.randint(0, 2), rng.randint(0, 3)) if pad_kind in ("int", "pair") else (0, 0)
    if pad_kind == "int":
        pw = ph
    H = max(rng.randint(1, 11), dh * (R - 1) + 1 - 2 * ph, 1)
    W = max(rng.randint(1, 11), dw * (S - 1) + 1 - 2 * pw, 1)
    batch = rng.choice(["unbatched", 0, 1, 1, 2, 3, 4])
    xshape = (C, H, W) if batch == "unbatched" else (batch, C, H, W)
    x = make_tensor(xshape, dtype, rng.choice(LAYOUTS), gen)
    w = make_tensor((K, C // groups if groups else C, R, S), dtype, rng.choice(LAYOUTS), gen)
    b = make_tensor((K,), dtype, "contiguous", gen) if rng.random() < 0.6 else None
    kwargs = dict(stride=pair_form(rng, sh, sw), dilation=pair_form(rng, dh, dw), groups=groups,
                  padding=pad_kind if pad_kind in ("same", "valid") else pair_form(rng, ph, pw))
    for name in rng.sample(list(kwargs), rng.randint(0, 4)):  # the default, left out
        if type(kwargs[name]) in (int, str, tuple, list) and kwargs[name] in (1, 0, (1, 1), [1, 1], "valid"):
            del kwargs[name]
    if rng.random() < 0.25:
        x, w, b, kwargs = corrupt_conv(rng, x, w, b, kwargs)
    return x, w, b, kwargs


def corrupt_conv(rng, x, w, b, kwargs):
    """One invalid (or edge) argument: torch raises for most, and we must raise exactly when torch does."""
    kwargs = dict(kwargs)
    what = rng.choice(["bad_int", "zero", "negative", "huge", "groups", "bias", "dtype", "dims", "same_strided",
                       "padding_str", "kernel_too_big"])
    if what == "bad_int":
        kwargs[rng.choice(["stride", "padding", "dilation", "groups"])] = bad_int(rng)
    elif what == "zero":
        kwargs[rng.choice(["stride", "dilation", "groups"])] = 0
    elif what == "negative":
        kwargs[rng.choice(["stride", "padding", "dilation", "groups"])] = rng.choice([-1, (1, -2)])
    elif what == "huge":
        kwargs[rng.choice(["stride", "padding", "dilation"])] = rng.choice(
            [2**31, 2**40, 2**61, 2**62 - 1, 2**62, 2**63 - 1, (1, 2**62)])
        if rng.random() < 0.5:
            kwargs[rng.choice(["padding", "dilation"])] = 2**62
    elif what == "groups":
        kwargs["groups"] = rng.choice([2, 3, 5, 7])
    elif what == "bias":
        b = rng.choice([torch.zeros(w.shape[0] + 1, dtype=x.dtype), torch.zeros(w.shape[0], 1, dtype=x.dtype),
                        torch.zeros(w.shape[0], dtype=torch.float16), [0.0] * w.shape[0]])
    elif what == "dtype":
        w = w.to(torch.float64 if w.dtype == torch.float32 else torch.float32)
    elif what == "dims":
        x = rng.choice([x[0] if x.dim() == 4 and x.shape[0] > 0 else x.unsqueeze(0), x.reshape(-1), w[0]])
    elif what == "same_strided":
        kwargs["padding"], kwargs["stride"] = "same", 2
    elif what == "padding_str":
        kwargs["padding"] = rng.choice(["SAME", "full", ""])
    else:
        kwargs["padding"], kwargs["dilation"] = 0, 9
    return x, w, b, kwargs


def torch_skipped_a_check(x, w, b, kwargs, our_error):
    """Where torch returns and we raise, whether that is torch's check missing, not ours wrong:
    - a size computed from huge arguments overflows int64 (or a 'same' padding passes torch's own limit for
      explicit ones): torch goes on with the wrapped value;
    - an empty input: torch validates no argument at all (dilation 0 passes), so the same call on one image
      (with the input channels the weight wants) must make torch raise."""
    if "overflows int64" in str(our_error) or "expected padding to be at most" in str(our_error):
        return True
    if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor) or x.numel() > 0 or x.dim() < 3:
        return False
    groups = kwargs.get("groups", 1)
    channels = w.shape[1] * groups if isinstance(groups, int) and w.dim() == 4 and w.shape[1] > 0 else max(x.shape[-3], 1)
    one_image = torch.randn(1, channels, max(x.shape[-2], 1), max(x.shape[-1], 1), dtype=x.dtype)
    _, error = call(F.conv2d, one_image, w, b, **kwargs)
    return error is not None


def torch_safe(t):
    """A contiguous copy of t: torch 2.13's conv2d segfaults on some channels_last inputs (a 3x2x1 map, weight
    1x3x3x1, padding (2, 3), dilation (1, 2), stride (1, 2), one thread). The layout torch would give the
    result is checked by its rule instead (expected_layout)."""
    return t.contiguous() if isinstance(t, torch.Tensor) else t


def expected_layout(x, w, out):
    """torch's rule for conv2d's result: channels_last when the (batched) input or the weight is."""
    xb = x if x.dim() == 4 else x.unsqueeze(0)
    channels_last = torch.channels_last in (suggest_memory_format(xb), suggest_memory_format(w))
    shape = out.shape if out.dim() == 4 else (1, *out.shape)
    like = torch.empty(shape).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return layout_flags(like if out.dim() == 4 else like.squeeze(0))


def huge_arguments(kwargs):
    return any(abs(v) >= 2**16 for v in _ints_deep(kwargs.values()))


def _ints_deep(values):
    for v in values:
        if isinstance(v, (tuple, list)):
            yield from _ints_deep(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            yield v


def run_conv_huge(x, w, b, kwargs):
    """Arguments of 2^16 and more: torch 2.13 itself may crash on them (a segfault with padding=2**61 on one
    thread), so it is not called. fastconv must raise RuntimeError or ValueError, or return the right answer,
    checked tap by tap with exact integer index math where the output is small."""
    ours, our_error = call(FC.conv2d, x, w, b, **kwargs)
    if our_error is not None:
        return None if isinstance(our_error, (RuntimeError, ValueError)) else f"raised {type(our_error).__name__}"
    ref = tap_by_tap_conv(x, w, b, kwargs)
    if ref is None:
        return None
    if ours.shape != ref.shape or not close(ours, ref, x.dtype, ref):
        return f"huge-argument conv: ours {list(ours.shape)}, reference {list(ref.shape)}"
    return None


def tap_by_tap_conv(x, w, b, kwargs):
    """float64 conv2d for arguments of any size (Python integers do the index math), or None when the output
    is too big to check this way or an argument is not a plain int / pair."""
    try:
        sh, sw = _pair_of_ints(kwargs.get("stride", 1))
        dh, dw = _pair_of_ints(kwargs.get("dilation", 1))
        groups = kwargs.get("groups", 1)
        padding = kwargs.get("padding", 0)
    except ValueError:
        return None
    batched = x.dim() == 4
    xb = (x if batched else x.unsqueeze(0)).double()
    N, C, H, W = xb.shape
    K, Cg, R, S = w.shape
    if padding == "valid":
        pt = pl = pb = pr = 0
    elif padding == "same":
        total_h, total_w = dh * (R - 1), dw * (S - 1)
        pt, pl = total_h // 2, total_w // 2
        pb, pr = total_h - pt, total_w - pl
    else:
        try:
            pt, pl = _pair_of_ints(padding)
        except ValueError:
            return None
        pb, pr = pt, pl
    P = (H + pt + pb - dh * (R - 1) - 1) // sh + 1
    Q = (W + pl + pr - dw * (S - 1) - 1) // sw + 1
    if P <= 0 or Q <= 0 or N * K * P * Q > 100_000:
        return None
    out = torch.zeros(N, K, P, Q, dtype=torch.float64)
    if b is not None:
        out += b.double().view(1, K, 1, 1)
    Kg = K // groups
    for r in range(R):
        rows = [(p, p * sh - pt + r * dh) for p in range(P)]
        rows = [(p, h) for p, h in rows if 0 <= h < H]
        for s in range(S):
            cols = [(q, q * sw - pl + s * dw) for q in range(Q)]
            cols = [(q, c) for q, c in cols if 0 <= c < W]
            if not rows or not cols:
                continue
            ps, hs = zip(*rows)
            qs, ws = zip(*cols)
            patch = xb[:, :, list(hs)][:, :, :, list(ws)]  # N, C, |rows|, |cols|
            for g in range(groups):
                tap = torch.einsum("kc,nchw->nkhw", w[g * Kg:(g + 1) * Kg, :, r, s].double(),
                                   patch[:, g * Cg:(g + 1) * Cg])
                out[:, g * Kg:(g + 1) * Kg, list(ps)[0]:list(ps)[-1] + 1, list(qs)[0]:list(qs)[-1] + 1] += tap
    if C == 0:
        out = out.narrow(1, 0, 0)  # torch's shape for a conv over zero input channels
    return out if batched else out.squeeze(0)


def _pair_of_ints(value):
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or len(values) not in (1, 2):
        raise ValueError(value)
    return (values[0], values[-1])


def conv_reference(x, w, b, kwargs, grad_out):
    """torch's conv2d and gradients on float64 contiguous copies."""
    xr = x.detach().double().contiguous().requires_grad_()
    wr = w.detach().double().contiguous().requires_grad_()
    br = None if b is None else b.detach().double().requires_grad_()
    y = F.conv2d(xr, wr, br, **kwargs)
    grads = torch.autograd.grad(y, [t for t in (xr, wr, br) if t is not None], grad_out.double(), allow_unused=True)
    return y, grads


# --- max_pool2d -------------------------------------------------------------------------------------------

def random_pool(rng, gen):
    dtype = rng.choice(DTYPES)
    kh, kw = rng.randint(1, 4), rng.randint(1, 4)
    dh, dw = rng.choice([(1, 1), (1, 1), (2, 2), (1, 3)])
    ph, pw = rng.randint(0, kh // 2), rng.randint(0, kw // 2)
    H = max(rng.randint(1, 12), dh * (kh - 1) + 1 - 2 * ph)
    W = max(rng.randint(1, 12), dw * (kw - 1) + 1 - 2 * pw)
    C = rng.randint(1, 20)
    batch = rng.choice(["unbatched", 0, 1, 2, 3])
    shape = (C, H, W) if batch == "unbatched" else (batch, C, H, W)
    x = make_tensor(shape, dtype, rng.choice(LAYOUTS), gen)
    kwargs = dict(kernel_size=pair_form(rng, kh, kw), padding=pair_form(rng, ph, pw),
                  dilation=pair_form(rng, dh, dw), ceil_mode=rng.random() < 0.4,
                  return_indices=rng.random() < 0.5)
    stride_kind = rng.choice(["none", "absent", "empty", "value"])
    if stride_kind == "none":
        kwargs["stride"] = None
    elif stride_kind == "empty":
        kwargs["stride"] = rng.choice([(), []])
    elif stride_kind == "value":
        kwargs["stride"] = pair_form(rng, rng.randint(1, 3), rng.randint(1, 3))
    if rng.random() < 0.25:
        what = rng.choice(["bad_int", "zero", "negative", "huge", "pad", "ceil", "dims", "dtype"])
        name = rng.choice(["kernel_size", "stride", "padding", "dilation"])
        if what == "bad_int":
            kwargs[name] = bad_int(rng)
        elif what == "zero":
            kwargs[name] = 0
        elif what == "negative":
            kwargs[name] = -1
        elif what == "huge":
            kwargs[name] = rng.choice([2**31 - 1, 2**31, 2**40, 2**62, 2**63])
        elif what == "pad":
            kwargs["padding"] = kh // 2 + 1
        elif what == "ceil":
            kwargs["ceil_mode"] = rng.choice([1, 0, 1.5, None])
        elif what == "dims":
            x = rng.choice([x.reshape(-1), x.reshape(1, 1, *x.shape) if x.numel() else x[None, None]])
        else:
            x = rng.choice([x.to(torch.int32), x > 0, x.to(torch.complex64)])
    return x, kwargs


def pool_window_exceeds_input(x, kwargs):
    """Exact (Python integer) output size of the pool is below one in some dimension."""
    def pair(v):
        return list(v) * (2 // len(v)) if isinstance(v, (tuple, list)) else [v, v]
    kernel, padding, dilation = pair(kwargs["kernel_size"]), pair(kwargs.get("padding", 0)), pair(kwargs.get("dilation", 1))
    return any(size + 2 * p - d * (k - 1) - 1 < 0 for size, k, p, d in zip(x.shape[-2:], kernel, padding, dilation))


def pool_grad_reference(x, kwargs, grad_out):
    """The gradient scattered to torch's indices. Not torch's backward: a window wholly in the padding (possible
    with dilation) has an index outside its plane, whose gradient torch 2.13's NCHW backward adds to the next
    plane's first element; it names no element of its own plane and gets no gradient here."""
    _, indices = F.max_pool2d(x, **{**kwargs, "return_indices": True})
    plane = x.shape[-2] * x.shape[-1]
    flat_idx, flat_grad = indices.flatten(-2).to(torch.int64), grad_out.flatten(-2).double()
    in_plane = flat_idx < plane
    grad = torch.zeros(*x.shape[:-2], plane, dtype=torch.float64)
    grad.scatter_add_(-1, flat_idx.clamp(max=plane - 1), flat_grad * in_plane)
    return grad.view(x.shape)


# --- comparing --------------------------------------------------------------------------------------------

def close(ours, ref, dtype, scale_like):
    """float64: within 1e-9 of the reference's scale; float32 (compared with a float64 reference): 1e-4."""
    scale = max(1.0, float(scale_like.detach().abs().max())) if scale_like.numel() else 1.0
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    return ours.shape == ref.shape and bool(((ours.double() - ref).abs() <= tol * scale).all())


def layout_flags(t):
    return (t.is_contiguous(), t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _ints(value):
    if isinstance(value, str):
        return [0]
    return [v for v in (value if isinstance(value, (tuple, list)) else [value]) if isinstance(v, int)]


def call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs), None
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return None, e


def run_conv(x, w, b, kwargs):
    """None if fastconv agrees with torch on this call, else what differs."""
    inputs = [t for t in (x, w, b) if isinstance(t, torch.Tensor)]
    before = [t.clone() for t in inputs]
    if huge_arguments(kwargs):
        return run_conv_huge(x, w, b, kwargs) or unchanged(inputs, before)
    theirs, their_error = call(F.conv2d, torch_safe(x), torch_safe(w), b, **kwargs)
    if their_error is not None and "could not c" in str(their_error) and isinstance(kwargs.get("stride"), int):
        # oneDNN refuses some strides far beyond the input, which torch otherwise accepts; any stride of at least
        # the padded input size gives the same one-row, one-column output, so torch answers with that one.
        small = x.shape[-1] + x.shape[-2] < 32 and max(_ints(kwargs.get("padding", 0)), default=0) < 16
        bounded = {**kwargs, "stride": min(kwargs["stride"], 64)} if small else kwargs
        theirs, their_error = call(F.conv2d, torch_safe(x), torch_safe(w), b, **bounded)
    ours, our_error = call(FC.conv2d, x, w, b, **kwargs)
    if (their_error is None and our_error is not None and len({t.dtype for t in inputs}) > 1
            and re.search(r"scalar type|should be the same", str(our_error))):
        # torch checks the dtypes on some paths only (not for empty inputs, nor a bias with padding='valid' on
        # unbatched input, where it converts the bias); we always refuse mixed dtypes, as torch mostly does.
        return None
    if their_error is None and our_error is not None and torch_skipped_a_check(x, w, b, kwargs, our_error):
        return None
    if their_error is not None or our_error is not None:
        return compare_errors(their_error, our_error)
    if (ours.shape, ours.dtype) != (theirs.shape, theirs.dtype):
        return f"output {ours.dtype}{list(ours.shape)}, torch {theirs.dtype}{list(theirs.shape)}"
    if ours.numel() > 1 and layout_flags(ours) != expected_layout(x, w, ours):
        return f"output layout: ours strides {ours.stride()}, torch's rule says {expected_layout(x, w, ours)}"
    grad_out = torch.randn(ours.shape, dtype=ours.dtype)
    ref, ref_grads = conv_reference(x, w, b, kwargs, grad_out)
    if not close(ours, ref, x.dtype, ref):
        return f"forward differs by {float((ours.double() - ref).abs().max()):.3g}"
    leaves = [t.detach().requires_grad_() for t in (x, w)] + ([b.detach().requires_grad_()] if b is not None else [])
    out = FC.conv2d(*leaves[:2], leaves[2] if b is not None else None, **kwargs)
    grads = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    for name, g, r in zip(("input", "weight", "bias"), grads, ref_grads):
        if g is None and r is not None and r.numel() == 0:
            continue
        if g is None or not close(g, r, x.dtype, r):
            diff = "missing" if g is None else f"{float((g.double() - r).abs().max()):.3g}"
            return f"grad {name} differs: {diff}"
    return unchanged(inputs, before)


def run_pool(x, kwargs):
    inputs = [x] if isinstance(x, torch.Tensor) else []
    before = [t.clone() for t in inputs]
    theirs, their_error = call(F.max_pool2d, x, **kwargs)
    ours, our_error = call(FC.max_pool2d, x, **kwargs)
    if their_error is None and our_error is not None and "Output size is too small" in str(our_error):
        # torch computes the size in 32-bit ints: a dilated window of billions wraps around to a small one
        return None if pool_window_exceeds_input(x, kwargs) else f"fastconv raised {our_error}; torch did not"
    if their_error is not None or our_error is not None:
        return compare_errors(their_error, our_error)
    if kwargs.get("return_indices"):
        (ours, our_idx), (theirs, their_idx) = ours, theirs
        if not torch.equal(our_idx, their_idx):
            return "indices differ"
    if (ours.shape, ours.dtype) != (theirs.shape, theirs.dtype) or not torch.equal(ours, theirs):
        return f"output differs: ours {list(ours.shape)}, torch {list(theirs.shape)}"
    if ours.numel() > 1 and layout_flags(ours) != layout_flags(theirs):
        return f"output layout: ours strides {ours.stride()}, torch's {theirs.stride()}"
    if x.is_floating_point():
        grad_out = torch.randn(ours.shape, dtype=ours.dtype)
        leaf = x.detach().requires_grad_()
        out = FC.max_pool2d(leaf, **kwargs)
        grad = torch.autograd.grad(out[0] if kwargs.get("return_indices") else out, leaf, grad_out)[0]
        if not close(grad, pool_grad_reference(x, kwargs, grad_out), x.dtype, grad_out):
            return "grad input differs"
    return unchanged(inputs, before)


def compare_errors(their_error, our_error):
    if their_error is None:
        return f"fastconv raised {type(our_error).__name__}: {our_error}; torch did not"
    if our_error is None:
        return f"torch raised {type(their_error).__name__} ({str(their_error)[:80]}); fastconv did not"
    if type(our_error) is not type(their_error):
        return (f"fastconv raised {type(our_error).__name__} ({str(our_error)[:80]}), "
                f"torch {type(their_error).__name__} ({str(their_error)[:80]})")
    return None


def unchanged(inputs, before):
    for t, b in zip(inputs, before):
        if not torch.equal(t, b):
            return "an input was modified"
    return None


def describe(t):
    if not isinstance(t, torch.Tensor):
        return repr(t)[:40]
    return f"{str(t.dtype)[6:]}{list(t.shape)}s{list(t.stride())}"


def run_case(seed, index):
    """(description, None or what differs) of case `index`."""
    rng = random.Random(seed * 1_000_003 + index)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    isa = rng.choice(ISAS)
    os.environ["FASTCONV_ISA"] = isa
    if rng.random() < 0.6:
        x, w, b, kwargs = random_conv(rng, gen)
        desc = f"conv2d {isa} x={describe(x)} w={describe(w)} b={describe(b)} {kwargs}"
        return desc, lambda: run_conv(x, w, b, kwargs)
    x, kwargs = random_pool(rng, gen)
    return f"max_pool2d {isa} x={describe(x)} {kwargs}", lambda: run_pool(x, kwargs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    failures = 0
    for index in range(args.start, args.start + args.count):
        desc, check = run_case(args.seed, index)
        print(f"CASE {index} {desc}", flush=True)
        problem = check()
        if problem is not None:
            failures += 1
            print(f"FAIL {index} {problem}", flush=True)
    print(f"DONE {args.count} {failures}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
