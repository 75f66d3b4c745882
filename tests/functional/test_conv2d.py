"""fastconv.functional.conv2d against torch.nn.functional.conv2d: values, gradients, layout, errors."""
import functools

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv._ops import cpu_conv2d_algorithms
from fastconv.functional import conv2d

from conftest import (FORM_SPECS, ConvSpec, conv_specs, leaf_copies, make_case, memory_format_flags, run_case,
                      sample_inputs)

TOL = {
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float64: dict(rtol=1e-10, atol=1e-10),
}

# torch warns that 'same' with an even kernel copies the input; that is torch's business, not ours
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

SPECS = conv_specs(n_random=40, seed=1234)
SPEC_IDS = [f"{i:02d}-{s.id()}" for i, s in enumerate(SPECS)]


@functools.lru_cache(maxsize=None)
def _grid(dtype):
    """The seeded cases of the grid (same specs as SPECS), built once per dtype."""
    cases = list(sample_inputs(dtype, n_random=40, seed=1234))
    assert [c.spec for c in cases] == SPECS
    return cases


# --- values and gradients over the whole grid ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("index", range(len(SPECS)), ids=SPEC_IDS)
def test_conv2d_forward_and_grads_match_torch(index, dtype, isa):
    """Output (values, shape, dtype, memory format) and grad of input, weight, bias equal
    torch.nn.functional.conv2d's, for every argument form and every ISA."""
    case = _grid(dtype)[index]
    expected, _ = run_case(F.conv2d, case)
    grad_output = torch.randn(expected.shape, dtype=dtype, generator=torch.Generator().manual_seed(7))
    grad_output = grad_output.contiguous(memory_format=torch.channels_last) if expected.dim() == 4 and \
        expected.is_contiguous(memory_format=torch.channels_last) else grad_output

    expected, expected_grads = run_case(F.conv2d, case, grad_output)
    out, grads = run_case(conv2d, case, grad_output)

    assert out.shape == expected.shape
    assert out.dtype == expected.dtype == dtype
    # torch: the result is channels_last when input or weight is (suggest_memory_format rule)
    assert memory_format_flags(out) == memory_format_flags(expected), (out.stride(), expected.stride())
    torch.testing.assert_close(out, expected, **TOL[dtype])
    names = ["grad_input", "grad_weight", "grad_bias"]
    assert len(grads) == len(expected_grads)
    for name, got, want in zip(names, grads, expected_grads):
        assert got.shape == want.shape, name
        assert got.dtype == want.dtype, name
        torch.testing.assert_close(got, want, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


def test_grid_covers_every_argument_form():
    """The grid above really contains each form the torch API accepts (guards the generator itself)."""
    def has(pred):
        return any(pred(s) for s in SPECS)
    assert has(lambda s: s.padding == "same" and s.dilation != 1 and (s.R % 2 == 0 or s.S % 2 == 0))
    assert has(lambda s: s.padding == "valid")
    assert has(lambda s: isinstance(s.padding, tuple)) and has(lambda s: isinstance(s.padding, int))
    assert has(lambda s: isinstance(s.stride, tuple)) and has(lambda s: s.stride not in (1, (1, 1)))
    assert has(lambda s: s.dilation not in (1, (1, 1)))
    assert has(lambda s: s.groups > 1 and s.groups == s.C == s.K)              # depthwise
    assert has(lambda s: s.groups > 1 and s.groups == s.C and s.K > s.C)       # depthwise, multiplier
    assert has(lambda s: 1 < s.groups < s.C)
    assert has(lambda s: s.bias) and has(lambda s: not s.bias)
    assert has(lambda s: s.unbatched) and has(lambda s: s.N == 0 and not s.unbatched)
    for layout in ("cl_input", "cl_weight", "cl_both", "transposed", "sliced"):
        assert has(lambda s, layout=layout: s.layout == layout)
    case = make_case(next(s for s in FORM_SPECS if s.layout == "transposed"), torch.float32)
    assert not case.input.is_contiguous()
    assert not case.weight.is_contiguous()


def test_grid_reaches_every_cpu_algorithm_in_float32():
    """The float32 grid (run above on every ISA) reaches the GEMM micro-kernels in every pass, and every other
    CPU algorithm, not only the thin direct kernels small shapes take (csrc/cpu/select.cpp decides)."""
    seen = {"forward": set(), "grad_input": set(), "grad_weight": set()}
    for case in _grid(torch.float32):
        x = case.input if case.input.dim() == 4 else case.input.unsqueeze(0)
        for pass_, algo in cpu_conv2d_algorithms(x, case.weight, **case.kwargs).items():
            seen[pass_].add(algo)
    assert {"gemm", "direct_few_outputs", "depthwise", "winograd_tile_lanes"} <= seen["forward"]
    assert {"gemm_col2im", "flipped_forward:gemm", "flipped_forward:direct_few_outputs",
            "flipped_forward:winograd_tile_lanes", "depthwise"} <= seen["grad_input"]
    assert {"gemm", "direct_few_taps", "depthwise", "winograd_tile_lanes"} <= seen["grad_weight"]


@pytest.mark.parametrize("x_cl, w_cl", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["both-contiguous", "input-cl", "weight-cl", "both-cl"])
def test_conv2d_output_layout_rule(x_cl, w_cl):
    """torch: conv2d's result is channels_last exactly when the input or the weight is (unambiguous shapes)."""
    case = make_case(ConvSpec(2, 3, 5, 6, 7, 3, 3, padding=1), torch.float32)
    x = case.input.contiguous(memory_format=torch.channels_last) if x_cl else case.input
    w = case.weight.contiguous(memory_format=torch.channels_last) if w_cl else case.weight
    out, expected = conv2d(x, w, case.bias, padding=1), F.conv2d(x, w, case.bias, padding=1)
    assert expected.is_contiguous(memory_format=torch.channels_last) == (x_cl or w_cl)
    assert out.is_contiguous(memory_format=torch.channels_last) == (x_cl or w_cl)
    assert out.is_contiguous() == (not (x_cl or w_cl))
    assert out.stride() == expected.stride()


# --- reduced precision ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("spec", FORM_SPECS, ids=[s.id() for s in FORM_SPECS])
def test_conv2d_reduced_precision_forward(spec, dtype, isa_bf16):
    """float16 / bfloat16: torch returns the input dtype and layout; values agree with torch's within a few
    ulps, and with the float32 result of the same (rounded) inputs within one rounding."""
    case = make_case(spec, dtype, seed=FORM_SPECS.index(spec))
    out = conv2d(*case.args(), **case.kwargs)
    expected = F.conv2d(*case.args(), **case.kwargs)
    assert out.dtype == expected.dtype == dtype
    assert out.shape == expected.shape
    assert memory_format_flags(out) == memory_format_flags(expected)
    loose = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else dict(rtol=4e-2, atol=4e-2)
    torch.testing.assert_close(out, expected, **loose)
    b32 = case.bias.float() if case.bias is not None else None
    reference = F.conv2d(case.input.float(), case.weight.float(), b32, **case.kwargs)
    one_rounding = dict(rtol=1e-3, atol=1e-4) if dtype == torch.float16 else dict(rtol=8e-3, atol=1e-4)
    torch.testing.assert_close(out.float(), reference, **one_rounding)


# --- gradcheck / gradgradcheck -------------------------------------------------------------------------

GRADCHECK_SPECS = [
    ConvSpec(2, 2, 3, 5, 6, 3, 3, stride=2, padding=1),
    ConvSpec(1, 4, 4, 5, 5, 3, 2, groups=2, padding=(1, 0)),
    ConvSpec(1, 2, 2, 7, 6, 2, 3, dilation=2, padding=1),
    ConvSpec(1, 2, 3, 5, 6, 2, 4, padding="same", dilation=(2, 1)),   # 'same' with even kernels
    ConvSpec(2, 3, 3, 4, 5, 3, 3, groups=3, padding=1, layout="cl_both", bias=False),
    ConvSpec(1, 2, 4, 5, 4, 3, 3, stride=(2, 1), padding=1, layout="cl_input"),
    ConvSpec(1, 2, 2, 4, 5, 3, 3, padding=1, unbatched=True, layout="transposed"),
]


@pytest.mark.parametrize("spec", GRADCHECK_SPECS, ids=[s.id() for s in GRADCHECK_SPECS])
def test_conv2d_gradcheck_and_gradgradcheck(spec):
    """First and second derivatives of the fastconv conv2d (double backward runs on fastconv ops) agree with
    finite differences in float64."""
    case = make_case(spec, torch.float64, seed=3)
    x, w, b = leaf_copies(case)
    inputs = (x, w) + ((b,) if b is not None else ())

    def fn(*args):
        return conv2d(args[0], args[1], args[2] if len(args) > 2 else None, **case.kwargs)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


# --- errors --------------------------------------------------------------------------------------------

def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


X, W = _x(2, 4, 6, 6), _x(8, 4, 3, 3)

# (id, input, weight, kwargs, regex the fastconv message must match)
BAD_CALLS = [
    ("input-rank-2", _x(4, 6), W, {}, r"3D \(unbatched\) or 4D \(batched\) input"),
    ("input-rank-5", _x(1, 2, 4, 6, 6), W, {}, r"3D \(unbatched\) or 4D \(batched\) input"),
    ("weight-rank-3", X, _x(8, 4, 3), {}, r"weight"),
    ("weight-rank-5", X, _x(8, 4, 3, 3, 1), {}, r"weight"),
    ("channel-mismatch", _x(2, 3, 6, 6), W, {}, r"expected input\[2, 3, 6, 6\] to have 4 channels"),
    ("unbatched-channel-mismatch", _x(3, 6, 6), W, {}, r"to have 4 channels, but got 3"),
    ("group-channel-mismatch", X, W, {"groups": 2}, r"to have 8 channels, but got 4"),
    ("K-not-divisible-by-groups", X, _x(9, 2, 3, 3), {"groups": 2}, r"divisible by 2"),
    ("groups-zero", X, W, {"groups": 0}, r"non-positive groups"),
    ("bad-padding-string", X, W, {"padding": "full"}, r"Invalid padding string"),
    ("negative-padding", X, W, {"padding": -1}, r"negative padding"),
    ("negative-padding-tuple", X, W, {"padding": (1, -1)}, r"negative padding"),
    ("zero-stride", X, W, {"stride": 0}, r"non-positive stride"),
    ("negative-stride", X, W, {"stride": (1, -2)}, r"non-positive stride"),
    ("zero-dilation", X, W, {"dilation": 0}, r"dilation"),
    ("kernel-larger-than-input", _x(2, 4, 2, 2), W, {}, r"Kernel size can't be greater than actual input size"),
    ("dilated-kernel-larger", X, W, {"dilation": 3}, r"Kernel size can't be greater than actual input size"),
    ("same-with-stride-2", X, W, {"padding": "same", "stride": 2}, r"padding='same' is not supported for strided"),
    ("mixed-dtypes", X, W.double(), {}, r"expected scalar type Float but found Double"),
    ("mixed-dtypes-2", X.double(), W, {}, r"expected scalar type Double but found Float"),
    ("bias-dtype", X, W, {"bias": _x(8, dtype=torch.float64)}, r"scalar type|bias"),
    ("integer-bias-dtype", X.long(), W.long(), {"bias": _x(8, dtype=torch.float64)}, r"bias type .* should be the same"),
    ("bias-wrong-size", X, W, {"bias": _x(7)}, r"expected bias to be 1-dimensional with 8 elements"),
    ("bias-2d", X, W, {"bias": _x(8, 1)}, r"expected bias to be 1-dimensional"),
    ("bool-tensors", X.bool(), W.bool(), {}, r"not implemented for .Bool."),
    ("bool-input", X.bool(), W, {}, r"not implemented for .Bool."),
    ("uint16-tensors", X.to(torch.uint16), W.to(torch.uint16), {}, r"not implemented for .UInt16."),
    ("uint64-input", X.to(torch.uint64), W.long(), {}, r"not implemented for .UInt64."),
    ("float8-tensors", X.to(torch.float8_e4m3fn), W.to(torch.float8_e4m3fn), {}, r"not implemented for .Float8"),
    ("sparse-input", X.to_sparse(), W, {}, r"dense \(strided\)"),
    ("stride-tuple-of-3", X, W, {"stride": (1, 2, 3)}, r"expected stride to be a single integer value or a list of 2"),
    ("padding-tuple-of-3", X, W, {"padding": (1, 2, 3)}, r"expected padding to be a single integer value"),
    ("dilation-tuple-of-3", X, W, {"dilation": (1, 2, 3)}, r"expected dilation to be a single integer value"),
]


@pytest.mark.parametrize("inp, weight, kwargs, match", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_conv2d_rejects_what_torch_rejects(inp, weight, kwargs, match):
    """Every call torch.nn.functional.conv2d rejects raises a Python exception in fastconv too (no crash),
    with a message naming the problem."""
    with pytest.raises(Exception):
        F.conv2d(inp, weight, **kwargs)
    with pytest.raises(Exception, match=match):
        conv2d(inp, weight, **kwargs)


INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


@pytest.mark.parametrize("layout", ["contiguous", "cl_input"])
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: str(d).split(".")[1])
def test_conv2d_integer_tensors_match_torch(dtype, layout):
    """torch's CPU conv2d accepts integer tensors and computes exactly in the integer type: same dtype, values
    (bitwise) and layout, batched and unbatched."""
    gen = torch.Generator().manual_seed(0)
    low = 0 if dtype == torch.uint8 else -3
    x = torch.randint(low, 4, (2, 4, 7, 6), generator=gen).to(dtype)
    w = torch.randint(low, 4, (6, 2, 3, 2), generator=gen).to(dtype)
    b = torch.randint(low, 4, (6,), generator=gen).to(dtype)
    if layout == "cl_input":
        x = x.contiguous(memory_format=torch.channels_last)
    kwargs = dict(stride=(2, 1), padding=1, groups=2)
    for inp in (x, x[1]):
        out, expected = conv2d(inp, w, b, **kwargs), F.conv2d(inp, w, b, **kwargs)
        assert out.dtype == expected.dtype == dtype
        assert memory_format_flags(out) == memory_format_flags(expected)
        assert torch.equal(out, expected)


@pytest.mark.parametrize("dtype, value", [(torch.int8, 100), (torch.uint8, 200), (torch.int32, 40000)],
                         ids=["int8", "uint8", "int32"])
def test_conv2d_integer_overflow_wraps_like_torch(dtype, value):
    """torch's integer conv wraps around on overflow (two's complement); fastconv's result is the same."""
    x = torch.full((1, 4, 3, 3), value, dtype=dtype)
    w = torch.full((2, 4, 3, 3), value, dtype=dtype)
    expected = F.conv2d(x, w, padding=1)
    assert torch.equal(conv2d(x, w, padding=1), expected)


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: str(d).split(".")[1])
def test_conv2d_integer_extremes_are_exact(dtype):
    """Over the dtype's whole range (sums far past float64's 2**53, products that wrap) the result equals torch's
    bit for bit: 2**53 + 1 in int64, (2**31 - 1)**2 in int32, 2**62 * 4 wrapping to 0, random extremes with a bias."""
    info = torch.iinfo(dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(info.min, info.max, (2, 4, 5, 6), generator=gen, dtype=dtype)
    w = torch.randint(info.min, info.max, (6, 2, 3, 2), generator=gen, dtype=dtype)
    b = torch.randint(info.min, info.max, (6,), generator=gen, dtype=dtype)
    assert torch.equal(conv2d(x, w, b, padding=1, groups=2), F.conv2d(x, w, b, padding=1, groups=2))
    one = torch.ones(1, 1, 1, 1, dtype=dtype)
    for a, c in ((2**53 + 1, 1), (2**31 - 1, 2**31 - 1), (2**62, 4), (info.max, info.max), (info.min, info.max)):
        if info.min <= a <= info.max and info.min <= c <= info.max:
            x1, w1 = one * a, one * c
            assert torch.equal(conv2d(x1, w1), F.conv2d(x1, w1)), (a, c)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["c64", "c128"])
