"""The CPU conv2d kernel paths (csrc/cpu: select.cpp's choices) against torch.nn.functional.conv2d, each forced on
every ISA: determinism across thread counts, the GEMM on larger and strided problems, phase-plane packing,
Winograd with tile and image lanes, the direct kernels for thin convs, depthwise bit for bit, and FASTCONV_ISA."""
import re

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv.functional import conv2d

from conftest import BF16_ISAS, ConvSpec, available_isas, leaf_copies, make_case, run_case

TOL = {
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float64: dict(rtol=1e-10, atol=1e-10),
}
X = torch.randn(2, 4, 9, 9, generator=torch.Generator().manual_seed(0))
W = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(1))


# --- determinism ---------------------------------------------------------------------------------------

DETERMINISM_SPECS = [
    ConvSpec(8, 16, 16, 12, 12, 3, 3, padding=1),                                # batch-chunked grad-weight
    ConvSpec(9, 12, 24, 11, 13, 3, 3, stride=2, padding=1, groups=3, layout="cl_both"),
    ConvSpec(10, 8, 8, 10, 9, 3, 3, padding=1, groups=8, layout="cl_input"),     # depthwise
    ConvSpec(12, 3, 20, 32, 32, 3, 3, padding=1),  # direct thin kernels: grad-weight over image batches, K=3 rows
    ConvSpec(1, 3, 8, 40, 36, 3, 3, padding=1),    # ... and one image, split into row blocks by the thread count
    ConvSpec(6, 6, 16, 14, 14, 5, 5, layout="cl_both"),  # LeNet's conv2 channels_last: dy read in place
    ConvSpec(12, 3, 40, 20, 20, 3, 3, padding=1, layout="cl_both"),  # an image input's: blocks of rows as tasks
]


def _forward_backward(case):
    torch.manual_seed(0)
    x, w, b = leaf_copies(case)
    out = conv2d(x, w, b, **case.kwargs)
    grad_output = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, [x, w, b], grad_output)
    return [out.detach(), *grads]


def _assert_bitwise(a, b):
    for name, u, v in zip(["out", "grad_input", "grad_weight", "grad_bias"], a, b):
        assert torch.equal(u, v), f"{name} differs: max |diff| = {(u - v).abs().max().item()}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("spec", DETERMINISM_SPECS, ids=[s.id() for s in DETERMINISM_SPECS])
def test_conv2d_deterministic(spec, dtype, isa, restore_num_threads):
    """Forward and all gradients are bitwise reproducible run to run and for 1 vs 2 threads (fastconv sums
    each element in an order fixed by the shape; torch.use_deterministic_algorithms-style guarantee)."""
    case = make_case(spec, dtype, seed=5)
    torch.set_num_threads(2)
    first = _forward_backward(case)
    second = _forward_backward(case)
    _assert_bitwise(first, second)
    torch.set_num_threads(1)
    single = _forward_backward(case)
    _assert_bitwise(first, single)
    torch.set_num_threads(restore_num_threads)
    # and it is the right answer
    expected = F.conv2d(case.input, case.weight, case.bias, **case.kwargs)
    torch.testing.assert_close(first[0], expected, **TOL[dtype])


# --- a bigger problem ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "cl_both"])
def test_conv2d_larger_case(layout, isa):
    """N=4, C=K=64, 16x16, 3x3 (blocked GEMM paths with several cache blocks): float32 forward and grads
    within tolerance of torch's float64 result on the same data."""
    case = make_case(ConvSpec(4, 64, 64, 16, 16, 3, 3, padding=1, layout=layout), torch.float32, seed=11)
    grad_output = torch.randn(4, 64, 16, 16, generator=torch.Generator().manual_seed(2))
    out, grads = run_case(conv2d, case, grad_output)
    ref_case = make_case(case.spec, torch.float32, seed=11)
    ref_case.input, ref_case.weight, ref_case.bias = (t.double() for t in ref_case.args())
    expected, expected_grads = run_case(F.conv2d, ref_case, grad_output.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=2e-4)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=2e-4)
    # stride 2 (the col2im grad-input path) on the same data
    case.kwargs["stride"] = 2
    ref_case.kwargs["stride"] = 2
    grad_output = torch.randn(4, 64, 8, 8, generator=torch.Generator().manual_seed(3))
    out, grads = run_case(conv2d, case, grad_output)
    expected, expected_grads = run_case(F.conv2d, ref_case, grad_output.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=2e-4)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=2e-4)


