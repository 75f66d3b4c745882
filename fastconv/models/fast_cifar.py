"""A small, fast CIFAR-10 network in the style of airbench94 (Jordan 2024, arXiv 2404.00498), on fastconv layers.

Layout for ``(N, 3, 32, 32)`` inputs, widths ``(w1, w2, w3)`` (default 64, 256, 256):

    whiten  2x2 conv 3 -> 24, no padding, fixed weights from the data (see ``init_whitening``) -> 31x31, GELU
    block1  3x3 conv 24 -> w1, max-pool 2 (31 -> 15), BN, GELU, 3x3 conv w1 -> w1, BN, GELU
    block2  3x3 conv w1 -> w2, max-pool 2 (15 -> 7),  BN, GELU, 3x3 conv w2 -> w2, BN, GELU
    block3  3x3 conv w2 -> w3, max-pool 2 (7 -> 3),   BN, GELU, 3x3 conv w3 -> w3, BN, GELU
    head    max-pool 3 (3 -> 1), flatten, linear w3 -> 10 (no bias), times ``scale``

Choices that make it train in few epochs, each from the paper's description:
- The first layer whitens 2x2 patches: its filters are the patch covariance's eigenvectors scaled by
  1/sqrt(eigenvalue), in +/- pairs so that GELU keeps both signs.  They are not trained (only the bias is,
  for the first epochs), which makes the rest of the net see decorrelated inputs from the first step.
- Every 3x3 conv starts as the identity on its first ``in_channels`` outputs (Dirac init), so the deep
  path starts close to a shallow one.
- BatchNorm has no trained scale (weight fixed at 1), a trained bias, eps 1e-12 and a fast running-mean
  momentum (0.4), since a short run must track statistics that move quickly.
- The logits are scaled down (1/9) so that the label-smoothed loss starts in a sane range.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..modules import Conv2d, MaxPool2d

WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL ** 2  # +/- pairs of the 12 eigen-filters of 3-channel 2x2 patches


class _BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


def _conv3x3(cin: int, cout: int) -> Conv2d:
    conv = Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:min(cin, cout)])
    return conv


class ConvGroup(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout)
        self.pool = MaxPool2d(2)
        self.norm1 = _BatchNorm(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.norm2 = _BatchNorm(cout)
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class FastCifarNet(nn.Module):
    """See the module docstring.  ``whiten.weight`` is frozen; call :meth:`init_whitening` before training."""

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (64, 256, 256), scale: float = 1 / 9) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 3 or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
            raise ValueError(f"widths must be three positive ints, got {widths!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes, self.widths, self.scale = num_classes, widths, float(scale)
        self.whiten = Conv2d(3, WHITEN_WIDTH, kernel_size=WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.block1 = ConvGroup(WHITEN_WIDTH, widths[0])
        self.block2 = ConvGroup(widths[0], widths[1])
        self.block3 = ConvGroup(widths[1], widths[2])
        self.pool = MaxPool2d(3)
        self.fc = nn.Linear(widths[2], num_classes, bias=False)
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (32, 32):
            raise ValueError(f"FastCifarNet expects input of shape (N, 3, 32, 32), got {tuple(x.shape)}")
        x = self.activ(self.whiten(x))
        x = self.block3(self.block2(self.block1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x) * self.scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first layer's filters from normalised training images ``(N, 3, 32, 32)``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"init_whitening needs images of shape (N, 3, H, W), got {tuple(images.shape)}")
        k = WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)          # N, 3, H', W', k, k
        patches = patches.transpose(1, 3).reshape(-1, 3 * k * k)           # one row per patch (c, kh, kw order)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov.double())
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).float()
        filters = filters.flip(0).reshape(-1, 3, k, k)                    # largest eigenvalue first
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