def test_conv2d_complex_matches_torch(dtype):
    """torch's conv2d accepts complex tensors (bias included): same dtype and values within tolerance."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 6, dtype=dtype, generator=gen)
    w = torch.randn(6, 2, 3, 3, dtype=dtype, generator=gen)
    b = torch.randn(6, dtype=dtype, generator=gen)
    for kwargs in (dict(padding=1, groups=2), dict(stride=2, dilation=(1, 2), groups=2)):
        out, expected = conv2d(x, w, b, **kwargs), F.conv2d(x, w, b, **kwargs)
        assert out.dtype == expected.dtype == dtype
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.complex64 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out, expected, **tol)


def test_raw_op_rejects_wrong_length_lists():
    """The raw op checks its list arguments (padding has 4 values: top, left, bottom, right)."""
    with pytest.raises(RuntimeError, match="padding"):
        torch.ops.fastconv.conv2d(X, W, None, [1, 1], [1, 1], [1, 1], 1)


def test_conv2d_raw_op_grad_output_shape_checked():
    """A grad_output of the wrong shape is rejected by the backward ops, not read out of bounds."""
    go = torch.randn(2, 8, 3, 3)
    with pytest.raises(RuntimeError, match="grad_output"):
        torch.ops.fastconv.conv2d_grad_input(go, X, W, [1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="grad_output"):
        torch.ops.fastconv.conv2d_grad_weight(go, X, W, [1, 1], [0, 0, 0, 0], [1, 1], 1)


def test_conv2d_under_cpu_autocast_runs_in_autocast_dtype():
    """torch.autocast('cpu', bfloat16): torch's conv2d computes and returns bfloat16; max_pool2d keeps float32."""
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = torch.nn.functional.conv2d(x, w, b, padding=1)
        got = fastconv.functional.conv2d(x, w, b, padding=1)
        pooled = fastconv.functional.max_pool2d(x, 2)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)
    assert pooled.dtype == torch.float32


