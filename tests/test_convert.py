"""fastconv.convert and the drop-in modules: structure, identity and state kept, numerics equal to torch."""
import copy

import pytest
import torch
from torch import nn

import fastconv


class MyConv(nn.Conv2d):
    """A user subclass of nn.Conv2d: convert() must leave it alone (its forward may differ)."""

    def forward(self, x):
        return super().forward(x) * 2


class Nested(nn.Module):
    """Sequential inside ModuleList inside a custom Module, with a submodule shared by two Sequentials."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.shared = nn.Conv2d(4, 4, 3, padding=1, dtype=dtype)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, dtype=dtype), nn.ReLU(), self.shared, nn.MaxPool2d(2)),
            nn.Sequential(self.shared, MyConv(4, 4, 1, dtype=dtype), nn.BatchNorm2d(4, dtype=dtype)),
        ])
        self.pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.conv1d = nn.Conv1d(4, 4, 1, dtype=dtype)  # not a 2-D conv: untouched
        self.head = nn.Conv2d(4, 2, 1, bias=False, dtype=dtype)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        x = self.pool(x)
        n, c, h, w = x.shape
        x = self.conv1d(x.flatten(2)).view(n, c, h, w)
        return self.head(x)


def _exact_torch_types(model):
    return [m for m in model.modules() if type(m) in (nn.Conv2d, nn.MaxPool2d)]


def test_convert_nested_model_replaces_every_layer_in_place():
    """Every exact nn.Conv2d / nn.MaxPool2d (nested, shared) becomes a fastconv layer; the model, its modules
    and parameters are the same objects; subclasses and other layers keep their class."""
    torch.manual_seed(0)
    model = Nested()
    modules_before = dict(model.named_modules(remove_duplicate=False))
    params_before = list(model.parameters())
    targets = _exact_torch_types(model)
    assert len(targets) == 5  # stem conv, shared conv, 2 pools, head (the shared conv counted once)

    result = fastconv.convert(model)

    assert result is model
    assert _exact_torch_types(model) == []
    for m in targets:
        expected = fastconv.Conv2d if isinstance(m, nn.Conv2d) else fastconv.MaxPool2d
        assert type(m) is expected
    assert isinstance(model.head, fastconv.Conv2d) and isinstance(model.head, nn.Conv2d)
    assert isinstance(model.blocks[0][3], fastconv.MaxPool2d) and isinstance(model.pool, fastconv.MaxPool2d)
    assert type(model.blocks[1][1]) is MyConv
    assert type(model.conv1d) is nn.Conv1d
    assert model.blocks[0][2] is model.blocks[1][0] is model.shared
    assert dict(model.named_modules(remove_duplicate=False)).keys() == modules_before.keys()
    for name, m in model.named_modules(remove_duplicate=False):
        assert m is modules_before[name], name
    params_after = list(model.parameters())
    assert len(params_after) == len(params_before)
    assert all(a is b for a, b in zip(params_after, params_before))


def test_convert_root_module_and_type_errors():
    """A bare nn.Conv2d / nn.MaxPool2d is converted itself; a non-Module argument is a TypeError."""
    conv, pool = nn.Conv2d(2, 3, 3), nn.MaxPool2d(2)
    assert fastconv.convert(conv) is conv and type(conv) is fastconv.Conv2d
    assert fastconv.convert(pool) is pool and type(pool) is fastconv.MaxPool2d
    with pytest.raises(TypeError, match="Module"):
        fastconv.convert(torch.randn(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_convert_keeps_state_dtype_mode_and_output(dtype):
    """state_dict keys and values (the same storage), parameter dtype, train/eval flags of every module and
    forward hooks survive convert(), and the converted model computes what the torch model did."""
    torch.manual_seed(0)
    model = Nested(dtype)
    model.blocks[1].eval()          # mixed train/eval state
    model.head.eval()
    hook_calls = []
    model.head.register_forward_hook(lambda mod, inp, out: hook_calls.append(out.shape))
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    reference = copy.deepcopy(model)
    expected = reference(x)
    state_before = model.state_dict()
    modes_before = {name: m.training for name, m in model.named_modules()}

    fastconv.convert(model)

    state_after = model.state_dict()
    assert list(state_after.keys()) == list(state_before.keys())
    for key in state_before:
        assert torch.equal(state_after[key], state_before[key]), key
        assert state_after[key].data_ptr() == state_before[key].data_ptr(), key
    assert all(p.dtype == dtype for p in model.parameters())
    assert {name: m.training for name, m in model.named_modules()} == modes_before
    got = model(x)
    assert got.dtype == dtype
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got, expected, **tol)
    assert len(hook_calls) == 2  # the hook fired on the torch run (deep-copied) and after conversion
    # a converted model loads a torch state_dict and vice versa
    reference.load_state_dict(model.state_dict())
    model.load_state_dict(reference.state_dict())


# --- a ResNet-style network built from torch.nn ------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, groups=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect", bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.layers = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2), BasicBlock(16, 16, 1, groups=4),
                                    BasicBlock(16, 24, 2))
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_converted_resnet_matches_torch(dtype, channels_last, train):
    """A converted ResNet-style model (BatchNorm, residual adds, stride-2 convs, 1x1 shortcuts, grouped conv,
    a maxpool, a reflect-padded conv) gives the logits, input gradient, parameter gradients and BatchNorm
    running statistics of the unconverted torch model."""
    torch.manual_seed(0)
    reference = SmallResNet().to(dtype)
    if channels_last:
        reference = reference.to(memory_format=torch.channels_last)
    reference.train(train)
    model = fastconv.convert(copy.deepcopy(reference))
    assert sum(isinstance(m, fastconv.Conv2d) for m in model.modules()) == 11
    assert sum(isinstance(m, fastconv.MaxPool2d) for m in model.modules()) == 1

    x = torch.randn(4, 3, 16, 16, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xr, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, got = reference(xr), model(xm)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, expected, **tol)
    target = torch.arange(4) % 10
    nn.functional.cross_entropy(expected, target).backward()
    nn.functional.cross_entropy(got, target).backward()
    torch.testing.assert_close(xm.grad, xr.grad, **tol, msg=lambda m: f"input grad: {m}")
    for (name, pr), pm in zip(reference.named_parameters(), model.parameters()):
        torch.testing.assert_close(pm.grad, pr.grad, **tol, msg=lambda m, n=name: f"{n}.grad: {m}")
    for (name, br), bm in zip(reference.named_buffers(), model.buffers()):
        torch.testing.assert_close(bm, br, **tol, msg=lambda m, n=name: f"buffer {n}: {m}")


# --- the module constructors ---------------------------------------------------------------------------

CONV_CTOR_ARGS = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", dilation=2, groups=2),
    dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", groups=4),
    dict(in_channels=3, out_channels=2, kernel_size=3, padding="valid", stride=2),
    dict(in_channels=3, out_channels=5, kernel_size=3, padding=2, dilation=(1, 2), stride=(1, 2)),
]


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("args", CONV_CTOR_ARGS, ids=[f"cfg{i}" for i in range(len(CONV_CTOR_ARGS))])
def test_conv2d_module_accepts_every_torch_argument(args, padding_mode):
    """fastconv.Conv2d takes torch.nn.Conv2d's constructor (padding_mode, padding='same'/'valid', bias=False,
    dtype/device factory kwargs), has its attributes and state_dict, and matches its output and gradients."""
    torch.manual_seed(0)
    ours = fastconv.Conv2d(**args, padding_mode=padding_mode, dtype=torch.float64, device="cpu")
    ref = nn.Conv2d(**args, padding_mode=padding_mode, dtype=torch.float64, device="cpu")
    assert isinstance(ours, nn.Conv2d)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode", "_reversed_padding_repeated_twice"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert (ours.bias is None) == (ref.bias is None)
    assert ours.weight.dtype == torch.float64
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, args["in_channels"], 7, 9, dtype=torch.float64)
    for inp in (x, x[0]):  # batched and unbatched
        xo, xr = inp.clone().requires_grad_(), inp.clone().requires_grad_()
        yo, yr = ours(xo), ref(xr)
        assert yo.shape == yr.shape
        torch.testing.assert_close(yo, yr, rtol=1e-10, atol=1e-10)
        yo.sum().backward()
        yr.sum().backward()
        torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1), return_indices=True),
], ids=["k2", "k3s2p1ceil", "tuple-indices"])
def test_maxpool2d_module_matches_torch(kwargs):
    """fastconv.MaxPool2d takes torch.nn.MaxPool2d's arguments (return_indices included) and matches it."""
    ours, ref = fastconv.MaxPool2d(**kwargs), nn.MaxPool2d(**kwargs)
    assert isinstance(ours, nn.MaxPool2d)
    assert repr(ours).split("(", 1)[1] == repr(ref).split("(", 1)[1]
    x = torch.randn(2, 3, 9, 8)
    got, expected = ours(x), ref(x)
    if kwargs.get("return_indices"):
        assert torch.equal(got[1], expected[1])
        got, expected = got[0], expected[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_converted_model_traces_with_torch_fx():
    """torch.fx.symbolic_trace (what fx-based tools such as feature extractors run) records fastconv's conv2d
    and max_pool2d as graph calls, as it does torch.nn's layers, padding modes and return_indices included; the
    traced module computes what the torch.nn model does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 2, 1, padding=1, padding_mode="reflect"), nn.MaxPool2d(2, return_indices=True))
    traced = torch.fx.symbolic_trace(fastconv.convert(copy.deepcopy(model)))
    targets = [node.target for node in traced.graph.nodes if node.op == "call_function"]
    assert targets.count(fastconv.functional.conv2d) == 2 and targets.count(fastconv.functional.max_pool2d) == 2
    x = torch.randn(2, 3, 8, 8)
    (out, indices), (want, want_indices) = traced(x), model(x)
    torch.testing.assert_close(out, want)
    assert torch.equal(indices, want_indices)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_converted_model_traces_with_jit_trace_and_exports():
    """torch.jit.trace and torch.export take a converted model (its graph holds the fastconv ops) and the result
    computes what the torch.nn model does."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 1))
    converted = fastconv.convert(copy.deepcopy(model))
    x = torch.randn(2, 3, 8, 8)
    traced = torch.jit.trace(converted, x)
    assert "fastconv::conv2d" in str(traced.inlined_graph)
    exported = torch.export.export(converted, (x,))
    assert "fastconv.conv2d" in str(exported.graph)
    y = torch.randn(2, 3, 8, 8)  # (export specialises the batch size, for torch.nn's layers too)
    for module in (traced, exported.module()):
        torch.testing.assert_close(module(y), model(y))
