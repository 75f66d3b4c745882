"""Models and layer lists for benchmarks/compare.py.

The networks come from fastconv.models when that package is importable; otherwise an equivalent torch.nn
fallback is built here (ResNet-18/34/50 with torchvision's layout, CIFAR or ImageNet stem, and LeNet-5).
`torch_and_fastconv(model)` returns two deep copies with the same weights: one on plain torch.nn layers, one
converted to fastconv layers. Layer shapes are read off a real forward pass (hooks), de-duplicated, counted.
"""
import copy
from dataclasses import dataclass, field

import torch
from torch import nn

import fastconv

# ---------------------------------------------------------------------------------------------------- models


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class _ResNet(nn.Module):
    def __init__(self, block, layers, num_classes, stem):
        super().__init__()
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 64
        self.layer1 = self._layer(block, 64, layers[0], 1)
        self.layer2 = self._layer(block, 128, layers[1], 2)
        self.layer3 = self._layer(block, 256, layers[2], 2)
        self.layer4 = self._layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _layer(self, block, planes, blocks, stride):
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _LeNet5(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.pool2(self.relu(self.conv2(x)))
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.relu(self.fc2(x)))


_SOURCE = {"fastconv.models": None}


def _fastconv_models():
    try:
        from fastconv import models
        return models
    except Exception as exc:  # noqa: BLE001 - missing or half-written package: use the fallback
        _SOURCE["error"] = f"{type(exc).__name__}: {exc}"
        return None


def model_source():
    return "fastconv.models" if _fastconv_models() is not None else f"torch.nn fallback ({_SOURCE.get('error')})"


def build(name, num_classes=10):
    """'resnet18' (CIFAR stem), 'resnet50' (ImageNet stem) or 'lenet5'."""
    models = _fastconv_models()
    if models is not None:
        if name == "resnet18":
            return models.resnet18(num_classes=num_classes, stem="cifar")
        if name == "resnet50":
            return models.resnet50(num_classes=num_classes, stem="imagenet")
        if name == "lenet5":
            return models.lenet5(num_classes=num_classes)
    if name == "resnet18":
        return _ResNet(_Basic, [2, 2, 2, 2], num_classes, "cifar")
    if name == "resnet50":
        return _ResNet(_Bottleneck, [3, 4, 6, 3], num_classes, "imagenet")
    if name == "lenet5":
        return _LeNet5(num_classes)
    raise ValueError(name)


def to_torch_layers(model):
    """In place: every fastconv layer becomes its torch.nn base class (same parameters)."""
    for m in model.modules():
        if isinstance(m, fastconv.Conv2d):
            m.__class__ = nn.Conv2d
        elif isinstance(m, fastconv.MaxPool2d):
            m.__class__ = nn.MaxPool2d
    return model


def torch_and_fastconv(model):
    """(torch.nn model, fastconv model): deep copies with identical weights."""
    ref = to_torch_layers(copy.deepcopy(model))
    ours = fastconv.convert(to_torch_layers(copy.deepcopy(model)))
    return ref, ours


# ---------------------------------------------------------------------------------------------------- layers


@dataclass
class ConvLayer:
    model: str
    name: str          # module name of the first occurrence
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    bias: bool
    count: int = 1
    also: list = field(default_factory=list)

    @property
    def label(self):
        s = f" s{self.stride[0]}" if self.stride[0] != 1 else ""
        return f"{self.model}:{self.name} {self.C}->{self.K} {self.R}x{self.S}{s} @{self.H}"

    def out_hw(self):
        p = (self.H + 2 * self.padding[0] - self.dilation[0] * (self.R - 1) - 1) // self.stride[0] + 1
        q = (self.W + 2 * self.padding[1] - self.dilation[1] * (self.S - 1) - 1) // self.stride[1] + 1
        return p, q

    def flops(self, batch):
        """2*N*K*P*Q*Cg*R*S: one pass (forward, backward-input or backward-weight)."""
        p, q = self.out_hw()
        return 2 * batch * self.K * p * q * (self.C // self.groups) * self.R * self.S

    def key(self):
        return (self.C, self.H, self.W, self.K, self.R, self.S, self.stride, self.padding, self.dilation,
                self.groups, self.bias)


def conv_layers(model_name, hw):
    """Distinct conv layers of a model, in forward order, with occurrence counts."""
    model = to_torch_layers(build(model_name)).eval()
    seen, order = {}, []

    def hook(name):
        def fn(mod, inputs, output):
            x = inputs[0]
            pad = mod.padding if isinstance(mod.padding, tuple) else (mod.padding, mod.padding)
            layer = ConvLayer(model_name, name, x.shape[1], x.shape[2], x.shape[3], mod.out_channels,
                              *mod.kernel_size, tuple(mod.stride), tuple(pad), tuple(mod.dilation), mod.groups,
                              mod.bias is not None)
            if layer.key() in seen:
                seen[layer.key()].count += 1
                seen[layer.key()].also.append(name)
            else:
                seen[layer.key()] = layer
                order.append(layer)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, hw, hw))
    for h in handles:
        h.remove()
    return order


@dataclass
class PoolLayer:
    name: str
    C: int
    H: int
    W: int
    k: int
    s: int
    p: int

    @property
    def label(self):
        return f"{self.name} {self.k}x{self.k} s{self.s} p{self.p} {self.C}ch @{self.H}"

    def out_hw(self):
        return ((self.H + 2 * self.p - self.k) // self.s + 1, (self.W + 2 * self.p - self.k) // self.s + 1)

    def bytes(self, batch, dtype_size=4):
        """Compulsory traffic, the same formula for both libraries:
        forward = read x + write out + write int64 indices; backward = read grad_out + read indices + write grad_in;
        fwd+bwd = both."""
        p, q = self.out_hw()
        inp, out = batch * self.C * self.H * self.W, batch * self.C * p * q
        fwd, bwd = inp * dtype_size + out * (dtype_size + 8), out * (dtype_size + 8) + inp * dtype_size
        return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


CPU_POOLS = [(PoolLayer("resnet-stem maxpool", 64, 32, 32, 3, 2, 1), (64, 128)),
             (PoolLayer("lenet pool1", 6, 28, 28, 2, 2, 0), (64,)),
             (PoolLayer("lenet pool2", 16, 10, 10, 2, 2, 0), (64,))]
CUDA_POOLS = [(PoolLayer("resnet-stem maxpool", 64, 32, 32, 3, 2, 1), (128, 256)),
              (PoolLayer("resnet50 maxpool", 64, 112, 112, 3, 2, 1), (64,))]