# (N, C, K, H, W, stride, padding): batches of small strided outputs, where one GEMM tile spans several images
# (4x4 outputs: the micro-kernel's split store; 2x2 and 4x3: the tile-buffer path) and the strided grad-input
# gives a task several images, grouped by the thread count.
STRIDED_BATCH_CASES = [(32, 16, 24, 8, 8, 2, 1, 1, 1), (24, 8, 40, 4, 4, 2, 1, 1, 1), (20, 12, 16, 9, 7, 2, 0, 1, 1),
                       (32, 12, 18, 9, 9, 2, 2, 2, 3)]  # + dilation 2 and 3 groups


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", STRIDED_BATCH_CASES, ids=[str(i) for i in range(len(STRIDED_BATCH_CASES))])
def test_conv2d_strided_batches_of_small_images(case, layout, isa, restore_num_threads):
    """Forward, grad-input and grad-weight against torch in float64, bitwise the same for 1 and 2 threads."""
    N, C, K, H, W, stride, padding, dilation, groups = case
    gen = torch.Generator().manual_seed(N + C + K)
    mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(N, C, H, W, generator=gen).contiguous(memory_format=mf)
    w = torch.randn(K, C // groups, 3, 3, generator=gen).contiguous(memory_format=mf)
    b = torch.randn(K, generator=gen)
    args = ([stride, stride], [padding] * 4, [dilation, dilation], groups)
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    expected = F.conv2d(xd, wd, b.double(), stride=stride, padding=padding, dilation=dilation, groups=groups)
    gy = torch.randn(expected.shape, generator=gen).contiguous(memory_format=mf)
    expected_grads = torch.autograd.grad(expected, (xd, wd), gy.double())
    ops = torch.ops.fastconv

    def run():
        return (ops.conv2d(x, w, b, *args), ops.conv2d_grad_input(gy, x, w, *args),
                ops.conv2d_grad_weight(gy, x, w, *args))

    torch.set_num_threads(2)
    results = run()
    for got, want in zip(results, (expected, *expected_grads)):
        torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=2e-6 * want.abs().max().item())
    torch.set_num_threads(1)
    assert all(torch.equal(u, v) for u, v in zip(run(), results))


