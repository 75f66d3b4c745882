"""Models and layer lists for benchmarks/compare.py.

The networks come from fastconv.models. `torch_and_fastconv(model)` returns two deep copies with the same weights: one on plain torch.nn layers, one
converted to fastconv layers. Layer shapes are read off a real forward pass (hooks), de-duplicated, counted.
"""
import copy
from dataclasses import dataclass, field

import torch
from torch import nn

import fastconv
from fastconv import models

# ---------------------------------------------------------------------------------------------------- models


def build(name, num_classes=10):
    """'resnet18' (CIFAR stem), 'resnet50' (ImageNet stem), 'lenet5' or 'fast_cifar' (the fast CIFAR recipe's
    net: fastconv.models.FastCifarNet, a random whitening layer), from fastconv.models."""
    if name == "fast_cifar":
        return models.FastCifarNet(num_classes=num_classes)
    if name == "resnet18":
        return models.resnet18(num_classes=num_classes, stem="cifar")
    if name == "resnet50":
        return models.resnet50(num_classes=num_classes, stem="imagenet")
    if name == "lenet5":
        return models.lenet5(num_classes=num_classes)
    raise ValueError(name)


def torch_and_fastconv(model):
    """(torch.nn model, fastconv model): deep copies with identical weights."""
    ref = fastconv.revert(copy.deepcopy(model))
    ours = fastconv.convert(fastconv.revert(copy.deepcopy(model)))
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
    model = fastconv.revert(build(model_name)).eval()
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
