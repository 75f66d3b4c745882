"""The registered ops as torch sees them: opcheck (schema, autograd registration, fake kernels, AOT dispatch),
torch.compile(fullgraph=True), and double backward against torch.nn.functional."""
import copy

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv.functional import conv2d, max_pool2d

ops = torch.ops.fastconv
CL = torch.channels_last


def _t(*shape, cl=False, grad=True, seed=0, dtype=torch.float32):
    t = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    if cl:
        t = t.contiguous(memory_format=CL)
    return t.requires_grad_(grad)


# (id, N, C, K, H, W, R, S, stride, padding[t, l, b, r], dilation, groups, input channels_last, weight channels_last)
CONV_ARGSETS = [
    ("plain", 2, 4, 6, 6, 7, 3, 3, [1, 1], [1, 1, 1, 1], [1, 1], 1, False, False),
    ("stride-asym-pad", 2, 3, 4, 7, 8, 3, 2, [2, 1], [1, 0, 2, 1], [1, 1], 1, False, False),
    ("groups-cl-input", 2, 6, 9, 6, 5, 3, 3, [1, 2], [1, 1, 1, 1], [1, 1], 3, True, False),
    ("depthwise-cl-both-dil", 1, 4, 8, 7, 7, 3, 3, [1, 1], [2, 2, 2, 2], [2, 2], 4, True, True),
    ("cl-weight", 2, 3, 5, 5, 6, 2, 2, [1, 1], [0, 0, 1, 1], [1, 1], 1, False, True),
]
CONV_IDS = [a[0] for a in CONV_ARGSETS]


def _conv_setup(argset):
    _, N, C, K, H, W, R, S, stride, padding, dilation, groups, cl_x, cl_w = argset
    x = _t(N, C, H, W, cl=cl_x, seed=1)
    w = _t(K, C // groups, R, S, cl=cl_w, seed=2)
    b = _t(K, seed=3)
    P = (H + padding[0] + padding[2] - dilation[0] * (R - 1) - 1) // stride[0] + 1
    Q = (W + padding[1] + padding[3] - dilation[1] * (S - 1) - 1) // stride[1] + 1
    go = _t(N, K, P, Q, cl=cl_x or cl_w, seed=4)
    return x, w, b, go, (stride, padding, dilation, groups)


@pytest.mark.parametrize("argset", CONV_ARGSETS, ids=CONV_IDS)
def test_opcheck_conv2d(argset):
    """conv2d: schema, autograd registration, fake kernel (shape and strides), AOT dispatch."""
    x, w, b, _, args = _conv_setup(argset)
    torch.library.opcheck(ops.conv2d.default, (x, w, b, *args))
    torch.library.opcheck(ops.conv2d.default, (x, w, None, *args))


@pytest.mark.parametrize("argset", CONV_ARGSETS, ids=CONV_IDS)
def test_opcheck_conv2d_grad_ops(argset):
    """conv2d_grad_input / conv2d_grad_weight / conv2d_grad_bias (their autograd makes double backward)."""
    x, w, _, go, args = _conv_setup(argset)
    torch.library.opcheck(ops.conv2d_grad_input.default, (go, x, w, *args))
    torch.library.opcheck(ops.conv2d_grad_weight.default, (go, x, w, *args))
    torch.library.opcheck(ops.conv2d_grad_bias.default, (go,))


# (id, N, C, H, W, kernel, stride, padding, dilation, ceil_mode, channels_last)
POOL_ARGSETS = [
    ("k2", 2, 3, 6, 6, [2, 2], [2, 2], [0, 0], [1, 1], False, False),
    ("k3s2p1-ceil", 2, 3, 7, 8, [3, 3], [2, 2], [1, 1], [1, 1], True, False),
    ("cl-dilated", 2, 5, 9, 7, [3, 2], [1, 2], [1, 1], [2, 1], False, True),
    ("cl-ceil", 1, 4, 5, 5, [2, 2], [2, 2], [1, 1], [1, 1], True, True),
]
POOL_IDS = [a[0] for a in POOL_ARGSETS]


@pytest.mark.parametrize("argset", POOL_ARGSETS, ids=POOL_IDS)
def test_opcheck_max_pool2d(argset):
    """max_pool2d (output and int64 indices) and max_pool2d_grad: schema, autograd, fake kernel strides."""
    _, N, C, H, W, kernel, stride, padding, dilation, ceil_mode, cl = argset
    x = _t(N, C, H, W, cl=cl, seed=5)
    torch.library.opcheck(ops.max_pool2d.default, (x, kernel, stride, padding, dilation, ceil_mode))
    out, idx = ops.max_pool2d(x.detach(), kernel, stride, padding, dilation, ceil_mode)
    go = _t(*out.shape, cl=cl, seed=6)
    torch.library.opcheck(ops.max_pool2d_grad.default, (go, x, idx))


def test_opcheck_cpu_info():
    """cpu_info: schema, autograd registration and fake-tensor checks. (test_aot_dispatch_dynamic is left out:
    opcheck compares outputs with torch.testing.assert_close, which has no comparison for str.)"""
    torch.library.opcheck(ops.cpu_info.default, (), test_utils=("test_schema", "test_autograd_registration",
                                                                 "test_faketensor"))
    isa, description = ops.cpu_info()
    assert isa in ("scalar", "avx2", "avx512", "avx512_bf16", "amx_bf16") and isinstance(description, str)


# --- torch.compile ----------------------------------------------------------------------------------------

def _small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        fastconv.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        fastconv.MaxPool2d(2),
        fastconv.Conv2d(8, 8, 3, padding="same", groups=2, bias=False), torch.nn.ReLU(),
        fastconv.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        fastconv.Conv2d(8, 4, 1, stride=2),
        torch.nn.Flatten(), torch.nn.Linear(16, 5),
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit deprecations raised inside inductor
@pytest.mark.parametrize("backend, channels_last", [("inductor", False), ("aot_eager", True)],
                         ids=["inductor", "aot_eager-channels_last"])
def test_torch_compile_fullgraph_matches_eager(backend, channels_last):
    """torch.compile(fullgraph=True) traces fastconv layers without graph breaks (fake kernels, registered
    autograd); compiled forward and backward equal eager."""
    eager = _small_model()
    compiled_model = copy.deepcopy(eager)
    if channels_last:
        eager, compiled_model = eager.to(memory_format=CL), compiled_model.to(memory_format=CL)
    torch._dynamo.reset()
    compiled = torch.compile(compiled_model, fullgraph=True, backend=backend)
    x = _t(2, 3, 8, 8, cl=channels_last, grad=False, seed=9)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye, yc = eager(xe), compiled(xc)
    torch.testing.assert_close(yc, ye, rtol=1e-5, atol=1e-6)
    ye.square().sum().backward()
    yc.square().sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-5, atol=1e-6)
    for (name, pe), pc in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    torch._dynamo.reset()


