"""Image transforms on tensors (no PIL, no torchvision).

Single images are ``(C, H, W)`` tensors; :class:`ToFloat`, :class:`Normalize` and :class:`Resize`
also take batches ``(N, C, H, W)``.  Random transforms draw from torch's global RNG, so they are
reproducible with ``torch.manual_seed``, DataLoader workers get their usual per-worker seeds, and
a training checkpoint that stores the RNG state replays them exactly.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_image(img, name: str, min_dim: int = 3) -> None:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(img).__name__}")
    if img.dim() < min_dim:
        raise ValueError(f"{name} expects an image (C, H, W) or a batch (N, C, H, W), got shape {tuple(img.shape)}")


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Iterable[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class ToFloat:
    """uint8 in [0, 255] -> float32 in [0, 1]; floating inputs are only cast to float32."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "ToFloat")
        if img.dtype == torch.uint8:
            return img.to(torch.float32).div_(255.0)
        if not img.is_floating_point():
            raise TypeError(f"ToFloat expects uint8 or floating point images, got {img.dtype}")
        return img.to(torch.float32)

    def __repr__(self) -> str:
        return "ToFloat()"


class Normalize:
    """``(img - mean) / std`` per channel, on a float image or batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(f"mean and std must have the same non-zero length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be positive, got {tuple(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "Normalize")
        if not img.is_floating_point():
            raise TypeError(f"Normalize expects a floating point image (apply ToFloat first), got {img.dtype}")
        c = img.shape[-3]
        if c != len(self.mean):
            raise ValueError(f"Normalize has {len(self.mean)} channels of mean/std, image has {c}")
        mean = torch.tensor(self.mean, dtype=img.dtype, device=img.device).view(c, 1, 1)
        std = torch.tensor(self.std, dtype=img.dtype, device=img.device).view(c, 1, 1)
        return (img - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class RandomCrop:
    """Pad by ``padding`` pixels on every side with ``fill``, then crop a random ``size`` window.

    One crop position is drawn per call (a whole batch gets the same crop).
    """

    def __init__(self, size: Union[int, Tuple[int, int]], padding: int = 0, fill: float = 0) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be a positive int or (h, w), got {size!r}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = int(padding)
        self.fill = fill

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "RandomCrop")
        if self.padding:
            p = self.padding
            img = F.pad(img, (p, p, p, p), mode="constant", value=self.fill)
        h, w = img.shape[-2:]
        th, tw = self.size
        if th > h or tw > w:
            raise ValueError(f"crop size {self.size} is larger than the padded image ({h}, {w})")
        i = int(torch.randint(0, h - th + 1, (1,)).item())
        j = int(torch.randint(0, w - tw + 1, (1,)).item())
        return img[..., i:i + th, j:j + tw]

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p`` (one draw per call)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "RandomHorizontalFlip", min_dim=2)
        if torch.rand(1).item() < self.p:
            return img.flip(-1)
        return img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Resize:
    """Bilinear resize of a float image or batch to ``size`` (e.g. 32x32 CIFAR -> 224x224 for ImageNet weights).

    Meant to run on the accelerator as a batch transform (``Trainer(batch_transform=...)``).
    """

    def __init__(self, size: Union[int, Tuple[int, int]]) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be a positive int or (h, w), got {size!r}")

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _check_image(img, "Resize")
        if not img.is_floating_point():
            raise TypeError(f"Resize expects a floating point image, got {img.dtype}")
        if tuple(img.shape[-2:]) == self.size:
            return img
        batch = img if img.dim() == 4 else img.unsqueeze(0)
        out = F.interpolate(batch, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return out if img.dim() == 4 else out.squeeze(0)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


def cifar10_train_transform(mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> Compose:
    """The standard CIFAR-10 augmentation: random crop with 4-pixel padding, horizontal flip, normalise."""
    return Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(0.5), ToFloat(), Normalize(mean, std)])


def cifar10_eval_transform(mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD) -> Compose:
    """Evaluation transform: scale to [0, 1] and normalise."""
    return Compose([ToFloat(), Normalize(mean, std)])
