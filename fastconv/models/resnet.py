"""ResNet-18/34/50 built from fastconv layers, with torchvision's exact state_dict layout.

Module names, parameter/buffer keys and shapes are those of ``torchvision.models.resnet18/34/50``
(torchvision "v1.5": in a Bottleneck the stride sits on the 3x3 conv), so a torchvision ImageNet
checkpoint such as ``resnet18-f37072fd.pth`` loads with ``model.load_state_dict(sd)`` (strict)
into ``resnet18(num_classes=1000, stem="imagenet")``.

``stem="cifar"`` replaces the ImageNet stem (7x7/2 conv + 3x3/2 max pool) by a 3x3/1 conv and no
pooling, the usual choice for 32x32 images.  The keys stay the same (``maxpool`` becomes an
``nn.Identity`` with no state); only ``conv1.weight`` changes shape, from 64x3x7x7 to 64x3x3x3.
A torchvision checkpoint therefore does *not* load strictly into a CIFAR-stem model: use
:func:`fastconv.train.finetune.load_pretrained`, which skips ``conv1.weight`` with a message.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Type, Union

import torch
from torch import nn

from ..modules import Conv2d, MaxPool2d

STEMS = ("imagenet", "cifar")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Module:
    """3x3 convolution with padding 1 and no bias."""
    return Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Module:
    """1x1 convolution with no bias."""
    return Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """A ResNet with torchvision's module layout.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in ``layer1`` .. ``layer4``.
        num_classes: size of the ``fc`` output.
        stem: ``"imagenet"`` (7x7/2 conv, 3x3/2 max pool) or ``"cifar"`` (3x3/1 conv, no pool).
        in_channels: input channels (3 for RGB).
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        stem: str = "imagenet",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive ints, got {list(layers)!r}")
        _check_positive_int(num_classes, "num_classes")
        _check_positive_int(in_channels, "in_channels")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.stem = stem
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.inplanes = 64

        if stem == "imagenet":
            self.conv1 = Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()  # no parameters or buffers: keys stay torchvision's
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        # torchvision's initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers: List[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet expects input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000, stem: str = "imagenet", in_channels: int = 3) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); torchvision's ``resnet18`` layout."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, stem=stem, in_channels=in_channels)


def resnet34(num_classes: int = 1000, stem: str = "imagenet", in_channels: int = 3) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]); torchvision's ``resnet34`` layout."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, stem=stem, in_channels=in_channels)


def resnet50(num_classes: int = 1000, stem: str = "imagenet", in_channels: int = 3) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3], stride on the 3x3 conv); torchvision's ``resnet50`` layout."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, stem=stem, in_channels=in_channels)


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