# (N, C, K, H, W, kernel, stride, padding [top, left, bottom, right], dilation, groups): NCHW forwards packed
# from the phase-split copy of the input (strided, or stride 1 on maps under 32 columns): a pixel block inside
# one large image (rows from the middle), blocks that start inside an image, unequal strides with dilation,
# stride above the kernel (unused phases), uneven padding, padding wider than the kernel, groups.
PHASE_CASES = [(1, 3, 20, 70, 66, 3, 2, [1, 1, 1, 1], 1, 1), (3, 4, 24, 40, 40, 3, 2, [1, 1, 1, 1], 1, 1),
               (3, 5, 18, 41, 31, (3, 5), (2, 3), [2, 1, 2, 1], (1, 2), 1),
               (2, 6, 20, 30, 30, 2, 3, [0, 0, 0, 0], 1, 1),
               (2, 4, 17, 17, 19, 4, 2, [1, 2, 2, 1], 1, 1), (2, 3, 20, 12, 12, 3, 2, [4, 4, 4, 4], 1, 1),
               (5, 8, 34, 20, 12, 3, 1, [1, 1, 1, 1], 1, 2), (2, 20, 18, 11, 9, 5, 1, [2, 0, 2, 3], (2, 1), 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", PHASE_CASES, ids=[str(i) for i in range(len(PHASE_CASES))])
def test_conv2d_phase_split_packing_matches_torch(case, dtype, isa):
    """Forward, grad-input (for stride 1 also a forward conv) and grad-weight (whose im2col rows come from the
    same planes) through the raw ops against torch in float64."""
    N, C, K, H, W, kernel, stride, padding, dilation, groups = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    gen = torch.Generator().manual_seed(N * C * K)
    x = torch.randn(N, C, H, W, generator=gen, dtype=dtype)
    w = torch.randn(K, C // groups, kh, kw, generator=gen, dtype=dtype)
    b = torch.randn(K, generator=gen, dtype=dtype)
    top, left, bottom, right = padding
    xd = F.pad(x.double(), (left, right, top, bottom)).requires_grad_()
    wd = w.double().requires_grad_()
    expected = F.conv2d(xd, wd, b.double(), stride=(sh, sw), dilation=(dh, dw), groups=groups)
    gy = torch.randn(expected.shape, generator=gen, dtype=dtype)
    expected_dx, expected_dw = torch.autograd.grad(expected, (xd, wd), gy.double())
    expected_dx = expected_dx[:, :, top:top + H, left:left + W]
    args = ([sh, sw], padding, [dh, dw], groups)
    got = torch.ops.fastconv.conv2d(x, w, b, *args)
    got_dx = torch.ops.fastconv.conv2d_grad_input(gy, x, w, *args)
    got_dw = torch.ops.fastconv.conv2d_grad_weight(gy, x, w, *args)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for result, want in ((got, expected), (got_dx, expected_dx), (got_dw, expected_dw)):
        assert result.shape == want.shape
        torch.testing.assert_close(result.double(), want, rtol=0, atol=tol * want.abs().max().item())


# --- the Winograd F(2x2, 3x3) path (float32, stride-1 3x3, C and K >= 32, NCHW and NHWC; FASTCONV_WINOGRAD=2 keeps
# NCHW batches from F(4x4, 3x3)) ------------------------------------------------------------------------------------

# (N, C, K, H, W, padding [top, left, bottom, right]): odd and even outputs (half-outside edge tiles), the
# padding of 'same' and 'valid', uneven padding (as 'same' makes for even kernels; here via the raw op), one
# tile, a K that does not fill the micro-kernel's rows, and more tiles than one block.
WINOGRAD_CASES = [(2, 32, 40, 7, 9, [1, 1, 1, 1]), (3, 64, 32, 8, 8, [0, 0, 0, 0]), (1, 33, 35, 5, 6, [2, 2, 2, 2]),
                  (2, 48, 64, 2, 2, [1, 1, 1, 1]), (2, 40, 36, 9, 4, [0, 1, 2, 1]), (5, 300, 37, 4, 5, [1, 1, 1, 1]),
                  (8, 32, 33, 19, 20, [1, 1, 1, 1]),  # 800 tiles: several GEMM blocks, grad-weight in chunks
                  (3, 256, 260, 16, 15, [1, 1, 1, 1])]  # large K x C: grad-weight GEMMs split over xi, 2 blocks


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=[str(i) for i in range(len(WINOGRAD_CASES))])
def test_conv2d_winograd_matches_torch(case, layout, isa, monkeypatch, restore_num_threads):
    """Forward, grad-input (stride 1: the forward conv of dy with flipped weights, Winograd too) and
    grad-weight (F(3x3, 2x2)) against torch in float64; the results differ from the GEMM path's
    (FASTCONV_WINOGRAD=0) in rounding only, and are bitwise the same for 1 and 2 threads."""
    monkeypatch.setenv("FASTCONV_WINOGRAD", "2")
    N, C, K, H, W, pad = case
    gen = torch.Generator().manual_seed(C + K)
    x, w = torch.randn(N, C, H, W, generator=gen), torch.randn(K, C, 3, 3, generator=gen)
    b = torch.randn(K, generator=gen)
    mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x, w = x.contiguous(memory_format=mf), w.contiguous(memory_format=mf)
    args = ([1, 1], pad, [1, 1], 1)
    padded = F.pad(x.double(), (pad[1], pad[3], pad[0], pad[2]))
    expected = F.conv2d(padded, w.double(), b.double())
    gy = torch.randn(expected.shape, generator=gen).contiguous(memory_format=mf)
    xd, wd = padded.clone().requires_grad_(), w.double().requires_grad_()
    gx_expected, gw_expected = torch.autograd.grad(F.conv2d(xd, wd), (xd, wd), gy.double())
    gx_expected = gx_expected[:, :, pad[0]:pad[0] + H, pad[1]:pad[1] + W]
    ops = torch.ops.fastconv

    def run():
        return (ops.conv2d(x, w, b, *args), ops.conv2d_grad_input(gy, x, w, *args),
                ops.conv2d_grad_weight(gy, x, w, *args))

    results = run()
    assert all(r.is_contiguous(memory_format=mf) for r in results)
    for got, want in zip(results, (expected, gx_expected, gw_expected)):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6 * want.abs().max().item())
    torch.set_num_threads(1)
    assert all(torch.equal(u, v) for u, v in zip(run(), results))
    torch.set_num_threads(restore_num_threads)
    monkeypatch.setenv("FASTCONV_WINOGRAD", "0")
    gemm_results = run()
    for got, want, wino, name in zip(gemm_results, (expected, gx_expected, gw_expected), results, ("out", "dx", "dw")):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6 * want.abs().max().item())
        assert not torch.equal(got, wino), f"{name}: the Winograd path did not run"


