"""fastconv.functional.max_pool2d against torch.nn.functional.max_pool2d: values, indices, layout, backward,
errors."""
import pytest
import torch
import torch.nn.functional as F

from fastconv.functional import max_pool2d

from conftest import available_isas, memory_format_flags, pairwise, uncovered_pairs
from helpers.pool_cases import CONFIG_IDS, CONFIGS, output_size, pair, pool_input


def _pool_both(x, kwargs, grad_seed=3):
    """(out, indices, grad_input) from torch and from fastconv for the same input and grad_output."""
    results = []
    for fn in (F.max_pool2d, max_pool2d):
        leaf = x.detach().requires_grad_()
        out, idx = fn(leaf, return_indices=True, **kwargs)
        g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(grad_seed))
        (grad,) = torch.autograd.grad(out, leaf, g)
        results.append((out.detach(), idx, grad))
    return results


def _assert_same(expected, got, exact_grad=True):
    (e_out, e_idx, e_grad), (out, idx, grad) = expected, got
    assert out.shape == e_out.shape and idx.shape == e_idx.shape
    assert out.dtype == e_out.dtype and idx.dtype == e_idx.dtype == torch.int64
    assert memory_format_flags(out) == memory_format_flags(e_out), (out.stride(), e_out.stride())
    assert memory_format_flags(idx) == memory_format_flags(e_idx), (idx.stride(), e_idx.stride())
    torch.testing.assert_close(out, e_out, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx, e_idx), f"indices differ at {(idx != e_idx).nonzero()[:5].tolist()}"
    assert grad.shape == e_grad.shape
    tol = dict(rtol=0, atol=0) if exact_grad else {}
    torch.testing.assert_close(grad, e_grad, **tol, equal_nan=True, msg=lambda m: f"grad_input: {m}")
    assert memory_format_flags(grad) == memory_format_flags(e_grad), ("grad_input layout", grad.stride(),
                                                                      e_grad.stride())


# Every config, dtype, kind of values, layout and forced ISA: pairwise (each value of every factor meets each
# value of every other at least once) rather than the full product, 20x fewer cases. The ISAs are this CPU's.
GRID_FACTORS = {
    "config": list(range(len(CONFIGS))),
    "dtype": [torch.float32, torch.float64, torch.bfloat16],
    "values": ["distinct", "ties", "special"],
    "layout": ["contiguous", "channels_last", "transposed"],
    "isa": available_isas(),
}
GRID = pairwise(GRID_FACTORS)


def test_grid_is_pairwise():
    assert not uncovered_pairs(GRID, GRID_FACTORS)
    assert {row["config"] for row in GRID} == set(range(len(CONFIGS)))


@pytest.mark.parametrize("row", GRID, ids=[f"{CONFIG_IDS[r['config']]}-{str(r['dtype'])[6:]}-{r['values']}-{r['layout']}-"
                                           f"{r['isa']}" for r in GRID])
def test_max_pool2d_matches_torch(row, monkeypatch):
    """Output, argmax indices (first maximum wins; NaN propagates, the last NaN wins; an all -inf window
    reports its first in-bounds element), their memory format, and the backward scatter equal torch's, with
    each ISA's row kernels forced."""
    monkeypatch.setenv("FASTCONV_ISA", row["isa"])
    H, W, kernel, stride, padding, dilation, ceil_mode = CONFIGS[row["config"]]
    x = pool_input(2, 3, H, W, row["dtype"], row["values"], row["layout"], seed=row["config"])
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    expected, got = _pool_both(x, kwargs)
    _assert_same(expected, got)


