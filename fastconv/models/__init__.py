"""Reference networks built from fastconv layers.

``lenet5`` is the classic 32x32 LeNet-5; ``resnet18`` / ``resnet34`` / ``resnet50`` have exactly
torchvision's state_dict layout (keys and shapes), so a torchvision ImageNet checkpoint loads into
them with ``load_state_dict(..., strict=True)``; ``FastCifarNet`` is the small net of the fast CIFAR-10 recipe
(fastconv.train.fast_cifar).
"""

from .fast_cifar import FastCifarNet
from .lenet import LeNet5, lenet5
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50

__all__ = ["FastCifarNet", "LeNet5", "lenet5", "BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]