# (N, C, K, H, W, padding): batches of 8 or more take the image-lane Winograd forward (groups of 16 images;
# a last group of 4, one of 1, a batch of 8 alone), blocks of whole tile rows and parts of one (a wide map), edge
# tiles half outside, padding 0 and 2, a 2x2 map (unpadded: padded, it is gemm_few_pixels'); the weight gradient
# takes lanes over images too. NHWC pixels go 16 channels at a time: channel counts of 33, 35, 36 and 40 leave
# partial groups.
IMAGE_LANE_CASES = [(20, 33, 35, 5, 6, 2), (17, 40, 36, 9, 4, 0), (8, 32, 32, 3, 70, 1), (16, 48, 64, 4, 4, 0),
                    (16, 64, 40, 8, 8, 1), (40, 33, 40, 4, 3, 1),  # 3 groups of images on a map of 2x2 tiles
                    (16, 256, 256, 8, 8, 1)]  # K x C large: grad-weight transforms panels and GEMMs over threads


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", IMAGE_LANE_CASES, ids=[str(i) for i in range(len(IMAGE_LANE_CASES))])
def test_conv2d_winograd_image_lanes_match_tile_lanes(case, layout, isa, monkeypatch, restore_num_threads):
    """The F(2x2, 3x3) forward and grad-input of a batch (lanes over images) against torch, and bitwise the same
    as each image alone (a batch of one: lanes over tiles), which computes every tile the same way; the weight
    gradient (lanes over images too, summed in another order) against torch, the same for 1 and 2 threads."""
    monkeypatch.setenv("FASTCONV_WINOGRAD", "2")
    N, C, K, H, W, pad = case
    mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator().manual_seed(N + C)
    x, w, b = torch.randn(N, C, H, W, generator=gen), torch.randn(K, C, 3, 3, generator=gen), torch.randn(K, generator=gen)
    x, w = x.contiguous(memory_format=mf), w.contiguous(memory_format=mf)
    assert fastconv._ops.cpu_conv2d_algorithms(x, w, 1, pad)["forward"] == "winograd_image_lanes"
    args = ([1, 1], [pad] * 4, [1, 1], 1)
    ops = torch.ops.fastconv
    got = ops.conv2d(x, w, b, *args)
    assert got.is_contiguous(memory_format=mf)
    expected = F.conv2d(x.double(), w.double(), b.double(), padding=pad)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=2e-6 * expected.abs().max().item())
    gy = torch.randn(got.shape, generator=gen).contiguous(memory_format=mf)
    got_dx = ops.conv2d_grad_input(gy, x, w, *args)
    xd = x.double().requires_grad_()
    (expected_dx,) = torch.autograd.grad(F.conv2d(xd, w.double(), padding=pad), xd, gy.double())
    torch.testing.assert_close(got_dx.double(), expected_dx, rtol=0, atol=2e-6 * expected_dx.abs().max().item())
    got_dw = ops.conv2d_grad_weight(gy, x, w, *args)
    wd = w.double().requires_grad_()
    (expected_dw,) = torch.autograd.grad(F.conv2d(x.double(), wd, padding=pad), wd, gy.double())
    torch.testing.assert_close(got_dw.double(), expected_dw, rtol=0, atol=2e-6 * expected_dw.abs().max().item())
    torch.set_num_threads(1)
    assert torch.equal(ops.conv2d_grad_weight(gy, x, w, *args), got_dw)
    torch.set_num_threads(restore_num_threads)
    for n in range(N):
        assert torch.equal(got[n:n + 1], ops.conv2d(x[n:n + 1], w, b, *args)), f"image {n}"
        assert torch.equal(got_dx[n:n + 1], ops.conv2d_grad_input(gy[n:n + 1], x[n:n + 1], w, *args)), f"dx image {n}"


