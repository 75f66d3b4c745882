"""fastconv: hand-written conv2d and max_pool2d kernels for PyTorch (CPU: AVX-512 / AVX2 / portable; CUDA).

    import fastconv
    y = fastconv.functional.conv2d(x, w, b, stride=1, padding="same")
    layer = fastconv.Conv2d(64, 128, 3, padding=1)       # a torch.nn.Conv2d, on our kernels
    model = fastconv.convert(torchvision_model)          # swap every nn.Conv2d / nn.MaxPool2d
"""
from . import functional
from ._ops import cpu_info
from .convert import convert
from .modules import Conv2d, MaxPool2d
from . import data, models, train  # noqa: E402  (they build on the layers above)

__all__ = ["Conv2d", "MaxPool2d", "convert", "functional", "cpu_info", "models", "data", "train"]
__version__ = "0.1.0"
