"""fastconv: hand-written conv2d and max_pool2d kernels for PyTorch (CPU: AVX-512 / AVX2 / portable; CUDA).

    import fastconv
    y = fastconv.functional.conv2d(x, w, b, stride=1, padding="same")
    layer = fastconv.Conv2d(64, 128, 3, padding=1)       # a torch.nn.Conv2d, on our kernels
    model = fastconv.convert(torchvision_model)          # swap every nn.Conv2d / nn.MaxPool2d

``import fastconv`` loads the ops and layers only; ``fastconv.models``, ``.data``, ``.train`` (trainer, recipes)
and ``.evaluate`` load on first use.
"""
import importlib

from . import functional
from ._ops import cpu_info
from .convert import convert, revert
from .modules import Conv2d, MaxPool2d

_ON_FIRST_USE = ("data", "evaluate", "models", "train")

__all__ = ["Conv2d", "MaxPool2d", "convert", "revert", "functional", "cpu_info", *_ON_FIRST_USE]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _ON_FIRST_USE:
        return importlib.import_module(f".{name}", __name__)  # the import also sets it as an attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ON_FIRST_USE))