# (N, C, K, H, W, padding): NCHW batches whose maps select.cpp gives F(4x4, 3x3) tiles: odd and even maps with
# edge tiles partly outside, a last group of 4 images and one of 1, padding 2 and 0 (the grad-input's flipped
# problem then pads 0 or 2; padding 3 makes it -1), a wide map (blocks of part of a tile row), the 16-channel minimum (its
# grad-input is thin: the direct kernel's), and a K x C large enough for the weight gradient's planes in parallel.
F4_CASES = [(16, 32, 40, 7, 9, 1), (20, 33, 35, 12, 10, 2), (17, 40, 36, 9, 8, 0), (8, 32, 32, 8, 70, 1),
            (16, 16, 24, 12, 12, 1), (16, 256, 256, 8, 8, 1),
            (16, 32, 40, 8, 9, 3)]  # padding 3: the grad-input's flipped problem pads -1


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", F4_CASES, ids=[str(i) for i in range(len(F4_CASES))])
def test_conv2d_winograd_f4_matches_torch(case, layout, isa, restore_num_threads):
    """The F(4x4, 3x3) forward, grad-input and grad-weight against torch in float64, within 1e-5 of the result's
    scale (its transforms round ~4x more than F(2x2, 3x3)'s, which holds 2e-6); bitwise the same for 1 and 2
    threads, and the forward and grad-input whichever images share the lanes (the first 8 images alone give the
    same bits as in the whole batch)."""
    N, C, K, H, W, pad = case
    mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator().manual_seed(N + C + K)
    x, w, b = torch.randn(N, C, H, W, generator=gen), torch.randn(K, C, 3, 3, generator=gen), torch.randn(K, generator=gen)
    x, w = x.contiguous(memory_format=mf), w.contiguous(memory_format=mf)
    thin = C <= 16  # its grad-input has 16 outputs: the thin kernel's (select.cpp)
    assert fastconv._ops.cpu_conv2d_algorithms(x, w, 1, pad) == {
        "forward": "winograd_f4_image_lanes",
        "grad_input": "flipped_forward:" + ("direct_few_outputs" if thin else "winograd_f4_image_lanes"),
        "grad_weight": "winograd_f4_image_lanes"}
    args = ([1, 1], [pad] * 4, [1, 1], 1)
    ops = torch.ops.fastconv
    gy = torch.randn(N, K, H + 2 * pad - 2, W + 2 * pad - 2, generator=gen).contiguous(memory_format=mf)

    def run(images):
        return (ops.conv2d(x[images], w, b, *args), ops.conv2d_grad_input(gy[images], x[images], w, *args),
                ops.conv2d_grad_weight(gy[images], x[images], w, *args))

    results = run(slice(None))
    assert all(r.is_contiguous(memory_format=mf) for r in results)
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    expected = F.conv2d(xd, wd, b.double(), padding=pad)
    expected_dx, expected_dw = torch.autograd.grad(expected, (xd, wd), gy.double())
    for got, want in zip(results, (expected, expected_dx, expected_dw)):
        torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=1e-5 * want.abs().max().item())
    torch.set_num_threads(1)
    assert all(torch.equal(u, v) for u, v in zip(run(slice(None)), results))
    torch.set_num_threads(restore_num_threads)
    first8 = run(slice(0, 8))
    assert torch.equal(first8[0], results[0][:8]) and torch.equal(first8[1], results[1][:8])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("algorithm", ["winograd_tile_lanes", "winograd_image_lanes", "winograd_f4_image_lanes"])
def test_conv2d_winograd_non_finite_inputs_match_torch(algorithm, layout, isa, monkeypatch):
    """A NaN or an infinity in x or dy reaches the outputs torch's direct sums give it to, no others: the
    transforms would spread it over whole tiles, so a Winograd result that is not all finite is computed again by
    the GEMM. Finite values agree as usual. (Non-finite weights are not covered: the GEMM multiplies the zero
    padding by them, NaN at the borders where torch skips the padding.)"""
    N = 2 if algorithm == "winograd_tile_lanes" else 16
    if algorithm == "winograd_image_lanes":
        monkeypatch.setenv("FASTCONV_WINOGRAD", "2")
    mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator().manual_seed(7)
    x, w = torch.randn(N, 32, 12, 12, generator=gen), torch.randn(40, 32, 3, 3, generator=gen)
    gy = torch.randn(N, 40, 12, 12, generator=gen)
    x[1, 5, 6, 6], x[0, 2, 0, 9], gy[1, 7, 4, 11], gy[0, 3, 0, 0] = float("inf"), float("nan"), float("-inf"), float("nan")
    x, w, gy = (t.contiguous(memory_format=mf) for t in (x, w, gy))
    assert fastconv._ops.cpu_conv2d_algorithms(x, w, 1, 1)["forward"] == algorithm
    _assert_non_finite_match_torch(x, w, gy, (1, 1), 1, rtol=1e-4, atol=1e-3)


