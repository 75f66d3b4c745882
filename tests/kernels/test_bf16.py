"""bfloat16 products on the CPU (AVX512-BF16's vdpbf16ps, csrc/cpu/gemm/micro_avx512_bf16.cpp; AMX tiles,
csrc/cpu/gemm/micro_amx.inc, emulated where the CPU has no AMX): bfloat16 convs multiply in bfloat16 with float
accumulators on every path that runs GEMMs, against float64 references of the same bfloat16 values; elsewhere
(FASTCONV_ISA below avx512_bf16) they compute in float32 as before."""
import pytest
import torch
import torch.nn.functional as F

import fastconv
from conftest import BF16_PRODUCT_ISAS, amx_emulated, isa_params
from fastconv._ops import cpu_conv2d_algorithms

HAS_BF16 = "avx512_bf16" in fastconv.cpu_info()[1]
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="CPU has no AVX512-BF16")
ops = torch.ops.fastconv


@pytest.fixture(params=isa_params(BF16_PRODUCT_ISAS))
def products_isa(request, monkeypatch):
    """Each ISA with bfloat16 products, forced (amx_bf16 through the tile emulation where the CPU has no AMX)."""
    if request.param == "amx_bf16" and amx_emulated():
        monkeypatch.setenv("FASTCONV_AMX_EMULATION", "1")
    monkeypatch.setenv("FASTCONV_ISA", request.param)
    return request.param

# (id, N, C, K, H, W, kernel, stride, padding, groups, channels_last, forward algorithm): one problem per path
PROBLEMS = [
    ("gemm", 4, 24, 40, 9, 9, 3, 1, 1, 1, False, "gemm"),
    ("gemm_nhwc_pairs", 4, 24, 40, 9, 9, 3, 1, 1, 1, True, "gemm_bf16_pairs"),
    ("gemm_nhwc_odd_channels", 4, 25, 40, 9, 9, 3, 1, 1, 1, True, "gemm"),
    ("gemm_nhwc_grouped_pairs", 4, 32, 48, 9, 9, 3, 1, 1, 2, True, "gemm_bf16_pairs"),
    ("gemm_col2im", 4, 24, 40, 11, 11, 3, 2, 1, 1, False, "gemm"),
    ("gemm_col2im_nhwc", 4, 24, 40, 11, 11, 3, 2, 1, 1, True, "gemm_bf16_pairs"),
    ("gemm_1x1_nhwc", 4, 64, 48, 8, 8, 1, 1, 0, 1, True, "gemm_bf16_pairs"),
    ("gemm_grouped", 4, 32, 48, 9, 9, 3, 1, 1, 2, False, "gemm"),
    ("winograd_tiles", 2, 32, 48, 9, 9, 3, 1, 1, 1, False, "winograd_tile_lanes"),
    ("nhwc_3x3_takes_the_gemm", 8, 64, 64, 5, 5, 3, 1, 1, 1, True, "gemm_bf16_pairs"),
    ("few_pixels_4x4_nhwc", 8, 64, 64, 4, 4, 3, 1, 1, 1, True, "gemm_few_pixels"),
    ("nhwc_3x3_f4_winograd", 8, 64, 64, 8, 8, 3, 1, 1, 1, True, "winograd_f4_image_lanes"),
    ("winograd_images", 16, 64, 64, 6, 6, 3, 1, 1, 1, False, "winograd_image_lanes"),
    ("winograd_f4_images", 16, 64, 64, 8, 8, 3, 1, 1, 1, False, "winograd_f4_image_lanes"),
    ("direct_few_outputs", 4, 16, 8, 12, 12, 3, 1, 1, 1, False, "direct_few_outputs"),
    ("few_pixels", 9, 32, 40, 3, 3, 3, 1, 1, 1, False, "gemm_few_pixels"),
    ("few_pixels_nhwc", 9, 32, 40, 3, 3, 3, 1, 1, 1, True, "gemm_few_pixels"),
    ("few_pixels_nhwc_odd_channels", 9, 25, 40, 3, 3, 3, 1, 1, 1, True, "gemm_few_pixels"),  # (float copies)
    ("depthwise", 4, 16, 16, 10, 10, 3, 1, 1, 16, False, "depthwise"),
]