# --- torch.func and forward-mode AD ---------------------------------------------------------------------

def _forward_ad_tangent(fn, x, t):
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        return fwAD.unpack_dual(fn(fwAD.make_dual(x, t))).tangent


@pytest.mark.parametrize("transform", ["jvp", "jacfwd", "forward_ad", "grad", "jacrev"])
@pytest.mark.parametrize("op", ["conv2d", "max_pool2d"])
def test_forward_ad_and_func_grad_transforms_raise(op, transform):
    """The ops' autograd is backward mode only: forward-mode AD would silently drop the tangent and torch.func's
    grad transforms cannot see through it, so each says so (NotImplementedError naming the mode); torch's own
    functionals support them all, as the reference values show."""
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    ours = {"conv2d": lambda a: conv2d(a, w), "max_pool2d": lambda a: fastconv.functional.max_pool2d(a, 2)}[op]
    theirs = {"conv2d": lambda a: F.conv2d(a, w), "max_pool2d": lambda a: F.max_pool2d(a, 2)}[op]
    run = {"jvp": lambda f: torch.func.jvp(f, (x,), (x.cos(),))[1],
           "jacfwd": lambda f: torch.func.jacfwd(f)(x),
           "forward_ad": lambda f: _forward_ad_tangent(f, x, x.cos()),
           "grad": lambda f: torch.func.grad(lambda a: f(a).square().sum())(x),
           "jacrev": lambda f: torch.func.jacrev(f)(x)}[transform]
    assert run(theirs).abs().sum() > 0
    mode = "forward-mode AD" if transform in ("jvp", "jacfwd", "forward_ad") else "grad transforms"
    with pytest.raises(NotImplementedError, match=f"fastconv's {op} does not support .*{mode}"):
        run(ours)


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_vmap_and_backward_under_a_dual_level_still_work():
    """torch.func.vmap (torch loops over the batch) and backward mode inside a forward-AD level without tangents
    on our inputs are unaffected."""
    import torch.autograd.forward_ad as fwAD
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    got = torch.func.vmap(lambda a: conv2d(a, w))(x)
    torch.testing.assert_close(got, F.conv2d(x, w))
    with fwAD.dual_level():
        (grad,) = torch.autograd.grad(conv2d(x, w).sum(), w)
    (want,) = torch.autograd.grad(F.conv2d(x, w).sum(), w)
    torch.testing.assert_close(grad, want)


@pytest.mark.parametrize("input_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("weight_layout", ["contiguous", "channels_last", "permuted"])
def test_empty_batch_output_and_gradients_in_torchs_strides(weight_layout, input_layout):
    """Over an empty batch the output is contiguous whatever the layouts and every gradient is zeros in its
    tensor's own strides, as torch gives them (also for a permuted weight, neither contiguous nor channels_last)."""
    results = []
    for fn in (F.conv2d, conv2d):
        x = torch.randn(0, 4, 8, 8)
        x = (x if input_layout == "contiguous" else x.contiguous(memory_format=torch.channels_last)).requires_grad_()
        w = torch.randn(6, 4, 3, 3)
        w = {"contiguous": w, "channels_last": w.contiguous(memory_format=torch.channels_last),
             "permuted": w.transpose(2, 3)}[weight_layout].detach().requires_grad_()
        b = torch.randn(6, requires_grad=True)
        out = fn(x, w, b, padding=1)
        results.append((out, *torch.autograd.grad(out, (x, w, b), torch.ones_like(out))))
    for got, want in zip(results[1], results[0]):
        assert got.shape == want.shape and got.stride() == want.stride() and not got.any()