def _assert_non_finite_match_torch(x, w, gy, stride, padding, rtol, atol, atol_of_largest=False):
    """Forward, grad-input and grad-weight against torch in float64: NaN and infinities where torch's are, the
    finite values within rtol / atol (atol_of_largest: atol times each result's largest finite value)."""
    args = (list(stride), [padding] * 4, [1, 1], 1)
    ops = torch.ops.fastconv
    got = (ops.conv2d(x, w, None, *args), ops.conv2d_grad_input(gy, x, w, *args), ops.conv2d_grad_weight(gy, x, w, *args))
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    expected = F.conv2d(xd, wd, stride=stride, padding=padding)
    wanted = (expected.detach(), *torch.autograd.grad(expected, (xd, wd), gy.double()))
    for g, want, name in zip(got, wanted, ("out", "dx", "dw")):
        assert torch.equal(torch.isnan(g), torch.isnan(want)), f"{name}: NaN where torch has none, or missing"
        assert torch.equal(torch.isinf(g), torch.isinf(want)), f"{name}: infinities differ"
        finite = torch.isfinite(want)
        scale = want[finite].abs().max().item() if atol_of_largest else 1.0
        torch.testing.assert_close(g.double()[finite], want[finite], rtol=rtol, atol=atol * scale)


# --- the direct paths for thin convs (few output channels forward, few taps grad-weight; NCHW float32) ------

# --- one GEMM per output pixel on small maps --------------------------------------------------------------

# (N, C, K, H, W, kernel, stride, padding, dilation): the fast CIFAR net's 3x3 map (grad-input flipped onto the
# same map), images and channels that are not whole tiles or k blocks (13 images, 130 -> 140 channels), a 5x5
# input at stride 2 (also with dilation 2), a 2x2 map, and a 1x1 map whose output reads a single tap.
FEW_PIXEL_CASES = [(24, 64, 48, 3, 3, 3, 1, 1, 1), (13, 130, 140, 3, 3, 3, 1, 1, 1),
                   (9, 20, 33, 5, 5, 3, 2, 1, 1), (17, 24, 40, 2, 2, 3, 1, 1, 1),
                   (10, 32, 20, 5, 5, 3, 2, 2, 2), (8, 16, 17, 1, 1, 3, 1, 1, 1),
                   (8, 16, 17, 1, 1, 2, 2, 2, 1)]  # output pixel (0, 0) reads no tap; taps r, s = 0 read no pixel


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", FEW_PIXEL_CASES, ids=[str(i) for i in range(len(FEW_PIXEL_CASES))])
def test_conv2d_few_pixels_matches_torch(case, layout, dtype, isa, restore_num_threads):
    """The per-pixel GEMMs (select.cpp: few_pixels_fits): the forward with bias, the grad-input (at stride 1 the
    same GEMM on the flipped problem) and the per-tap weight gradient, against torch in float64; bitwise the same
    for 1 and 2 threads (which block the images differently)."""
    N, C, K, H, W, kernel, stride, padding, dilation = case
    mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator().manual_seed(N * C + K)
    x = torch.randn(N, C, H, W, generator=gen, dtype=dtype).contiguous(memory_format=mf)
    w = torch.randn(K, C, kernel, kernel, generator=gen, dtype=dtype).contiguous(memory_format=mf)
    b = torch.randn(K, generator=gen, dtype=dtype)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    algorithms = fastconv._ops.cpu_conv2d_algorithms(x, w, **kwargs)
    assert algorithms["forward"] == algorithms["grad_weight"] == "gemm_few_pixels"
    args = ([stride] * 2, [padding] * 4, [dilation] * 2, 1)
    ops = torch.ops.fastconv

    def run():
        y = ops.conv2d(x, w, b, *args)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype).contiguous(memory_format=mf)
        return y, ops.conv2d_grad_input(gy, x, w, *args), ops.conv2d_grad_weight(gy, x, w, *args), gy

    *results, gy = run()
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    expected = F.conv2d(xd, wd, b.double(), **kwargs)
    expected_grads = torch.autograd.grad(expected, (xd, wd), gy.double())
    tol = 2e-6 if dtype == torch.float32 else 1e-13
    for got, want in zip(results, (expected, *expected_grads)):
        assert got.dtype == dtype and got.is_contiguous(memory_format=mf)
        torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=tol * want.abs().max().item())
    torch.set_num_threads(1)
    assert all(torch.equal(u, v) for u, v in zip(run()[:3], results))

