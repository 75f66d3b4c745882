"""LeNet-5 for 32x32 images, built from fastconv layers.

The layout is the classic one (LeCun et al. 1998): conv 5x5 -> pool -> conv 5x5 -> pool ->
fc 120 -> fc 84 -> fc num_classes, with the modern choices of ReLU and 2x2 max pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modules import Conv2d, MaxPool2d


class LeNet5(nn.Module):
    """LeNet-5 for ``(N, in_channels, 32, 32)`` inputs.

    Shapes: 32x32 -conv5-> 28x28x6 -pool-> 14x14x6 -conv5-> 10x10x16 -pool-> 5x5x16 (400)
    -> 120 -> 84 -> ``num_classes``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        _check_positive_int(num_classes, "num_classes")
        _check_positive_int(in_channels, "in_channels")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.conv1 = Conv2d(in_channels, 6, kernel_size=5)
        self.pool1 = MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = Conv2d(6, 16, kernel_size=5)
        self.pool2 = MaxPool2d(kernel_size=2, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != (32, 32):
            raise ValueError(
                f"LeNet5 expects input of shape (N, {self.in_channels}, 32, 32), got {tuple(x.shape)}"
            )
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.pool2(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int = 10, in_channels: int = 3) -> LeNet5:
    """Build a LeNet-5 for 32x32 images with ``in_channels`` channels and ``num_classes`` outputs."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels)


def _check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