# Rows longer than one 16-column chunk of the NCHW row kernel (and its stride-1/2/other paths), whose last
# chunk is partial; the windows of the last columns reach past the input (ceil_mode) or into the padding.
WIDE_CONFIGS = [
    (3, 70, 3, 2, 1, 1, False), (3, 70, 3, 2, 1, 1, True), (2, 33, 2, 2, 0, 1, True), (2, 40, 3, 1, 1, 1, False),
    (3, 50, (2, 4), (1, 3), (1, 2), (1, 2), True), (2, 64, (1, 5), (1, 1), (0, 2), (1, 3), False),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("values", ["distinct", "ties", "special"])
@pytest.mark.parametrize("config", WIDE_CONFIGS, ids=[str(i) for i in range(len(WIDE_CONFIGS))])
def test_max_pool2d_wide_rows(config, values, layout, isa):
    H, W, kernel, stride, padding, dilation, ceil_mode = config
    x = pool_input(2, 5, H, W, torch.float32, values, layout, seed=7 + WIDE_CONFIGS.index(config))
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    expected, got = _pool_both(x, kwargs)
    _assert_same(expected, got)


def test_grid_covers_ceil_mode_drop_and_add():
    """The grid has configs where ceil_mode drops a window (it would start in the padding) and where it adds
    one, in torch's own shape."""
    drop = add = False
    for H, W, kernel, stride, padding, dilation, ceil_mode in CONFIGS:
        if not ceil_mode:
            continue
        x = torch.zeros(1, 1, H, W)
        ceil = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=True).shape[-2:]
        floor = [output_size(size, k_, s_, p_, d_, False) for size, k_, s_, p_, d_ in
                 zip((H, W), pair(kernel), pair(stride) if stride not in (None, []) else pair(kernel),
                     pair(padding), pair(dilation))]
        k, p, d = pair(kernel), pair(padding), pair(dilation)
        s = k if stride is None or pair(stride) is None else pair(stride)
        naive = [(size + 2 * p[i] - d[i] * (k[i] - 1) - 1 + s[i] - 1) // s[i] + 1 for i, size in enumerate((H, W))]
        drop |= any(c < n for c, n in zip(ceil, naive))
        add |= any(c > f for c, f in zip(ceil, floor))
    assert drop and add


def test_ceil_mode_drops_last_window():
    """torch: with ceil_mode, a last window that would start in the right/bottom padding is dropped
    (5 wide, k=2, s=2, pad=1 -> 3 windows, not 4)."""
    x = torch.randn(1, 2, 5, 5)
    out, idx = max_pool2d(x, 2, 2, 1, ceil_mode=True, return_indices=True)
    assert out.shape == F.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 2, 3, 3)
    torch.testing.assert_close(out, F.max_pool2d(x, 2, 2, 1, ceil_mode=True), rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_without_indices_and_unbatched(layout):
    """return_indices=False returns the tensor alone; a 3-D (C, H, W) input gives 3-D output and indices."""
    x = pool_input(2, 4, 7, 6, torch.float32, "distinct", layout, seed=1)
    out = max_pool2d(x, 3, 2, 1)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, F.max_pool2d(x, 3, 2, 1), rtol=0, atol=0)
    xu = pool_input(None, 4, 7, 6, torch.float32, "ties", "contiguous", seed=2)
    expected, got = _pool_both(xu, dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True))
    assert got[0].dim() == 3 and got[1].dim() == 3
    _assert_same(expected, got)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_zero_batch(layout):
    """torch accepts N=0: empty output of the right shape and an empty gradient."""
    x = pool_input(0, 3, 6, 6, torch.float32, "distinct", layout, seed=0)
    expected, got = _pool_both(x, dict(kernel_size=2, ceil_mode=True))
    assert got[0].shape == (0, 3, 3, 3)
    _assert_same(expected, got)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, stride=2, padding=1),
                                    dict(kernel_size=(2, 3), stride=(2, 1), dilation=(2, 1), ceil_mode=True)],
                         ids=["k3s2p1", "dilated-ceil"])
def test_max_pool2d_channels_last_few_channels_large_image(kwargs, dtype, isa):
    """channels_last with fewer channels than a vector goes through per-image planes up to 2^18 elements per
    image (maxpool2d.cpp, kPlanarImageMax); a larger image takes the NHWC row kernel's per-channel path."""
    x = pool_input(1, 3, 300, 295, dtype, "special", "channels_last", seed=5)
    expected, got = _pool_both(x, kwargs)
    _assert_same(expected, got)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_larger_channels_last(layout):
    """More channels than one vector / one backward channel block (NHWC kernels block channels by 64)."""
    x = pool_input(3, 130, 9, 10, torch.float32, "ties", layout, seed=4)
    expected, got = _pool_both(x, dict(kernel_size=3, stride=2, padding=1))
    _assert_same(expected, got)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=1, dilation=(2, 1), padding=(1, 0)),
], ids=["k2", "k3s2p1ceil", "dilated"])
def test_max_pool2d_gradcheck(kwargs, layout):
    """max_pool2d and its backward (max_pool2d_grad, whose own backward gathers) pass gradcheck and
    gradgradcheck in float64 (distinct values, so the argmax is stable under perturbation)."""
    x = pool_input(2, 2, 6, 5, torch.float64, "distinct", layout, seed=5).requires_grad_()
    fn = lambda t: max_pool2d(t, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("values", ["distinct", "ties", "special"])
@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                    dict(kernel_size=(2, 3), stride=1, padding=(1, 1), dilation=(2, 1))],
                         ids=["k2", "k3s2p1ceil", "dilated"])