# (N, C, K, H, W, kernel, stride, padding, dilation): rows of several vectors with a partial last one, a
# kernel wider than tall, stride in H only, dilation, negative effective padding in grad-input (kernel 1,
# padding 1), enough 64-wide rows that the weight gradient goes over the images in several cache batches, and
# images large enough that it pads them one slice at a time (and the forward pads fewer rows than an image),
# a first-layer-like conv (K > 16: an image input, its forward is direct too, in channels_last pixel by pixel in
# place) whose channels_last copies go through NCHW in slices of 2, 2 and 1 images, large images with stride_h 2
# (the weight gradient's row path, one image per slice), and image inputs to 20 to 70 channels (the channels_last
# forward's blocks of 3 vectors, and of 4 then 1; its weight gradient in place, at stride_h 2, and at dilation 2
# from gathered taps), and 5 to 16 output channels from more than 4 (the channels_last weight gradient in place
# from over half a vector of channels) at stride_h 2 with dilation 2, and with a 1x5 kernel; 17 -> 4 channels padded by more than the kernel reaches,
# whose channels_last grad-input is an image input's forward (4 -> 17 channels) with negative padding.
THIN_CASES = [(3, 3, 16, 37, 45, 3, 1, 1, 1), (2, 6, 16, 14, 14, 5, 1, 0, 1),
              (2, 5, 7, 19, 33, (3, 5), (2, 1), (1, 2), 1),
              (2, 4, 6, 21, 40, 3, 1, 2, 2), (2, 3, 9, 12, 20, 1, 1, 1, 1), (12, 2, 5, 64, 64, 3, 1, 1, 1),
              (3, 1, 2, 1100, 1100, 3, 1, 1, 1), (5, 3, 24, 120, 120, 3, 1, 1, 1),
              (3, 1, 2, 1100, 1100, 3, (2, 1), 1, 1),
              (3, 3, 40, 17, 19, 3, 1, 1, 1), (2, 3, 70, 9, 11, 3, 1, 1, 1),
              (2, 3, 20, 15, 13, 3, (2, 1), 1, 1), (2, 4, 20, 15, 17, 3, 1, 2, 2),
              (2, 6, 12, 17, 15, 3, (2, 1), 1, 2), (3, 10, 9, 9, 21, (1, 5), 1, (0, 2), 1),
              (2, 17, 4, 8, 8, 3, 1, 3, 1), (2, 17, 4, 3, 11, (1, 4), 1, 4, 1)]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", THIN_CASES, ids=[str(i) for i in range(len(THIN_CASES))])
def test_conv2d_thin_direct_paths_match_torch(case, layout, isa):
    """Forward (K <= 16 output channels or C <= 4 input channels: the direct row kernel; channels_last image
    inputs pixel by pixel in place), grad-input (its forward conv has C output channels) and grad-weight
    (C * R * S <= 160 taps: the direct row-sum kernel) against torch in float64; other channels_last problems
    through NCHW copies, results in torch's memory format."""
    N, C, K, H, W, kernel, stride, padding, dilation = case
    gen = torch.Generator().manual_seed(N * C * K)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(N, C, H, W, generator=gen).contiguous(memory_format=mf).requires_grad_()
    w = torch.randn(K, C, kh, kw, generator=gen).contiguous(memory_format=mf).requires_grad_()
    b = torch.randn(K, generator=gen, requires_grad=True)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    out = conv2d(x, w, b, **kwargs)
    gy = torch.randn(out.shape, generator=gen)
    grads = torch.autograd.grad(out, (x, w, b), gy)
    xd, wd, bd = (t.detach().double().requires_grad_() for t in (x, w, b))
    expected = F.conv2d(xd, wd, bd, **kwargs)
    expected_grads = torch.autograd.grad(expected, (xd, wd, bd), gy.double())
    for got, want in zip((out, *grads), (expected, *expected_grads)):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6 * want.abs().max().item())
    assert out.stride() == expected.stride() and grads[0].stride() == expected_grads[0].stride()  # torch's layout


