"""fastconv's CUDA kernels against torch.nn.functional on the same GPU (cuDNN, TF32 off) and against a float64
reference: the core conv2d grid of conftest.py in every dtype, bigger problems that exercise several tiles,
split-K and the vector paths, gradcheck in float64, opcheck, CPU / CUDA agreement, bitwise run-to-run
determinism, torch.compile(fullgraph=True), fastconv.convert, max_pool2d (ties, NaN, -inf windows), errors for
mixed devices and unsupported input, tensors past 2^31 elements, and the opt-in tensor-core path.

Skipped as a whole where no GPU is present or fastconv was built without CUDA (FASTCONV_CUDA=0).
"""
import os

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv.functional import conv2d, max_pool2d

from conftest import FORM_SPECS, ConvCase, ConvSpec, conv_specs, make_case, memory_format_flags
from helpers.pool_cases import CONFIG_IDS as POOL_CONFIG_IDS, CONFIGS as POOL_CONFIGS, pool_input


def _has_cuda_kernels():
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key("fastconv::conv2d", "CUDA")
    except Exception:  # noqa: BLE001 - any failure means: no CUDA build
        return False


pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or not hasattr(torch.ops.fastconv, "conv2d") or not _has_cuda_kernels(),
    reason="needs a CUDA GPU and fastconv built with its CUDA kernels (FASTCONV_CUDA=1)",
)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPE_IDS = ["f32", "f64", "f16", "bf16"]
# ||ours - float64 reference|| / ||reference|| (inputs are the same rounded values on both sides)
REL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
# elementwise against cuDNN in the same dtype: |ours - cudnn| <= t * (|cudnn| + max |cudnn|)
CUDNN_TOL = {torch.float32: 3e-5, torch.float64: 1e-11, torch.float16: 6e-3, torch.bfloat16: 5e-2}

SPECS = conv_specs(n_random=40, seed=1234)
SPEC_IDS = [f"{i:02d}-{s.id()}" for i, s in enumerate(SPECS)]