def test_max_pool2d_bfloat16_in_place(kwargs, values, layout, isa):
    """bfloat16 is pooled as its own bits, compared as float (exact): values, indices and layout equal torch's, and
    the backward, where overlapping windows sum several gradients into one element, rounds each sum to bfloat16 in
    the same order torch does, so it is bitwise torch's too. 40 channels and 37-pixel rows: whole vectors and a
    tail, in both layouts' vector kernels."""
    x = pool_input(2, 40, 9, 37, torch.float32, values, layout, seed=17).bfloat16()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    expected, got = _pool_both(x, kwargs)
    _assert_same(expected, got)


def test_max_pool2d_reduced_precision():
    """float16 / bfloat16 are supported like torch's: same values (a max is exact) and indices."""
    for dtype in (torch.float16, torch.bfloat16):
        x = pool_input(2, 3, 7, 7, torch.float32, "distinct", "contiguous", seed=6).to(dtype)
        e_out, e_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
        out, idx = max_pool2d(x, 3, 2, 1, return_indices=True)
        assert out.dtype == dtype
        torch.testing.assert_close(out, e_out, rtol=0, atol=0)
        assert torch.equal(idx, e_idx)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64],
                         ids=lambda d: str(d).split(".")[1])
def test_max_pool2d_integer_dtypes(dtype, layout, isa):
    """torch's CPU max_pool2d accepts integer tensors (padding never wins: the scan starts at the type's lowest
    value); values, indices (ties: the first wins) and layout equal torch's."""
    info = torch.iinfo(dtype)
    gen = torch.Generator().manual_seed(0)
    # NCHW rows wider than one 16-column chunk; torch's channels_last kernel for int8 takes planes < 128 only
    width = 8 if layout == "channels_last" else 36
    x = torch.randint(info.min, info.max, (2, 3, 7, width), generator=gen, dtype=torch.int64).to(dtype)
    x[0, :, :4, :4] = info.min  # whole windows at the lowest value
    x[1, :, 2:6, 2:6] = 1       # ties
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                   dict(kernel_size=(2, 3), stride=1, padding=(1, 1), dilation=(2, 1))):
        out, idx = max_pool2d(x, return_indices=True, **kwargs)
        e_out, e_idx = F.max_pool2d(x, return_indices=True, **kwargs)
        assert out.dtype == dtype
        assert memory_format_flags(out) == memory_format_flags(e_out)
        assert torch.equal(out, e_out)
        assert torch.equal(idx, e_idx)


# --- errors --------------------------------------------------------------------------------------------

X = torch.randn(2, 4, 6, 6)