# (N, C, K, H, W, kernel, stride, padding): LeNet's 6 -> 16 layer (10x10 outputs: a partial last vector of the
# planes' weight gradient), the row path (stride_h 2, rows of 12), and 3 -> 6 / 3 -> 3 (channels_last in place
# with AVX2, and through NCHW copies).
NON_FINITE_THIN_CASES = [(2, 6, 16, 14, 14, 5, (1, 1), 0), (2, 3, 6, 12, 13, 3, (2, 1), 1), (2, 3, 3, 12, 12, 3, (1, 1), 1)]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", NON_FINITE_THIN_CASES, ids=[str(i) for i in range(len(NON_FINITE_THIN_CASES))])
def test_conv2d_thin_direct_paths_non_finite_inputs_match_torch(case, layout, isa):
    """An infinity or a NaN in x or dy reaches the outputs and weight-gradient taps torch's sums give it to, no
    others: the vector lanes past a row's or plane's last output hold input values no output reads (dy's zeros
    there times an infinity would be NaN). (dy's non-finite values next to padding are not covered: torch
    multiplies the padding's zeros by them, NaN where the direct kernels skip the padding rows.)"""
    N, C, K, H, W, kernel, stride, padding = case
    mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    gen = torch.Generator().manual_seed(11)
    x, w = torch.randn(N, C, H, W, generator=gen), torch.randn(K, C, kernel, kernel, generator=gen)
    x[0, 1, H - 1, 0], x[1, 0, H // 2, W - 1], x[1, 2, H - 2, 3] = float("inf"), float("nan"), float("-inf")
    out_shape = F.conv2d(x, w, stride=stride, padding=padding).shape
    gy = torch.randn(out_shape, generator=gen)
    gy[1, K - 1, out_shape[2] // 2, out_shape[3] // 2] = float("inf")  # (inside: see the docstring)
    x, w, gy = (t.contiguous(memory_format=mf) for t in (x, w, gy))
    algorithms = fastconv._ops.cpu_conv2d_algorithms(x, w, stride, padding)
    assert algorithms["grad_weight"] == "direct_few_taps", algorithms
    _assert_non_finite_match_torch(x, w, gy, stride, padding, rtol=1e-5, atol=1e-5, atol_of_largest=True)


DEPTHWISE_BITWISE = [  # (N, C, H, W, kernel, stride, padding, dilation, channels_last)
    (1, 4, 6, 6, 3, 1, 1, 1, False),
    (3, 16, 13, 11, 3, 2, 1, 1, False),
    (2, 8, 12, 12, 5, 1, 2, 2, False),
    (2, 32, 14, 14, 3, 1, 1, 1, True),
    (2, 24, 15, 9, 3, 2, 0, 1, True),
]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch runs oneDNN's depthwise kernel")
@pytest.mark.parametrize("case", DEPTHWISE_BITWISE, ids=lambda c: "x".join(map(str, c[:4])) + ("-cl" if c[-1] else ""))
def test_depthwise_forward_and_grad_input_equal_torch_bitwise(case, isa):
    """float32 depthwise forward and grad-input sum in oneDNN's order with FMAs (forward: bias first in NCHW,
    last in NHWC; grad-input, undilated: each dx element's taps in (r, s) order), so they equal torch's bit for
    bit on every ISA - even on the [-9, 9] values of torch's samples, where cancellation leaves a different summation order
    1e-5 apart."""
    n, c, h, w, k, stride, padding, dilation, channels_last = case
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-9, 10, (n, c, h, w), generator=gen) + torch.rand(n, c, h, w, generator=gen)
    weight = torch.randint(-9, 10, (c, 1, k, k), generator=gen) + torch.rand(c, 1, k, k, generator=gen)
    bias = torch.rand(c, generator=gen) * 18 - 9
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    x.requires_grad_()
    expected, got = F.conv2d(x, weight, bias, **kwargs), conv2d(x, weight, bias, **kwargs)
    assert torch.equal(got, expected)
    if dilation != 1:  # torch's dilated depthwise backward takes another path, with its own order
        return
    grad_output = torch.randn(expected.shape, generator=gen).contiguous(memory_format=torch.contiguous_format
                                                                        if not channels_last else torch.channels_last)
    assert torch.equal(torch.autograd.grad(got, x, grad_output)[0], torch.autograd.grad(expected, x, grad_output)[0])


def test_bogus_isa_raises(monkeypatch):
    """FASTCONV_ISA=bogus is a clear error naming the variable and the choices, at the next call."""
    monkeypatch.setenv("FASTCONV_ISA", "bogus")
    with pytest.raises(Exception, match=r"FASTCONV_ISA must be one of scalar, avx2, avx512, avx512_bf16, amx_bf16; got 'bogus'"):
        conv2d(X, W)
    with pytest.raises(ValueError, match="FASTCONV_ISA"):
        fastconv.cpu_info()
    monkeypatch.delenv("FASTCONV_ISA")
    assert fastconv.cpu_info()[0] in BF16_ISAS and fastconv.cpu_info()[0] != "amx_bf16"  # (never chosen unasked)
    torch.testing.assert_close(conv2d(X, W), F.conv2d(X, W), **TOL[torch.float32])


def test_unsupported_isa_raises(monkeypatch):
    """Forcing an ISA the CPU lacks is an error, not an illegal-instruction crash."""
    have = available_isas(BF16_ISAS)
    missing = [isa for isa in ("avx2", "avx512", "avx512_bf16") if isa not in have]
    if not missing:
        pytest.skip("this CPU supports every ISA")
    monkeypatch.setenv("FASTCONV_ISA", missing[0])
    with pytest.raises(Exception, match=re.escape(f"FASTCONV_ISA={missing[0]} but this CPU does not support it")):
        conv2d(X, W)