@pytest.fixture(autouse=True)
def _ieee_fp32():
    """cuDNN and cuBLAS in full fp32 (no TF32) while a test runs; the tensor-core path off unless asked for."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             os.environ.pop("FASTCONV_TENSOR_CORES", None))
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[0], saved[1]
    if saved[2] is not None:
        os.environ["FASTCONV_TENSOR_CORES"] = saved[2]
    else:
        os.environ.pop("FASTCONV_TENSOR_CORES", None)


# --- helpers -------------------------------------------------------------------------------------------

def cuda_like(t, device="cuda"):
    """t on the GPU with the same sizes, strides and storage offset (so views stay non-contiguous)."""
    if t is None:
        return None
    base = t._base
    if base is not None and base.is_contiguous():
        return base.to(device).as_strided(t.size(), t.stride(), t.storage_offset())
    return t.to(device)


def cuda_case(spec, dtype, seed):
    case = make_case(spec, dtype, seed=seed)
    case.input, case.weight, case.bias = cuda_like(case.input), cuda_like(case.weight), cuda_like(case.bias)
    return case


def leaves(case):
    x = case.input.detach().requires_grad_()
    w = case.weight.detach().requires_grad_()
    b = case.bias.detach().requires_grad_() if case.bias is not None else None
    return x, w, b


def run(fn, case, grad_output):
    x, w, b = leaves(case)
    out = fn(x, w, b, **case.kwargs)
    inputs = [x, w] + ([b] if b is not None else [])
    grads = torch.autograd.grad(out, inputs, grad_output) if out.numel() else [torch.zeros_like(t) for t in inputs]
    return out.detach(), list(grads)


def random_like(t, seed):
    g = torch.randn(t.shape, dtype=torch.float32, generator=torch.Generator().manual_seed(seed)).to(t.dtype)
    g = g.to(t.device)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        g = g.contiguous(memory_format=torch.channels_last)
    return g


def assert_rel(got, ref, dtype, what):
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    if ref.numel() == 0:
        return
    got = got.double()
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    err, scale = (got - ref).norm().item(), ref.norm().item()
    if scale == 0:
        assert err == 0, f"{what}: expected zeros, |err| = {err}"
    else:
        assert err / scale <= REL[dtype], f"{what}: relative error {err / scale:.3g} > {REL[dtype]:.1g}"


def assert_close_to_cudnn(got, want, dtype, what):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if want.numel() == 0:
        return
    t = CUDNN_TOL[dtype]
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=t, atol=t * scale, msg=lambda m: f"{what}: {m}")


def float64_reference(case, grad_output):
    ref = make_ref_case(case)
    return run(F.conv2d, ref, grad_output.double())


def make_ref_case(case):
    return ConvCase(case.input.double(), case.weight.double(), None if case.bias is None else case.bias.double(),
                    dict(case.kwargs), case.spec)


def check_against_torch(case, dtype, seed=7):
    """fastconv vs cuDNN in dtype (values, layout) and vs a float64 reference (values and all gradients)."""
    expected = F.conv2d(case.input, case.weight, case.bias, **case.kwargs)
    grad_output = random_like(expected, seed)
    out, grads = run(conv2d, case, grad_output)
    cudnn_out, cudnn_grads = run(F.conv2d, case, grad_output)
    ref_out, ref_grads = float64_reference(case, grad_output)
    assert out.device == expected.device and out.dtype == expected.dtype == dtype
    assert out.shape == expected.shape
    assert memory_format_flags(out) == memory_format_flags(expected), (out.stride(), expected.stride())
    assert_close_to_cudnn(out, cudnn_out, dtype, "output")
    assert_rel(out, ref_out, dtype, "output")
    for name, got, want, want64 in zip(["grad_input", "grad_weight", "grad_bias"], grads, cudnn_grads, ref_grads):
        assert got.dtype == dtype and got.shape == want.shape, name
        assert memory_format_flags(got) == memory_format_flags(want), (name, got.stride(), want.stride())
        assert_close_to_cudnn(got, want, dtype, name)
        assert_rel(got, want64, dtype, name)


# --- the core grid, every dtype ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_cuda_conv2d_grid(spec, dtype):
    check_against_torch(cuda_case(spec, dtype, seed=SPECS.index(spec)), dtype)


# Several row / column tiles, split-K weight gradient, split bias gradient, 16-byte vector loads (channel counts
# multiple of 8), scalar fallbacks (odd channel counts), depthwise with multipliers, misaligned views.
LARGE_SPECS = [
    ConvSpec(8, 64, 64, 28, 28, 3, 3, padding=1),
    ConvSpec(8, 64, 64, 28, 28, 3, 3, padding=1, layout="cl_both"),
    ConvSpec(4, 3, 32, 64, 64, 7, 7, stride=2, padding=3),
    ConvSpec(4, 3, 32, 64, 64, 7, 7, stride=2, padding=3, layout="cl_input"),
    ConvSpec(2, 128, 256, 14, 14, 1, 1, bias=False, layout="cl_both"),
    ConvSpec(2, 96, 130, 15, 17, 3, 3, stride=2, padding=(1, 2), dilation=2, groups=2),
    ConvSpec(4, 64, 64, 32, 32, 3, 3, padding=1, groups=64),
    ConvSpec(4, 64, 128, 31, 30, 5, 5, padding=2, stride=2, groups=64, layout="cl_both"),
    ConvSpec(32, 17, 33, 12, 12, 3, 3, padding=1, layout="cl_input"),
    ConvSpec(64, 16, 16, 32, 32, 3, 3, padding=1),   # N*P*Q = 65536: many split-K chunks
    ConvSpec(2, 40, 24, 40, 40, 3, 3, padding="same", layout="sliced"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("spec", LARGE_SPECS, ids=[s.id() for s in LARGE_SPECS])
def test_cuda_conv2d_larger(spec, dtype):
    check_against_torch(cuda_case(spec, dtype, seed=LARGE_SPECS.index(spec) + 100), dtype)


def test_cuda_conv2d_misaligned_storage():
    """Views that start one element into their storage: the kernels fall back from 16-byte loads."""
    for dtype in DTYPES:
        x = torch.randn(2 * 16 * 9 * 9 + 1, device="cuda").to(dtype)[1:].view(2, 9, 9, 16).permute(0, 3, 1, 2)
        w = torch.randn(32 * 16 * 9 + 1, device="cuda").to(dtype)[1:].view(32, 3, 3, 16).permute(0, 3, 1, 2)
        assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 16 != 0
        case = ConvCase(x, w, None, dict(stride=1, padding=1, dilation=1, groups=1), None)
        check_against_torch(case, dtype)


# --- gradcheck in float64 ------------------------------------------------------------------------------

GRADCHECK_SPECS = [
    ConvSpec(2, 2, 3, 5, 6, 3, 3, stride=2, padding=1),
    ConvSpec(1, 4, 4, 5, 5, 3, 2, groups=2, padding=(1, 0)),
    ConvSpec(1, 2, 3, 5, 6, 2, 4, padding="same", dilation=(2, 1)),
    ConvSpec(2, 3, 3, 4, 5, 3, 3, groups=3, padding=1, layout="cl_both", bias=False),
    ConvSpec(1, 2, 4, 5, 4, 3, 3, stride=(2, 1), padding=1, layout="cl_input"),
    ConvSpec(1, 2, 2, 4, 5, 3, 3, padding=1, unbatched=True, layout="transposed"),
]


@pytest.mark.parametrize("spec", GRADCHECK_SPECS, ids=[s.id() for s in GRADCHECK_SPECS])
def test_cuda_conv2d_gradcheck(spec):
    case = cuda_case(spec, torch.float64, seed=3)
    inputs = tuple(t for t in leaves(case) if t is not None)

    def fn(*args):
        return conv2d(args[0], args[1], args[2] if len(args) > 2 else None, **case.kwargs)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_max_pool2d_gradcheck(layout):
    x = pool_input(2, 3, 7, 6, torch.float64, "distinct", layout, seed=5).cuda().requires_grad_()
    fn = lambda t: max_pool2d(t, 3, 2, 1, ceil_mode=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# --- opcheck ---------------------------------------------------------------------------------------------

def _opcheck_samples():
    dev = "cuda"
    x = torch.randn(2, 4, 7, 6, device=dev)
    w = torch.randn(6, 2, 3, 3, device=dev)
    b = torch.randn(6, device=dev)
    args = ([2, 1], [1, 0, 1, 1], [1, 2], 2)
    y = torch.ops.fastconv.conv2d(x, w, b, *args)
    gy = torch.randn_like(y)
    xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    pool_args = ([3, 2], [2, 1], [1, 0], [1, 1], True)
    out, idx = torch.ops.fastconv.max_pool2d(x, *pool_args)
    return [
        (torch.ops.fastconv.conv2d.default, (x, w, b, *args)),
        (torch.ops.fastconv.conv2d.default, (xc, wc, None, *args)),
        (torch.ops.fastconv.conv2d_grad_input.default, (gy, x, w, *args)),
        (torch.ops.fastconv.conv2d_grad_weight.default, (gy, x, w, *args)),
        (torch.ops.fastconv.conv2d_grad_bias.default, (gy,)),
        (torch.ops.fastconv.max_pool2d.default, (x, *pool_args)),
        (torch.ops.fastconv.max_pool2d.default, (xc, *pool_args)),
        (torch.ops.fastconv.max_pool2d_grad.default, (torch.randn_like(out), x, idx)),
    ]


def test_cuda_opcheck():
    for op, args in _opcheck_samples():
        torch.library.opcheck(op, args)


# --- CPU and CUDA agree ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("spec", FORM_SPECS, ids=[s.id() for s in FORM_SPECS])
def test_cuda_matches_cpu(spec, dtype):
    cpu = make_case(spec, dtype, seed=FORM_SPECS.index(spec))
    gpu = cuda_case(spec, dtype, seed=FORM_SPECS.index(spec))
    out_cpu = conv2d(*cpu.args(), **cpu.kwargs)
    grad_output = random_like(out_cpu, 9)
    out_cpu, grads_cpu = run(conv2d, cpu, grad_output)
    out_gpu, grads_gpu = run(conv2d, gpu, grad_output.cuda())
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, **tol)
    assert memory_format_flags(out_gpu) == memory_format_flags(out_cpu)
    for got, want in zip(grads_gpu, grads_cpu):
        torch.testing.assert_close(got.cpu(), want, **tol)
    x = pool_input(2, 3, 9, 8, dtype, "special", "channels_last", seed=1)
    out_cpu, idx_cpu = max_pool2d(x, 3, 2, 1, return_indices=True)
    out_gpu, idx_gpu = max_pool2d(x.cuda(), 3, 2, 1, return_indices=True)
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx_gpu.cpu(), idx_cpu)


# --- determinism ---------------------------------------------------------------------------------------

DETERMINISM_SPECS = [
    ConvSpec(64, 16, 16, 32, 32, 3, 3, padding=1),                              # split-K grad-weight
    ConvSpec(16, 24, 48, 21, 19, 3, 3, stride=2, padding=1, groups=3, layout="cl_both"),
    ConvSpec(32, 32, 32, 28, 28, 3, 3, padding=1, groups=32, layout="cl_input"),  # depthwise
    ConvSpec(256, 8, 8, 16, 16, 1, 1),                                          # split bias gradient
]


def _forward_backward(case, grad_output):
    x, w, b = leaves(case)
    out = conv2d(x, w, b, **case.kwargs)
    grads = torch.autograd.grad(out, [x, w, b], grad_output)
    return [out.detach(), *grads]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("spec", DETERMINISM_SPECS, ids=[s.id() for s in DETERMINISM_SPECS])
def test_cuda_conv2d_bitwise_deterministic(spec, dtype):
    case = cuda_case(spec, dtype, seed=5)
    grad_output = random_like(F.conv2d(case.input, case.weight, case.bias, **case.kwargs), 1)
    first = _forward_backward(case, grad_output)
    torch.cuda.synchronize()
    second = _forward_backward(case, grad_output)
    for name, u, v in zip(["out", "grad_input", "grad_weight", "grad_bias"], first, second):
        assert torch.equal(u, v), f"{name} differs between runs: max |diff| = {(u - v).abs().max().item()}"
    ref_out, ref_grads = float64_reference(case, grad_output)
    assert_rel(first[0], ref_out, dtype, "output")
    for name, got, want in zip(["grad_input", "grad_weight", "grad_bias"], first[1:], ref_grads):
        assert_rel(got, want, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_max_pool2d_bitwise_deterministic(dtype, layout):
    x = pool_input(16, 32, 33, 31, dtype, "ties", layout, seed=2).cuda()
    results = []
    for _ in range(2):
        leaf = x.detach().requires_grad_()
        out, idx = max_pool2d(leaf, 3, 1, 1, return_indices=True)   # overlapping windows, many ties
        (grad,) = torch.autograd.grad(out, leaf, random_like(out, 4))
        results.append((out, idx, grad))
    for u, v in zip(*results):
        assert torch.equal(u, v)


# --- torch.compile, convert ------------------------------------------------------------------------------

def test_cuda_torch_compile_fullgraph():
    torch._dynamo.reset()

    def net(x, w1, b1, w2):
        y = torch.relu(conv2d(x, w1, b1, padding=1))
        y = max_pool2d(y, 3, stride=2, padding=1)
        return conv2d(y, w2, None, stride=2, groups=2)

    args = [torch.randn(2, 4, 17, 15, device="cuda"), torch.randn(8, 4, 3, 3, device="cuda"),
            torch.randn(8, device="cuda"), torch.randn(6, 4, 2, 2, device="cuda")]
    args[0] = args[0].contiguous(memory_format=torch.channels_last)
    eager_leaves = [a.detach().requires_grad_() for a in args]
    compiled_leaves = [a.detach().requires_grad_() for a in args]
    expected = net(*eager_leaves)
    got = torch.compile(net, fullgraph=True)(*compiled_leaves)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(expected, eager_leaves, g), torch.autograd.grad(got, compiled_leaves, g)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_cuda_convert_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.Conv2d(16, 32, 1, bias=False),
        torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    ).cuda()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    expected = model(x)
    converted = fastconv.convert(model)
    assert isinstance(converted[0], fastconv.Conv2d) and isinstance(converted[2], fastconv.MaxPool2d)
    got = converted(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    got.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in converted.parameters())


# --- max_pool2d ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
@pytest.mark.parametrize("values", ["distinct", "ties", "special"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", POOL_CONFIGS, ids=POOL_CONFIG_IDS)
def test_cuda_max_pool2d_matches_torch(config, dtype, values, layout):
    """Values, indices (first max wins, NaN propagates, all -inf windows) and layout equal torch's; the gradient
    agrees (both sum each input's contributions in output order).

    One torch quirk: its CUDA channels_last kernel reports index 0 for a window that holds only -inf, where its
    CPU kernels and its CUDA NCHW kernel (and fastconv, CPU and CUDA) report the window's first in-bounds element;
    for those inputs ("special" values, channels_last) the reference is torch on the CPU."""
    H, W, kernel, stride, padding, dilation, ceil_mode = config
    x_cpu = pool_input(2, 3, H, W, dtype, values, layout, seed=POOL_CONFIGS.index(config))
    x = cuda_like(x_cpu)
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    reference_input = x_cpu if (values == "special" and layout == "channels_last") else x
    results = []
    for fn, inp in ((F.max_pool2d, reference_input), (max_pool2d, x)):
        leaf = inp.detach().requires_grad_()
        out, idx = fn(leaf, return_indices=True, **kwargs)
        (grad,) = torch.autograd.grad(out, leaf, random_like(out, 3))
        results.append((out.detach().cuda(), idx.cuda(), grad.cuda()))
    (e_out, e_idx, e_grad), (out, idx, grad) = results
    assert out.shape == e_out.shape and out.dtype == e_out.dtype and idx.dtype == torch.int64
    assert memory_format_flags(out) == memory_format_flags(e_out)
    assert memory_format_flags(idx) == memory_format_flags(e_idx)
    torch.testing.assert_close(out, e_out, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx, e_idx), f"indices differ at {(idx != e_idx).nonzero()[:5].tolist()}"
    assert memory_format_flags(grad) == memory_format_flags(e_grad)
    # sums of 1-4 overlapping-window contributions: one rounding to the dtype at most apart
    grad_tol = {torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}
    torch.testing.assert_close(grad, e_grad, equal_nan=True, **grad_tol.get(dtype, {}))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_max_pool2d_unbatched_and_zero_batch(layout):
    for shape in [(0, 3, 6, 6), (4, 7, 6)]:
        x = torch.randn(shape, device="cuda")
        if layout == "channels_last" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out, idx = max_pool2d(x, 2, ceil_mode=True, return_indices=True)
        e_out, e_idx = F.max_pool2d(x, 2, ceil_mode=True, return_indices=True)
        assert out.shape == e_out.shape
        torch.testing.assert_close(out, e_out, rtol=0, atol=0)
        assert torch.equal(idx, e_idx)


# --- errors ------------------------------------------------------------------------------------------------

def test_cuda_mixed_devices_raise():
    x = torch.randn(1, 2, 5, 5, device="cuda")
    w = torch.randn(3, 2, 3, 3)
    b = torch.randn(3)
    args = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.fastconv.conv2d(x, w, None, *args)
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.fastconv.conv2d(x, w.cuda(), b, *args)
    y = torch.ops.fastconv.conv2d(x, w.cuda(), None, *args)
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.fastconv.conv2d_grad_input(y.cpu(), x, w.cuda(), *args)
    with pytest.raises(RuntimeError, match="same device"):
        conv2d(x, w)
    out, idx = torch.ops.fastconv.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.fastconv.max_pool2d_grad(out, x, idx.cpu())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_two_devices_raise_and_second_device_works():
    x = torch.randn(1, 2, 5, 5, device="cuda:1")
    w = torch.randn(3, 2, 3, 3, device="cuda:1")
    with pytest.raises(RuntimeError, match="same device"):
        torch.ops.fastconv.conv2d(x, w.to("cuda:0"), None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
    torch.testing.assert_close(conv2d(x, w), F.conv2d(x, w), rtol=1e-4, atol=1e-4)


def test_cuda_unsupported_inputs_raise():
    x = torch.randint(0, 5, (1, 2, 5, 5), device="cuda")
    w = torch.randint(0, 5, (3, 2, 3, 3), device="cuda")
    with pytest.raises(RuntimeError, match="floating point"):
        torch.ops.fastconv.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="int64 indices"):
        xf = torch.randn(1, 2, 4, 4, device="cuda")
        out, idx = torch.ops.fastconv.max_pool2d(xf, [2, 2], [2, 2], [0, 0], [1, 1], False)
        torch.ops.fastconv.max_pool2d_grad(out, xf, idx.int())
    # a spatial extent the 32-bit in-plane index math cannot hold: refused up front, not computed wrongly
    big = torch.empty(1, 1, 1, 1 << 29, device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match="fastconv CUDA"):
        torch.ops.fastconv.conv2d(big, torch.ones(1, 1, 1, 1, device="cuda", dtype=torch.float16), None,
                                  [1, 1], [0, 0, 0, 0], [1, 1], 1)


# --- past 2^31 elements ------------------------------------------------------------------------------------

def _free_gib():
    free, _ = torch.cuda.mem_get_info()
    return free / 2**30


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_beyond_2_31_elements(layout):
    """Input of 4 x 32768 x 16385 = 2^31 + 2^17 fp16 elements: 64-bit offsets in conv (1x1 and 3x3) and pool."""
    if _free_gib() < 40:
        pytest.skip("needs 40 GiB of free GPU memory")
    torch.manual_seed(0)
    N, C, H, W = 1, 4, 32768, 16385
    x = torch.empty(N, C, H, W, device="cuda", dtype=torch.float16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.uniform_(-1, 1)
    assert x.numel() > 2**31
    w = torch.randn(2, C, 3, 3, device="cuda", dtype=torch.float16)
    y = conv2d(x, w, None, padding=1)
    tail = x[..., -9:, :].float()  # rows whose offsets are all past 2^31 in NCHW
    expected = F.conv2d(tail, w.float(), None, padding=1)[..., 1:-1, :]
    assert_rel(y[..., -8:-1, :], expected.double(), torch.float16, "conv tail")
    head = x[..., :9, :].float()
    assert_rel(y[..., 1:8, :], F.conv2d(head, w.float(), None, padding=1)[..., 1:-1, :].double(), torch.float16,
               "conv head")
    del y
    out, idx = max_pool2d(x, 2, return_indices=True)
    e_out, e_idx = F.max_pool2d(x[..., -64:, :], 2, return_indices=True)
    torch.testing.assert_close(out[..., -32:, :], e_out, rtol=0, atol=0)
    assert torch.equal(idx[..., -32:, :] - (H - 64) * W, e_idx)
    del out, idx
    leaf = x.requires_grad_()
    pooled = max_pool2d(leaf, 2)
    (grad,) = torch.autograd.grad(pooled, leaf, torch.ones_like(pooled))
    # non-overlapping windows: exactly one 1 per window, zeros elsewhere (incl. the last, unpooled column)
    assert grad.count_nonzero().item() == N * C * (H // 2) * (W // 2)
    assert grad.max().item() == 1 and grad[..., -1].abs().max().item() == 0


# --- the tensor-core path (opt-in: FASTCONV_TENSOR_CORES=1) --------------------------------------------------

TC_SPECS = [
    ConvSpec(4, 64, 64, 28, 28, 3, 3, padding=1, layout="cl_both"),
    ConvSpec(2, 32, 128, 15, 17, 3, 3, stride=2, padding=(1, 2), layout="cl_both"),
    ConvSpec(2, 64, 96, 14, 14, 1, 1, bias=False, layout="cl_input"),
    ConvSpec(2, 64, 64, 20, 20, 3, 3, padding=2, dilation=2, groups=2, layout="cl_both"),
    ConvSpec(8, 16, 24, 9, 11, 5, 3, padding=1, layout="cl_weight"),
]
TC_REL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float32: 1e-3}  # fp32 -> TF32 operands


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["f16", "bf16", "tf32"])
@pytest.mark.parametrize("spec", TC_SPECS, ids=[s.id() for s in TC_SPECS])
def test_cuda_tensor_core_path(spec, dtype, monkeypatch):
    monkeypatch.setenv("FASTCONV_TENSOR_CORES", "1")
    torch.backends.cudnn.allow_tf32 = dtype == torch.float32
    case = cuda_case(spec, dtype, seed=TC_SPECS.index(spec) + 50)
    grad_output = random_like(F.conv2d(case.input, case.weight, case.bias, **case.kwargs), 2)
    first = _forward_backward_any_bias(case, grad_output)
    second = _forward_backward_any_bias(case, grad_output)
    for u, v in zip(first, second):
        assert torch.equal(u, v)
    ref_out, ref_grads = float64_reference(case, grad_output)
    for name, got, want in zip(["output", "grad_input", "grad_weight", "grad_bias"], first, [ref_out, *ref_grads]):
        err = (got.double() - want).norm().item() / max(want.norm().item(), 1e-30)
        assert err <= TC_REL[dtype], f"{name}: relative error {err:.3g}"


def _forward_backward_any_bias(case, grad_output):
    x, w, b = leaves(case)
    out = conv2d(x, w, b, **case.kwargs)
    inputs = [x, w] + ([b] if b is not None else [])
    return [out.detach(), *torch.autograd.grad(out, inputs, grad_output)]