# (id, input, kwargs, regex for fastconv's message)
BAD_POOLS = [
    ("pad-over-half-kernel", X, dict(kernel_size=2, padding=2), r"pad should be at most half of effective kernel"),
    ("pad-over-half-kernel-tuple", X, dict(kernel_size=(3, 2), padding=(1, 2)), r"pad should be at most half"),
    ("pad-over-half-kernel-dilated", X, dict(kernel_size=3, stride=1, padding=2, dilation=2),
     r"pad should be"),  # torch also requires pad <= kernel_size // 2, whatever the dilation
    ("negative-pad", X, dict(kernel_size=2, padding=-1), r"pad must be non-negative"),
    ("output-too-small", torch.randn(1, 2, 2, 2), dict(kernel_size=3), r"Output size is too small"),
    ("output-too-small-dilated", X, dict(kernel_size=3, dilation=3), r"Output size is too small"),
    ("zero-stride", X, dict(kernel_size=2, stride=0), r"stride should not be zero"),
    ("zero-kernel", X, dict(kernel_size=0), r"stride should not be zero|kernel size should be greater than zero"),
    ("zero-kernel-stride-1", X, dict(kernel_size=0, stride=1), r"kernel size should be greater than zero"),
    ("zero-dilation", X, dict(kernel_size=2, dilation=0), r"dilation should be greater than zero"),
    ("rank-2", torch.randn(6, 6), dict(kernel_size=2), r"3D or 4D \(batch mode\) tensor expected"),
    ("rank-5", torch.randn(2, 2, 4, 4, 4), dict(kernel_size=2), r"3D or 4D \(batch mode\) tensor expected"),
    ("zero-channels", torch.randn(1, 0, 4, 4), dict(kernel_size=2), r"non-zero size for non-batch dimensions"),
    ("zero-channels-unbatched", torch.randn(0, 4, 4), dict(kernel_size=2), r"non-zero size"),
    ("zero-height", torch.randn(1, 2, 0, 4), dict(kernel_size=1), r"non-zero size|Output size is too small"),
    ("kernel-tuple-of-3", X, dict(kernel_size=(2, 2, 2)), r"kernel_size must either be a single int, or a tuple"),
    ("stride-tuple-of-3", X, dict(kernel_size=2, stride=(1, 1, 1)), r"stride must either be a single int"),
    ("complex-input", X.to(torch.complex64), dict(kernel_size=2), r"not implemented for 'ComplexFloat'"),
    ("bool-input", X > 0, dict(kernel_size=2), r"not implemented for 'Bool'"),
]


@pytest.mark.parametrize("inp, kwargs, match", [c[1:] for c in BAD_POOLS], ids=[c[0] for c in BAD_POOLS])
def test_max_pool2d_rejects_what_torch_rejects(inp, kwargs, match):
    """Every call torch.nn.functional.max_pool2d rejects raises in fastconv too, with a relevant message."""
    with pytest.raises(Exception):
        F.max_pool2d(inp, **kwargs)
    with pytest.raises(Exception, match=match):
        max_pool2d(inp, **kwargs)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bad", [-1, 36, 1 << 40], ids=["negative", "one-past-plane", "huge"])
def test_max_pool2d_grad_skips_out_of_plane_indices(bad, layout):
    """An index outside the plane names no element: it gets no gradient, and nothing is written out of bounds
    (torch's forward gives such indices to windows wholly in the padding, see the next test)."""
    x = pool_input(2, 3, 6, 6, torch.float32, "distinct", layout, seed=8)
    out, idx = torch.ops.fastconv.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    grad = torch.randn_like(out)
    expected = torch.ops.fastconv.max_pool2d_grad(grad, x, idx)
    expected[1, 2].view(-1)[idx[1, 2, 1, 0]] -= grad[1, 2, 1, 0]
    idx = idx.clone()
    idx[1, 2, 1, 0] = bad
    assert torch.equal(torch.ops.fastconv.max_pool2d_grad(grad, x, idx), expected)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_max_pool2d_window_wholly_in_padding(layout):
    """With dilation a window can miss the input entirely (kernel 2, dilation 3, padding 1 on a 2-wide map):
    torch gives it -inf and an index outside the plane. Forward and indices match torch's; the backward skips
    that index (torch 2.13's NCHW backward adds its gradient to the next plane's first element)."""
    x = torch.randn(2, 3, 4, 2)
    x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    kwargs = dict(kernel_size=2, padding=1, dilation=(1, 3), ceil_mode=True, return_indices=True)
    ours = x.detach().requires_grad_()
    (y, i), (ty, ti) = max_pool2d(ours, **kwargs), F.max_pool2d(x, **kwargs)
    assert torch.equal(y, ty) and torch.equal(i, ti) and bool((ti >= 8).any())
    grad = torch.randn_like(y)
    y.backward(grad)
    expected = torch.zeros(2, 3, 8)
    in_plane = ti.flatten(2) < 8
    expected.scatter_add_(2, ti.flatten(2).clamp(max=7), grad.flatten(2) * in_plane)
    assert torch.equal(ours.grad, expected.view(2, 3, 4, 2))


def test_max_pool2d_grad_rejects_bad_indices_tensor():
    """int32 indices, or indices of the wrong shape, are rejected."""
    x = torch.randn(1, 2, 4, 4)
    out, idx = torch.ops.fastconv.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="int64 indices"):
        torch.ops.fastconv.max_pool2d_grad(out, x, idx.int())
    with pytest.raises(RuntimeError, match="int64 indices"):
        torch.ops.fastconv.max_pool2d_grad(out, x, idx[..., :1])