# --- double backward ---------------------------------------------------------------------------------------

def _penalty_grads(conv, pool, params, x, with_pool):
    """Gradient-penalty loss ||d(sum f(x)^2)/dx||^2 with create_graph=True; returns its grads w.r.t. the
    parameters and x (second-order gradients through every backward op)."""
    w1, b1, w2, b2 = params
    h = torch.tanh(conv(x, w1, b1, stride=2, padding=1, groups=2))
    if with_pool:
        h = pool(h, 2, 1, 1)
    out = conv(h, w2, b2, padding="same", dilation=2)
    (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    penalty = gx.square().sum() + out.sum()
    return torch.autograd.grad(penalty, [x, *params])


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("with_pool", [False, True], ids=["conv", "conv-maxpool"])
def test_double_backward_matches_torch(with_pool, channels_last):
    """Second-order gradients (gradient penalty, create_graph=True) equal torch.nn.functional's in float64."""
    x = _t(2, 4, 9, 8, cl=channels_last, seed=10, dtype=torch.float64)
    params = [_t(6, 2, 3, 3, cl=channels_last, seed=11, dtype=torch.float64), _t(6, seed=12, dtype=torch.float64),
              _t(3, 6, 2, 2, seed=13, dtype=torch.float64), _t(3, seed=14, dtype=torch.float64)]
    expected = _penalty_grads(F.conv2d, F.max_pool2d, params, x, with_pool)
    got = _penalty_grads(conv2d, max_pool2d, params, x, with_pool)
    for name, g, e in zip(["x", "w1", "b1", "w2", "b2"], got, expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"d penalty / d {n}: {m}")