def _problem_tensors(N, C, K, H, W, k, groups, channels_last, seed=0):
    g = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(N, C, H, W, generator=g).bfloat16().contiguous(memory_format=fmt)
    w = (torch.randn(K, C // groups, k, k, generator=g) / (C // groups * k * k) ** 0.5).bfloat16()
    return x, w.contiguous(memory_format=fmt)


def _max_rel_error(got, ref):
    return ((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("problem", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_bf16_passes_match_float64(problem, products_isa):
    """Forward, grad-input and grad-weight of bfloat16 tensors with bfloat16 products (Winograd: float products of
    its transformed tiles): within bfloat16's own rounding of the float64 result (the output is rounded to bfloat16
    once)."""
    _, N, C, K, H, W, k, stride, padding, groups, cl, algorithm = problem
    x, w = _problem_tensors(N, C, K, H, W, k, groups, cl)
    if products_isa == "amx_bf16" and algorithm.startswith("winograd"):  # (select.cpp: no Winograd on AMX tiles)
        algorithm = "gemm_bf16_pairs" if cl else "gemm"
    assert cpu_conv2d_algorithms(x, w, stride, padding, 1, groups)["forward"] == algorithm
    args = ([stride, stride], [padding] * 4, [1, 1], groups)
    y = ops.conv2d(x, w, None, *args)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).bfloat16().contiguous(
        memory_format=torch.channels_last if cl else torch.contiguous_format)
    xd, wd, dyd = x.double().requires_grad_(), w.double().requires_grad_(), dy.double()
    ref = F.conv2d(xd, wd, None, stride, padding, 1, groups)
    ref_dx, ref_dw = torch.autograd.grad(ref, (xd, wd), dyd)
    dx = ops.conv2d_grad_input(dy, x, w, *args)
    dw = ops.conv2d_grad_weight(dy, x, w, *args)
    assert y.dtype == dx.dtype == dw.dtype == torch.bfloat16
    for got, expected, what in ((y, ref, "forward"), (dx, ref_dx, "grad_input"), (dw, ref_dw, "grad_weight")):
        assert _max_rel_error(got, expected) < 1.6e-2, what


@needs_bf16
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_bf16_products_run_vdpbf16ps(channels_last, monkeypatch):
    """The pair kernel runs in all three passes, on float panels converted to pairs (NCHW) and on channel pairs
    read in place (NHWC): vdpbf16ps flushes denormal products to zero (as oneDNN's bfloat16 convs do), float32
    FMAs keep them. 2^-65 * 2^-65 = 2^-130 is below float's smallest normal."""
    tiny = 2.0 ** -65
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.full((2, 200, 5, 5), tiny).bfloat16().contiguous(memory_format=fmt)
    w = torch.full((32, 200, 1, 1), tiny).bfloat16().contiguous(memory_format=fmt)
    dy = torch.full((2, 32, 5, 5), tiny).bfloat16().contiguous(memory_format=fmt)
    args = ([1, 1], [0] * 4, [1, 1], 1)
    gemm = "gemm_bf16_pairs" if channels_last else "gemm"
    monkeypatch.setenv("FASTCONV_ISA", "avx512_bf16")
    assert cpu_conv2d_algorithms(x, w) == {"forward": gemm, "grad_input": f"flipped_forward:{gemm}",
                                           "grad_weight": "gemm"}
    passes = (lambda: ops.conv2d(x, w, None, *args), lambda: ops.conv2d_grad_input(dy, x, w, *args),
              lambda: ops.conv2d_grad_weight(dy, x, w, *args))
    monkeypatch.setenv("FASTCONV_ISA", "avx512")
    assert all((run() > 0).all() for run in passes)
    monkeypatch.setenv("FASTCONV_ISA", "avx512_bf16")
    assert all((run() == 0).all() for run in passes)


# (id, N, C, K, H, kernel, stride, layout, passes): problems whose passes run a GEMM on AMX tiles, on float panels
# converted to bfloat16 (NCHW im2col, the strided grad-input, the weight gradients) or on NHWC channel pairs moved as
# 32-bit elements (the pair GEMM, the few-pixel GEMM, also on a map Winograd takes elsewhere); reductions that are not
# whole steps of 32 and row counts that are not whole tiles of 16 (40 output channels).
AMX_GEMMS = [
    ("nchw", 4, 24, 40, 9, 3, 1, torch.contiguous_format, ("forward", "grad_input", "grad_weight")),
    ("nchw_odd_reduction", 3, 5, 40, 9, 3, 1, torch.contiguous_format, ("forward",)),
    ("col2im", 4, 24, 40, 11, 3, 2, torch.contiguous_format, ("grad_input",)),
    ("nhwc_odd_channels", 4, 25, 40, 9, 3, 1, torch.channels_last, ("forward", "grad_weight")),
    # pair-element panels (NHWC channel pairs read in place): 9 * 12 = 108 pairs, 3 * 36 = 108, 4 * 33 = 132
    ("nhwc_pairs", 4, 24, 40, 9, 3, 1, torch.channels_last, ("forward", "grad_input", "grad_weight")),
    ("nhwc_pairs_3x3_winograd_shape", 16, 72, 40, 8, 3, 1, torch.channels_last, ("forward", "grad_input")),
    ("few_pixels_nhwc_pairs", 9, 66, 40, 3, 3, 1, torch.channels_last, ("forward", "grad_input", "grad_weight")),
]


@pytest.mark.parametrize("case", AMX_GEMMS, ids=[c[0] for c in AMX_GEMMS])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.skipif(not amx_emulated(), reason="reads the tile emulation's counter (no AMX emulation here)")
def test_amx_tiles_compute_the_converted_panel_gemms(case, threads, monkeypatch, restore_num_threads):
    """Under FASTCONV_ISA=amx_bf16 these passes' GEMMs run on the (emulated) tiles, on every thread (each configures
    its tiles per GEMM block; the emulation raises on a tile instruction without that), within bfloat16 rounding
    of float64; and Winograd never runs there for bfloat16."""
    torch.set_num_threads(threads)
    monkeypatch.setenv("FASTCONV_AMX_EMULATION", "1")
    monkeypatch.setenv("FASTCONV_ISA", "amx_bf16")
    _, N, C, K, H, k, stride, fmt, tiled = case
    g = torch.Generator().manual_seed(C + K)
    x = torch.randn(N, C, H, H, generator=g).bfloat16().contiguous(memory_format=fmt)
    w = (torch.randn(K, C, k, k, generator=g) / (C * k * k) ** 0.5).bfloat16().contiguous(memory_format=fmt)
    args = ([stride, stride], [k // 2] * 4, [1, 1], 1)
    y = ops.conv2d(x, w, None, *args)
    dy = torch.randn(y.shape, generator=g).bfloat16().contiguous(memory_format=fmt)
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    ref = F.conv2d(xd, wd, None, stride, k // 2)
    ref_dx, ref_dw = torch.autograd.grad(ref, (xd, wd), dy.double())
    passes = {"forward": (lambda: ops.conv2d(x, w, None, *args), ref),
              "grad_input": (lambda: ops.conv2d_grad_input(dy, x, w, *args), ref_dx),
              "grad_weight": (lambda: ops.conv2d_grad_weight(dy, x, w, *args), ref_dw)}
    algorithms = cpu_conv2d_algorithms(x, w, stride, k // 2).values()
    assert not any(a.split(":")[-1].startswith("winograd") for a in algorithms)
    for name in tiled:
        run, expected = passes[name]
        before = ops.amx_emulated_tile_products()
        got = run()
        assert ops.amx_emulated_tile_products() > before, name
        assert _max_rel_error(got, expected) < 1.6e-2, name


def test_amx_is_never_chosen_unasked_and_needs_amx_or_its_emulation(monkeypatch):
    """amx_bf16 runs only when FASTCONV_ISA asks for it; on a CPU without AMX asking is an error unless the
    emulation is asked for too."""
    monkeypatch.delenv("FASTCONV_ISA", raising=False)
    assert fastconv.cpu_info()[0] != "amx_bf16"
    if not amx_emulated():
        pytest.skip("this CPU has AMX, or no AVX512-BF16 to emulate it on")
    monkeypatch.delenv("FASTCONV_AMX_EMULATION", raising=False)
    monkeypatch.setenv("FASTCONV_ISA", "amx_bf16")
    with pytest.raises(ValueError, match="FASTCONV_ISA=amx_bf16 but this CPU does not support it"):
        fastconv.cpu_info()
    monkeypatch.setenv("FASTCONV_AMX_EMULATION", "1")
    assert fastconv.cpu_info()[0] == "amx_bf16"


@needs_bf16
def test_float32_inputs_keep_float_products(monkeypatch):
    """Only bfloat16 operands multiply in bfloat16: float32 convs are bitwise the same with avx512_bf16 as with
    avx512."""
    x, w = _problem_tensors(4, 24, 40, 9, 9, 3, 1, False)
    x, w = x.float() + 1e-3, w.float()
    args = ([1, 1], [1] * 4, [1, 1], 1)
    monkeypatch.setenv("FASTCONV_ISA", "avx512")
    expected = ops.conv2d(x, w, None, *args)
    monkeypatch.setenv("FASTCONV_ISA", "avx512_bf16")
    assert torch.equal(ops.conv2d(x, w, None, *args), expected)


def test_forcing_bf16_on_a_cpu_without_it_raises(monkeypatch):
    if HAS_BF16:
        pytest.skip("this CPU has AVX512-BF16")
    monkeypatch.setenv("FASTCONV_ISA", "avx512_bf16")
    with pytest.raises(ValueError, match="FASTCONV_ISA=avx512_bf16 but this CPU does not support it"):
        fastconv.cpu_info()


@needs_bf16
def test_bf16_pairs_take_views_at_odd_offsets(monkeypatch):
    """A channels_last bfloat16 view starting at an odd element (2-byte aligned) reads the same as a fresh copy: the
    pair path reads channel pairs as 32-bit elements, so such views are copied first."""
    monkeypatch.setenv("FASTCONV_ISA", "avx512_bf16")
    N, C, H, W, K = 2, 24, 7, 7, 40
    g = torch.Generator().manual_seed(5)
    base = torch.randn(N * H * W * C + 1, generator=g).bfloat16()
    x = base[1:].view(N, H, W, C).permute(0, 3, 1, 2)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 4 == 2
    w = torch.randn(K, C, 3, 3, generator=g).bfloat16().contiguous(memory_format=torch.channels_last)
    assert cpu_conv2d_algorithms(x, w, 1, 1)["forward"] == "gemm_bf16_pairs"
    args = ([1, 1], [1] * 4, [1, 1], 1)
    y = ops.conv2d(x, w, None, *args)
    assert torch.equal(y, ops.conv2d(x.clone(memory_format=torch.channels_last), w, None, *args))
    dy = torch.randn(N * H * W * K + 1, generator=g).bfloat16()[1:].view(N, H, W, K).permute(0, 3, 1, 2)
    dx = ops.conv2d_grad_input(dy, x, w, *args)
    assert torch.equal(dx, ops.conv2d_grad_input(dy.clone(memory_format=torch.channels_last), x, w, *args))


# (id, N, C, K, H, W, kernel, stride, padding, dilation, groups): the pair GEMM with its A rows read in place
# (gemm/pair_rows.cpp, AVX512-BF16). Pixel counts that are not whole tiles of 8, output channels that are not whole
# panels of 32, reduction blocks of several taps (12 pairs a tap), of part of a tap (130 pairs: blocks of 128 and
# 2), taps in the padding on every side, strides, dilation, groups, 1x1 and 5x5.
PAIR_ROWS = [
    ("3x3_s1", 3, 24, 40, 9, 10, 3, 1, 1, 1, 1),
    ("3x3_s2", 5, 64, 64, 15, 16, 3, 2, 1, 1, 1),
    ("wide_tap_split", 2, 260, 36, 5, 6, 3, 1, 1, 1, 1),
    ("1x1_s2", 3, 64, 72, 9, 8, 1, 2, 0, 1, 1),
    ("5x5_dilated_padded", 2, 16, 33, 11, 9, 5, 1, 3, 2, 1),
    ("grouped_strided", 3, 48, 40, 10, 10, 3, 2, 1, 1, 2),
    ("one_pixel", 1, 8, 40, 1, 1, 3, 1, 1, 1, 1),
]


@needs_bf16
@pytest.mark.parametrize("case", PAIR_ROWS, ids=[c[0] for c in PAIR_ROWS])
def test_pair_rows_forward(case, monkeypatch, restore_num_threads):
    """Forward (with bias) and the stride-1 grad-input (a forward of flipped weights) of the in-place pair GEMM
    against float64, and bitwise the same on 1 and 2 threads."""
    _, N, C, K, H, W, k, stride, padding, dilation, groups = case
    monkeypatch.setenv("FASTCONV_ISA", "avx512_bf16")
    x, w = _problem_tensors(N, C, K, H, W, k, groups, True)
    bias = torch.randn(K, generator=torch.Generator().manual_seed(2)).bfloat16()
    assert cpu_conv2d_algorithms(x, w, stride, padding, dilation, groups)["forward"] == "gemm_bf16_pairs"
    args = ([stride, stride], [padding] * 4, [dilation, dilation], groups)
    ref = F.conv2d(x.double(), w.double(), bias.double(), stride, padding, dilation, groups)
    runs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs.append(ops.conv2d(x, w, bias, *args))
    assert torch.equal(runs[0], runs[1])
    assert runs[0].is_contiguous(memory_format=torch.channels_last)
    assert _max_rel_error(runs[0], ref) < 8e-3
    if case[0] in ("3x3_s1", "wide_tap_split"):
        assert cpu_conv2d_algorithms(x, w, stride, padding, dilation, groups)["grad_input"] == \
            "flipped_forward:gemm_bf16_pairs"
        dy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3)).bfloat16().contiguous(
            memory_format=torch.channels_last)
        xd = x.double().requires_grad_()
        (ref_dx,) = torch.autograd.grad(F.conv2d(xd, w.double(), None, stride, padding, dilation, groups), xd,
                                        dy.double())
        assert _max_rel_error(ops.conv2d_grad_input(dy, x, w, *args), ref_dx) < 8e-3


# (id, N, C, K, H, W, kernel, stride, padding, dilation): the strided grad-input as per-phase GEMMs gathering dy's
# pairs in place (gemm/pair_rows.cpp). 3x3 at stride 2 (phases of 4, 2, 2, 1 taps), 1x1 at stride 2 (three phases
# with no tap: zeros), stride 3 with dilation 2 and uneven maps, K / 2 = 130 pairs (a tap split over two blocks), a
# single output pixel.
GATHERED_GRAD_INPUT = [
    ("3x3_s2", 3, 40, 64, 15, 16, 3, 2, 1, 1),
    ("1x1_s2", 2, 24, 48, 9, 8, 1, 2, 0, 1),
    ("5x5_s3_dilated", 2, 16, 34, 17, 13, 5, 3, 2, 2),
    ("wide_k", 2, 20, 260, 7, 6, 3, 2, 1, 1),
    ("one_output_pixel", 3, 8, 36, 2, 2, 3, 2, 1, 1),
]


@needs_bf16
@pytest.mark.parametrize("case", GATHERED_GRAD_INPUT, ids=[c[0] for c in GATHERED_GRAD_INPUT])
def test_gathered_strided_grad_input(case, monkeypatch, restore_num_threads):
    """Against float64, bfloat16 and channels_last, bitwise the same on 1 and 2 threads; an odd K (no pairs along
    K) takes the col2im GEMM and agrees too."""
    _, N, C, K, H, W, k, stride, padding, dilation = case
    monkeypatch.setenv("FASTCONV_ISA", "avx512_bf16")
    for K_used in (K, K - 1):
        x, w = _problem_tensors(N, C, K_used, H, W, k, 1, True)
        args = ([stride, stride], [padding] * 4, [dilation, dilation], 1)
        assert cpu_conv2d_algorithms(x, w, stride, padding, dilation, 1)["grad_input"] == "gemm_col2im"
        xd = x.double().requires_grad_()
        ref = F.conv2d(xd, w.double(), None, stride, padding, dilation)
        dy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(4)).bfloat16().contiguous(
            memory_format=torch.channels_last)
        (ref_dx,) = torch.autograd.grad(ref, xd, dy.double())
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(ops.conv2d_grad_input(dy, x, w, *args))
        assert torch.equal(runs[0], runs[1])
        assert runs[0].dtype == torch.bfloat16 and runs[0].is_contiguous(memory_format=torch.channels_last)
        assert _max_rel_error(runs[0], ref_dx) < 8e-3, K_used


# (id, N, C, K, H, W, layout, FASTCONV_WINOGRAD, forward algorithm under bfloat16 products): the image-lane Winograd
# paths, which read bfloat16 x and dy in place and write bfloat16 outputs. Maps and batches that are not whole
# tiles or lane groups; NHWC channel groups of 16, 8 and odd sizes (the lane kernels' partial loads and stores).
WINOGRAD_IN_PLACE = [
    ("f2_nchw", 19, 32, 40, 6, 7, torch.contiguous_format, "2", "winograd_image_lanes"),
    ("f2_nhwc", 19, 32, 40, 6, 7, torch.channels_last, "2", "winograd_image_lanes"),  # (no bfloat16 products only)
    ("f4_nchw", 17, 40, 36, 13, 11, torch.contiguous_format, None, "winograd_f4_image_lanes"),
    ("f4_nhwc", 17, 40, 36, 13, 11, torch.channels_last, None, "winograd_f4_image_lanes"),
    ("f4_nhwc_24_channels", 17, 24, 40, 13, 11, torch.channels_last, None, "winograd_f4_image_lanes"),
    ("f4_nhwc_odd_channels", 17, 25, 37, 13, 11, torch.channels_last, None, "winograd_f4_image_lanes"),
]


@pytest.mark.parametrize("case", WINOGRAD_IN_PLACE, ids=[c[0] for c in WINOGRAD_IN_PLACE])
def test_bf16_winograd_in_place_equals_float_rounded_once(case, isa_bf16, monkeypatch):
    """bfloat16 tensors on the image-lane Winograd paths are widened as they are read and the outputs rounded as they
    are written: bitwise what the float32 path gives for the same (widened) values, rounded to bfloat16 once, on
    every ISA (forward with bias, grad-input, grad-weight); outputs in the input's layout."""
    _, N, C, K, H, W, fmt, winograd, algorithm = case
    if winograd is not None:
        monkeypatch.setenv("FASTCONV_WINOGRAD", winograd)
    if isa_bf16 in BF16_PRODUCT_ISAS and fmt == torch.channels_last and algorithm == "winograd_image_lanes":
        pytest.skip("NHWC F(2x2, 3x3) is not chosen under bfloat16 products (select.cpp)")
    if isa_bf16 == "amx_bf16":
        pytest.skip("no Winograd for bfloat16 on AMX tiles (select.cpp)")
    g = torch.Generator().manual_seed(N + C)
    x = torch.randn(N, C, H, W, generator=g).bfloat16().contiguous(memory_format=fmt)
    w = (torch.randn(K, C, 3, 3, generator=g) / (9 * C) ** 0.5).bfloat16().contiguous(memory_format=fmt)
    b = torch.randn(K, generator=g).bfloat16()
    dy = torch.randn(N, K, H, W, generator=g).bfloat16().contiguous(memory_format=fmt)
    assert cpu_conv2d_algorithms(x, w, 1, 1) == {"forward": algorithm, "grad_input": f"flipped_forward:{algorithm}",
                                                 "grad_weight": algorithm}
    args = ([1, 1], [1] * 4, [1, 1], 1)
    got = (ops.conv2d(x, w, b, *args), ops.conv2d_grad_input(dy, x, w, *args), ops.conv2d_grad_weight(dy, x, w, *args))
    xf, wf, dyf = x.float(), w.float(), dy.float()
    want = (ops.conv2d(xf, wf, b.float(), *args), ops.conv2d_grad_input(dyf, xf, wf, *args),
            ops.conv2d_grad_weight(dyf, xf, wf, *args))
    for got_t, want_t, name in zip(got, want, ("forward", "grad_input", "grad_weight")):
        assert got_t.dtype == torch.bfloat16 and got_t.is_contiguous(memory_format=fmt), name
        assert torch.equal(got_t, want_t.bfloat16()), name


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_bf16_winograd_in_place_non_finite_and_odd_views(layout, isa_bf16):
    """A NaN or an infinity in bfloat16 x or dy reaches the outputs torch's direct sums give it to (the in-place path
    finds its result not all finite and the float copies compute it again); and views that start at an odd
    element read the same as fresh copies."""
    if isa_bf16 == "amx_bf16":
        pytest.skip("no Winograd for bfloat16 on AMX tiles (select.cpp)")
    g = torch.Generator().manual_seed(11)
    N, C, K, H = 16, 32, 40, 12
    base = torch.randn(N * C * H * H + 1, generator=g).bfloat16()
    x = base[1:].view(N, H, H, C).permute(0, 3, 1, 2) if layout == torch.channels_last else base[1:].view(N, C, H, H)
    assert x.data_ptr() % 4 == 2
    w = (torch.randn(K, C, 3, 3, generator=g) / 17).bfloat16().contiguous(memory_format=layout)
    dy = torch.randn(N, K, H, H, generator=g).bfloat16().contiguous(memory_format=layout)
    assert cpu_conv2d_algorithms(x, w, 1, 1)["forward"].startswith("winograd")
    args = ([1, 1], [1] * 4, [1, 1], 1)
    fresh = x.clone(memory_format=layout)
    assert torch.equal(ops.conv2d(x, w, None, *args), ops.conv2d(fresh, w, None, *args))
    assert torch.equal(ops.conv2d_grad_weight(dy, x, w, *args), ops.conv2d_grad_weight(dy, fresh, w, *args))
    x, dy = fresh, dy.clone(memory_format=layout)
    x[1, 5, 6, 6], x[0, 2, 0, 9], dy[1, 7, 4, 11], dy[0, 3, 0, 0] = float("inf"), float("nan"), float("-inf"), float("nan")
    got = (ops.conv2d(x, w, None, *args), ops.conv2d_grad_input(dy, x, w, *args), ops.conv2d_grad_weight(dy, x, w, *args))
    xd, wd = x.double().requires_grad_(), w.double().requires_grad_()
    expected = F.conv2d(xd, wd, padding=1)
    wanted = (expected.detach(), *torch.autograd.grad(expected, (xd, wd), dy.double()))
    for got_t, want, name in zip(got, wanted, ("out", "dx", "dw")):
        assert torch.equal(torch.isnan(got_t), torch.isnan(want)), name
        assert torch.equal(torch.isinf(got_t), torch.isinf(want)), name
        finite = torch.isfinite(want)
        torch.testing.assert_close(got_t.double()[finite], want[finite], rtol=2e-2, atol=2e-2 * want[finite].abs().max().item())


# (N, C, K, H, kernel, stride, groups): strided grad-inputs (col2im): 3x3 and 1x1 at stride 2, maps whose tasks hold
# one image (16x16 outputs) or several (3x3 outputs), and a grouped one (float copies, as before).
COL2IM_CASES = [(5, 24, 40, 32, 3, 2, 1), (18, 32, 48, 6, 3, 2, 1), (6, 32, 24, 15, 1, 2, 1), (4, 32, 48, 9, 3, 2, 2)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", COL2IM_CASES, ids=[str(i) for i in range(len(COL2IM_CASES))])
def test_bf16_col2im_grad_input_in_place(case, layout, threads, isa_bf16, restore_num_threads):
    """The strided grad-input reads bfloat16 dy in place (widened as packed) and sums dx in float per task, rounded
    into bfloat16 once: without bfloat16 products bitwise the float path rounded once; with them (BF16_PRODUCT_ISAS)
    within bfloat16 rounding of float64. With 1 or 2 threads, tasks of the 3x3-output case hold several images,
    and with 1 its last task fewer than the others."""
    torch.set_num_threads(threads)
    N, C, K, H, k, stride, groups = case
    g = torch.Generator().manual_seed(N * C + k)
    x = torch.randn(N, C, H, H, generator=g).bfloat16().contiguous(memory_format=layout)
    w = (torch.randn(K, C // groups, k, k, generator=g) / (C * k * k / groups) ** 0.5).bfloat16().contiguous(
        memory_format=layout)
    pad = k // 2
    P = (H + 2 * pad - k) // stride + 1
    dy = torch.randn(N, K, P, P, generator=g).bfloat16().contiguous(memory_format=layout)
    args = ([stride, stride], [pad] * 4, [1, 1], groups)
    assert cpu_conv2d_algorithms(x, w, stride, pad, 1, groups)["grad_input"] == "gemm_col2im"
    dx = ops.conv2d_grad_input(dy, x, w, *args)
    assert dx.dtype == torch.bfloat16 and dx.is_contiguous(memory_format=layout)
    if isa_bf16 not in BF16_PRODUCT_ISAS:
        assert torch.equal(dx, ops.conv2d_grad_input(dy.float(), x.float(), w.float(), *args).bfloat16())
    else:
        xd, wd = x.double().requires_grad_(), w.double()
        (ref,) = torch.autograd.grad(F.conv2d(xd, wd, None, stride, pad, 1, groups), xd, dy.double())
        assert _max_rel_error(dx, ref) < 1.6e-2


# (N, C, K, H, W, kernel, padding): channels_last image inputs to over 16 channels (the fast CIFAR net's whitening
# layer, ResNet's 3x3 first layer, a 5x5 one on 4 channels): output channels that are not whole vectors and rows
# that are not whole pixel groups.
IMAGE_INPUT_CASES = [(5, 3, 24, 13, 11, 2, 0), (3, 3, 40, 9, 10, 3, 1), (2, 4, 17, 12, 13, 5, 2)]


@pytest.mark.parametrize("case", IMAGE_INPUT_CASES, ids=[str(i) for i in range(len(IMAGE_INPUT_CASES))])
def test_bf16_image_input_nhwc_in_place(case, isa_bf16):
    """channels_last bfloat16 image inputs on the direct kernels read x and dy in place (widened) and write y
    rounded once: bitwise the float path on the same values, y and dW rounded to bfloat16 once, on every ISA;
    a view at an odd element offset reads as a fresh copy."""
    N, C, K, H, W, k, pad = case
    g = torch.Generator().manual_seed(K + k)
    base = torch.randn(N * H * W * C + 1, generator=g).bfloat16()
    x = base[1:].view(N, H, W, C).permute(0, 3, 1, 2)  # channels_last, at an odd element offset
    w = (torch.randn(K, C, k, k, generator=g) / (C * k * k) ** 0.5).bfloat16().contiguous(memory_format=torch.channels_last)
    b = torch.randn(K, generator=g).bfloat16()
    dy = torch.randn(N, K, H + 2 * pad - k + 1, W + 2 * pad - k + 1, generator=g).bfloat16()
    dy = dy.contiguous(memory_format=torch.channels_last)
    algorithms = cpu_conv2d_algorithms(x, w, 1, pad)
    assert (algorithms["forward"], algorithms["grad_weight"]) == ("direct_few_outputs", "direct_few_taps")
    args = ([1, 1], [pad] * 4, [1, 1], 1)
    y, dw = ops.conv2d(x, w, b, *args), ops.conv2d_grad_weight(dy, x, w, *args)
    assert y.dtype == dw.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    xf, wf = x.float(), w.float()
    assert torch.equal(y, ops.conv2d(xf, wf, b.float(), *args).bfloat16())
    assert torch.equal(dw, ops.conv2d_grad_weight(dy.float(), xf, wf, *args).bfloat16())
    fresh = x.clone(memory_format=torch.channels_last)
    assert torch.equal(y, ops.conv2d(fresh, w, b, *args))
    assert torch.equal(dw, ops.conv2d_grad_weight(dy, fresh, w, *args))
